"""Flooded frames on the VXLAN underlay for one fixed ARP/ping workload: flood vs controller mode.

The three-host, two-tenant lab of tests/lab/overlay_lab.py is built twice in the same run, once
per mode, each with its controller running (flood: head-end replication entries only, learning
on; controller: every remote MAC and neighbour programmed, ARP answered by the local bridge):

    <p>-ul  fabric ── hv1 / hv2 / hv3 ports: every frame a host sends to the underlay is seen here
    blue  a1 a2 a3 10.0.0.1-3      red  b1 b2 b3 10.0.0.1-3 (same addresses, other tenant)

Workload (the VMs' neighbour tables start empty): every VM pings each other member of its
segment once (12 pings, each needing an ARP resolution first). The pings' replies are the
barrier: a flooded copy leaves its host in the same transmit as the copy that is answered.

Counted per mode on the underlay ports (AF_PACKET, inner frames decoded from VXLAN):
  bum           copies whose inner destination is broadcast/multicast;
  unknown_ucast copies of a unicast frame sent to a VTEP that does not host its destination
                (flood-and-learn's flooding of a not-yet-learned MAC);
  flooded       the two together; total: every VXLAN frame.
The ratio flood/controller and the goal (0 flooded frames for known destinations in controller
mode) are reported in .benchmarks/overlay-bum.json and on the terminal, never asserted;
asserted are that every ping was answered and that flood mode did flood (the counter works).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from netns_lab.observe.capture import Capture
from tests.lab.overlay_lab import HOSTS, UNDERLAY, VMS, Mode, OverlayLab, overlay_lab, vm_mac

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces"),
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs ping (apt-get install iputils-ping)"),
]

MODES: tuple[Mode, ...] = ("flood", "controller")
REPORT_FILE = Path(".benchmarks") / "overlay-bum.json"
VXLAN_PORT = 4789
HOST_OF_MAC = {bytes.fromhex(vm_mac(vm).replace(":", "")): host for vm, (host, _, _) in VMS.items()}
VTEP_HOST = {vtep: host for host, vtep in HOSTS.items()}


def workload(lab: OverlayLab) -> int:
    """Every VM pings each other member of its segment once; the number of pings answered."""
    answered = 0
    for vm, (_, seg, _) in VMS.items():
        for other, (_, other_seg, ip) in VMS.items():
            if other != vm and other_seg == seg:
                answered += lab.ping(vm, ip).returncode == 0
    return answered


def classify(frame: bytes, counts: dict[str, int]) -> None:
    """Count one underlay frame (outer Ethernet/IPv4/UDP 4789/VXLAN/inner Ethernet)."""
    if frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return
    ihl = (frame[14] & 0x0F) * 4
    udp = 14 + ihl
    if struct.unpack_from("!H", frame, udp + 2)[0] != VXLAN_PORT:
        return
    inner = frame[udp + 16 :]
    outer_dst = ".".join(str(b) for b in frame[30:34])
    counts["total"] += 1
    if inner[0] & 1:
        counts["bum"] += 1
    elif HOST_OF_MAC.get(inner[:6]) != VTEP_HOST.get(outer_dst):
        counts["unknown_ucast"] += 1


def measure(lab: OverlayLab) -> dict[str, int]:
    caps = [Capture(lab.ns(UNDERLAY), host) for host in HOSTS]  # what each host sends
    try:
        answered = workload(lab)
        counts = {"total": 0, "bum": 0, "unknown_ucast": 0}
        for cap in caps:
            while frames := cap.read():
                for f in frames:
                    classify(f.data, counts)
            assert cap.drops() == 0  # a lost frame would hide a flooded one
    finally:
        for cap in caps:
            cap.close()
    return {"pings_answered": answered, **counts, "flooded": counts["bum"] + counts["unknown_ucast"]}


def test_underlay_bum_frames_flood_vs_controller(benchmark: Any) -> None:
    results: dict[str, dict[str, int]] = {}
    with contextlib.ExitStack() as stack:
        labs = {mode: stack.enter_context(overlay_lab(mode)) for mode in MODES}
        for lab in labs.values():
            lab.start_controller()

        def both() -> None:
            for mode in MODES:
                results[mode] = measure(labs[mode])

        benchmark.group = "overlay BUM"
        benchmark.pedantic(both, rounds=1, iterations=1)
    pings = sum(1 for vm, (_, seg, _) in VMS.items() for o, (_, s, _) in VMS.items() if o != vm and s == seg)
    assert {mode: r["pings_answered"] for mode, r in results.items()} == dict.fromkeys(MODES, pings)
    assert results["flood"]["flooded"] > 0  # the positive control of the counter
    report = _report(results, pings)
    benchmark.extra_info.update(report)
    path = Path(__file__).resolve().parents[2] / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def _report(results: dict[str, dict[str, int]], pings: int) -> dict[str, Any]:
    flood, ctl = results["flood"], results["controller"]
    ratio = None if not ctl["flooded"] else round(flood["flooded"] / ctl["flooded"], 2)
    return {
        "workload": f"{pings} pings between members of the same segment, empty neighbour tables",
        "modes": results,
        "flooded_ratio_flood_per_controller": ratio,  # None: controller flooded nothing
        "total_ratio_flood_per_controller": round(flood["total"] / ctl["total"], 2) if ctl["total"] else None,
        "goal_controller_flooded_zero": ctl["flooded"] == 0,
    }
