"""Overlay scale: labs of 100, 300 and 600 VXLAN segments (VNIs) over 4 hosts built by
`nlab up` in controller mode (tests/bench/overlay_scale_topology.py: each segment has a NIC on two
neighbouring hosts, one multi-NIC VM per host), each up, checked and taken down in turn.

Reported per size (never asserted): the wall time of `nlab up` and `nlab down` (subprocesses, as
a user runs them), the marginal build time per VNI between sizes (the fixed part, eBPF compiles
and the underlay, cancels out), the kernel memory the lab holds (MemAvailable and Slab of
/proc/meminfo before `up` and after; the machine is shared, so these carry others' noise) and the
controller's resident set, and how many FDB/neighbour entries the controller keeps. Asserted:
the lab came up, the last segment reaches across hosts, `nlab overlay check` is clean.
The guard's per-packet lookup cost with 1 and 1,000 VNIs is tests/bench/test_overlay_cost.py's.

Why not 1,000: the dataplane's per-namespace port maps are arrays indexed by ifindex, 1..1023
(abi.MAX_IFINDEX); a host uses three ifindexes per segment it hosts (vx-<vni>, sg-<vni>, the
VM's port), and with each segment on two of four hosts a host hosts N/2 of N segments: 1,000
VNIs would need ~1,500 ifindexes on each host (`nlab up` stops with "ifindex 1024 is outside
1..1023"), so about 670 is the most this layout fits. 1,000 VNIs over 4 hosts needs a larger
MAX_IFINDEX (or a hash map of ports); the figures here are extrapolated to it, linearly.
Sizes can be chosen with OVERLAY_SCALE_SIZES=100,200 (comma-separated).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from dataplane import abi
from netns_lab.features.overlay import install
from netns_lab.topology.model import Topology
from tests.bench import record
from tests.bench.overlay_scale_topology import HOSTS, segment_hosts, topology
from tests.lab.conftest import Lab, leftovers, nlab

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces"),
    pytest.mark.skipif(record.quick(), reason="not in QUICK=1: builds labs of hundreds of VNIs (minutes)"),
]

SIZES = tuple(int(s) for s in os.environ.get("OVERLAY_SCALE_SIZES", "100,300,600").split(","))
REPORT_FILE = Path(".benchmarks") / "overlay-scale.json"
TIMEOUT_S = 1800
BASE_IFINDEXES = 8  # lo, the pNIC and the host's other devices, with room to spare


def meminfo() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])  # kB
    return fields


def rss_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def one_size(directory: Path, segments: int) -> dict[str, Any]:
    lab = Lab("os" + secrets.token_hex(3), directory / f"scale-{segments}.yaml")
    lab.topology.write_text(topology(lab.name, segments))
    before = meminfo()
    began = time.monotonic()
    try:
        proc = nlab("up", str(lab.topology), "--name", lab.name, timeout=TIMEOUT_S)
        up_s = time.monotonic() - began
        assert proc.returncode == 0, proc.stderr[-2000:]
        after = meminfo()
        last = segments - 1
        a, b = 1 + last // 256, last % 256
        src = f"vm{segment_hosts(last)[0]}"
        ping = subprocess.run(
            ["ip", "netns", "exec", lab.ns(src), "ping", "-n", "-q", "-c", "1", "-W", "2", f"10.{a}.{b}.2"],
            capture_output=True,
            check=False,
        )
        assert ping.returncode == 0, f"segment s{last} does not reach across hosts"
        check = nlab("overlay", "check", "--lab", lab.name, "--json", timeout=TIMEOUT_S)
        doc = json.loads(check.stdout)
        assert check.returncode == 0 and doc["clean"], doc.get("drift", check.stderr)[:5]
        pid = install.controller_pid(lab.name)
        plan = install.plan_of(_load(lab))
        entries = {
            "fdb": sum(len(s.macs) + len(s.flood) for h in plan.hosts for s in h.segments),
            "neighbours": sum(len(s.neighbours) for h in plan.hosts for s in h.segments),
        }
        controller_rss = rss_kb(pid)
    finally:
        began_down = time.monotonic()
        lab.down()
        down_s = time.monotonic() - began_down
    assert not leftovers(lab.name, lab.inodes)
    return {
        "segments": segments,
        "up_s": round(up_s, 2),
        "down_s": round(down_s, 2),
        "up_ms_per_vni": round(up_s * 1e3 / segments, 1),
        "mem_available_drop_mb": round((before["MemAvailable"] - after["MemAvailable"]) / 1024, 1),
        "slab_growth_mb": round((after["Slab"] - before["Slab"]) / 1024, 1),
        "controller_rss_mb": None if controller_rss is None else round(controller_rss / 1024, 1),
        "planned_entries": entries,
    }


def _load(lab: Lab) -> Topology:
    from netns_lab.topology import loader

    return loader.load_text(lab.topology.read_text(), str(lab.topology), lab=lab.name)


def _extrapolated(rows: list[dict[str, Any]], segments: int) -> dict[str, float] | None:
    """A straight line through the smallest and largest size measured, to `segments`."""
    if len(rows) < 2:
        return None
    a, b = rows[0], rows[-1]

    def line(key: str) -> float:
        slope = (b[key] - a[key]) / (b["segments"] - a["segments"])
        return round(b[key] + slope * (segments - b["segments"]), 1)

    return {"up_s": line("up_s"), "slab_growth_mb": line("slab_growth_mb")}


def test_overlay_scale(benchmark: Any, tmp_path: Path, bench_record: Any) -> None:
    rows: list[dict[str, Any]] = []

    def every_size() -> None:
        for segments in SIZES:
            rows.append(one_size(tmp_path, segments))
            print(json.dumps(rows[-1]))

    benchmark.group = "overlay scale"
    benchmark.pedantic(every_size, rounds=1, iterations=1)
    marginal = [
        {
            "from": a["segments"],
            "to": b["segments"],
            "up_ms_per_vni": round((b["up_s"] - a["up_s"]) * 1e3 / (b["segments"] - a["segments"]), 1),
            "mem_mb_per_vni": round(
                (b["mem_available_drop_mb"] - a["mem_available_drop_mb"]) / (b["segments"] - a["segments"]), 3
            ),
        }
        for a, b in itertools.pairwise(rows)
    ]
    report = {
        "hosts": HOSTS,
        "layout": "segment i on hv(i%4) and hv(i+1 %4), one multi-NIC VM per host, controller mode",
        "rows": rows,
        "marginal": marginal,
        "limit": {
            "max_ifindex": abi.MAX_IFINDEX - 1,
            "ifindexes_per_hosted_segment": 3,
            "max_vnis_this_layout": (abi.MAX_IFINDEX - 1 - BASE_IFINDEXES) * HOSTS // (3 * 2),
        },
        "extrapolated_1000": _extrapolated(rows, 1000),
        "guard_lookup": "see .benchmarks/overlay-cost.json (1 vs 1,000 VNIs, test_overlay_cost.py)",
        "load_average": os.getloadavg(),
    }
    first = rows[0]
    ratios = {
        f"up_s_{r['segments']}_per_{first['segments']}_vnis": round(r["up_s"] / first["up_s"], 2)
        for r in rows[1:]
    }
    bench_record(
        "overlay-scale", figures=report, ratios=ratios, baseline=f"the lab of {first['segments']} VNIs"
    )
    benchmark.extra_info.update(report)
    path = Path(__file__).resolve().parents[2] / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
