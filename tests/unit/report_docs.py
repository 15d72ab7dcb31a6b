"""Documents of the shapes `nlab report` reads (audit, verify, status, benchmark results), for
the report's tests: a lab of two VMs with every kind of row, and a hostile variant whose every
text is markup."""

from __future__ import annotations

import copy
from typing import Any

from netns_lab.features.compliance.report.inputs import Inputs

IDS = (
    *(f"VM-VN-R{i}" for i in (1, 2, 3)),
    *(f"VM-MP-R{i}" for i in (1, 2, 3)),
    *(f"VM-FW-R{i}" for i in (1, 2, 3, 4)),
    *(f"VM-TM-R{i}" for i in (1, 2, 3)),
)
STATUSES = ("met", "not met", "not applicable")
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&|*[x](javascript:alert(3))"


def audit(lab: str = "rep") -> dict[str, Any]:
    return {
        "lab": lab,
        "recommendations": [
            {
                "id": rid,
                "status": STATUSES[i % 3],
                "reason": f"reason of {rid}",
                "objects": [f"trunk hv1/eth{i}"] if STATUSES[i % 3] == "not met" else [],
            }
            for i, rid in enumerate(IDS)
        ],
        "settings": [
            {"id": "promiscuous-mode", "status": "met", "reason": "no promiscuous port", "objects": []}
        ],
    }


def verify(lab: str = "rep", evidence: str = "evidence") -> dict[str, Any]:
    return {
        "lab": lab,
        "ok": False,
        "checks": [
            {
                "id": "reachability",
                "recommendations": ["VM-VN-R1", "VM-FW-R3"],
                "status": "fail",
                "reason": "1 of 4 probes disagree",
                "findings": [
                    {
                        "what": "tcp/22",
                        "where": "web1 -> db1",
                        "expected": "deny",
                        "observed": "allow",
                        "trace": "hv1 port_from_vm: pass",
                    }
                ],
                "evidence": {
                    "pcap": f"{evidence}/reachability.pcap",
                    "counters": f"{evidence}/reachability.json",
                },
            },
            {
                "id": "attacks",
                "recommendations": ["VM-VN-R1"],
                "status": "pass",
                "reason": "every attack dropped",
                "findings": [],
                "evidence": {"counters": f"{evidence}/attacks.json"},
            },
            {
                "id": "failover",
                "recommendations": ["VM-MP-R3"],
                "status": "skipped",
                "reason": "no team",
                "findings": [],
                "evidence": {},
            },
        ],
        "truth_table": [
            {
                "src": "web1",
                "dst": "db1",
                "proto": "tcp",
                "port": 5432,
                "expected": "allow",
                "observed": "allow",
            },
            {
                "src": "web1",
                "dst": "db1",
                "proto": "tcp",
                "port": 22,
                "expected": "deny",
                "observed": "allow",
            },
            {"src": "db1", "dst": "web1", "proto": "udp", "port": 53, "expected": "deny", "observed": "deny"},
            {"src": "db1", "dst": "web1", "proto": "tcp", "port": 80, "expected": "deny", "observed": "deny"},
        ],
    }


def status(lab: str = "rep") -> dict[str, Any]:
    counters = {
        "ingress": {"pass": {"packets": 10, "bytes": 600}, "drop": {}},
        "egress": {"pass": {"packets": 7, "bytes": 420}, "drop": {}},
    }
    port = {
        "name": "vweb1-0",
        "role": "vm",
        "peer": "web1",
        "counters": counters,
        "drops": [
            {"reason": "fw-deny", "direction": "from-vm", "class": "filtered", "packets": 3, "bytes": 180}
        ],
    }
    return {
        "lab": lab,
        "hosts": [{"name": "hv1", "ports": [port]}],
        "switches": [{"name": "tor1", "ports": []}],
    }


def bench_doc() -> dict[str, Any]:
    return {
        "suite": "test_fw_cost",
        "machine": {
            "kernel": "6.18",
            "cpus": 2,
            "model": "cpu",
            "load": [0.5, 0.4, 0.3],
            "python": "3.11",
            "bcc": "0.26",
        },
        "time": "2026-12-03T16:00:00Z",
        "quick": True,
        "results": [
            {
                "name": "fw-cost",
                "figures": {
                    "rows": [
                        {
                            "rules": n,
                            "packet": "last",
                            "flow": flow,
                            "method": "single",
                            "path_ns": ns,
                            "floor_ns": 30.0,
                        }
                        for flow, base in (("new", 300.0), ("established", 90.0))
                        for n, ns in ((10, base), (1000, base + 5), (10000, base + 9))
                    ]
                },
                "ratios": {"established_x_floor_10_rules": 3.0},
                "baseline": "nlab_empty",
            }
        ],
    }


def inputs(lab: str = "rep") -> Inputs:
    return Inputs(
        lab=lab,
        source=f"lab {lab} (running)",
        audit=audit(lab),
        verify=verify(lab),
        status=status(lab),
        dot='graph "x" { "hv1" -- "web1"; }',
        bench=[bench_doc()],
    )


def _poison(value: Any) -> Any:
    """Every string of a document replaced by HOSTILE around it (keys stay)."""
    if isinstance(value, str):
        return f"{HOSTILE}{value}{HOSTILE}"
    if isinstance(value, dict):
        return {k: _poison(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_poison(v) for v in value]
    return value


def hostile() -> Inputs:
    given = inputs()
    return Inputs(
        lab=HOSTILE,
        source=HOSTILE,
        audit=_poison(copy.deepcopy(given.audit)),
        verify=_poison(copy.deepcopy(given.verify)),
        status=_poison(copy.deepcopy(given.status)),
        dot=None,
        bench=[_poison(bench_doc())],
        notes=[HOSTILE],
    )
