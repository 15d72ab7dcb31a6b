"""The reachability truth table: the model's verdict for every probe (expected.py) against what
real packets met (probes.py); each disagreement carries the `nlab trace` of the real programs
for that packet (private copies of the dataplane: the trace leaves no mark)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from netns_lab.features.compliance.verify import expected, probes
from netns_lab.features.compliance.verify.evidence import recording
from netns_lab.lab.running import RunningLab
from netns_lab.topology import names

log = logging.getLogger(__name__)
MAX_TRACES = 50  # disagreements traced: the first loads programs (seconds), each further one ~0.15 s
RECOMMENDATIONS = ["VM-VN-R1", "VM-FW-R2", "VM-FW-R3", "VM-FW-R4"]


def _row(p: expected.Probe, want: expected.Expectation, seen: probes.Seen) -> dict[str, Any]:
    return {
        "src": p.src,
        "dst": p.dst,
        "dst_ip": p.dst_ip,
        "proto": p.proto,
        "port": p.port,
        "expected": want.verdict,
        "observed": seen.verdict,
        "seen": seen.detail,
        "why": want.why,
    }


def _traced(lab: RunningLab, wrong: list[expected.Probe]) -> dict[int, dict[str, Any] | str]:
    """Traces of up to MAX_TRACES disagreements (by index in `wrong`), the first of each pair
    of VMs before the others, all on one set of private copies: each node's programs load once."""
    from netns_lab.observe import trace  # scapy: only when a disagreement needs it

    first: dict[tuple[str, str], int] = {}
    for i, p in enumerate(wrong):
        first.setdefault((p.src, p.dst), i)
    rest = [i for i in range(len(wrong)) if i not in first.values()]
    chosen = sorted([*first.values(), *rest][:MAX_TRACES])
    found: dict[int, dict[str, Any] | str] = {}
    copies = trace.Copies(lab.topo)
    try:
        for i in chosen:
            p = wrong[i]
            try:
                found[i] = trace.trace(lab.topo, p.src, p.dst_ip, p.proto, p.port or 0, copies=copies)
            except (trace.TraceError, ValueError) as err:
                found[i] = f"no trace: {err}"
    finally:
        copies.close()
    return found


def _findings(lab: RunningLab, wrong: list[tuple[expected.Probe, dict[str, Any]]]) -> list[dict[str, Any]]:
    """A finding per disagreement, the first few with their traces."""
    traces = _traced(lab, [p for p, _ in wrong]) if wrong else {}
    findings = []
    for n, (p, r) in enumerate(wrong):
        f: dict[str, Any] = {
            "what": f"{p.proto} reachability",
            "where": f"{p.src} -> {p.dst} {p.dst_ip} {p.proto}{'' if p.port is None else '/' + str(p.port)}",
            "expected": f"{r['expected']} ({r['why']})",
            "observed": f"{r['observed']} ({r['seen']})",
        }
        if n in traces:
            f["trace"] = traces[n]
        findings.append(f)
    if len(wrong) > len(traces):
        log.info("%d disagreements, %d of them traced", len(wrong), len(traces))
    return findings


def check(
    lab: RunningLab, folder: Path | None
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The check, the truth table (pairs the model decides) and the pairs outside its scope."""
    topo = lab.topo
    batch = expected.probes(topo)
    fws = expected.Firewalls(topo)
    wants = [expected.expect(topo, p, fws) for p in batch]
    with recording(lab, folder, "reachability") as rec:
        if folder is not None:
            for vm in topo.vms:
                for nic in vm.nics:
                    if nic.ip is not None:
                        rec.capture(names.namespace(lab.lab, vm.host), names.vm_port(vm.name, nic.index))
        seen = probes.observe(lab.lab, batch)
        files = rec.finish()
    rows = [_row(p, w, s) for p, w, s in zip(batch, wants, seen, strict=True)]
    table = [r for r in rows if r["expected"] is not None]
    outside = [r for r in rows if r["expected"] is None]
    wrong = [
        (p, r)
        for p, r in zip(batch, rows, strict=True)
        if r["expected"] is not None and r["expected"] != r["observed"]
    ]
    findings = _findings(lab, wrong)
    allowed = sum(r["expected"] == "allow" for r in table)
    reason = (
        f"{len(table)} probes decided by the model ({allowed} allow, {len(table) - allowed} deny), "
        f"{len(wrong)} disagree; {len(outside)} outside its scope (observed, not judged)"
    )
    doc = {
        "id": "reachability",
        "recommendations": RECOMMENDATIONS,
        "status": "fail" if wrong else "pass",
        "reason": reason,
        "findings": findings,
        "evidence": files,
    }
    return doc, table, outside
