"""Convergence of the overlay: time from a VM added or moved until another host reaches it,
controller mode against flood-and-learn, in the same run.

The three-host lab of tests/lab/overlay_lab.py (blue a1/a2/a3, red b1/b2/b3), once per mode,
with its controller running (its periodic pass an hour away: only its reaction counts):

    added   a4 10.0.0.4 plugged into hv3's blue segment, then the new plan handed over
            (write_plan + SIGHUP); clock from the end of the plugging
    moved   a3 (same MAC, same 10.0.0.3) unplugged from hv3 and plugged into hv2, a1 having
            reached it before (warm ARP cache and FDB entries), then the new plan handed over

Until: a1's `ping -c 1 -W 0.1` is answered (one ping after another). In flood mode the new
plan changes nothing that matters (replication entries only); what converges is learning
(an added VM is found by the flooded ARP; a moved one only once a1's stale neighbour entry
fails its unicast probes and a broadcast ARP is answered from the new host).
The resolution is a ping's 0.1 s wait: a ping lost to a stale entry costs that much. The
figures (ms) and the ratio flood/controller go to .benchmarks/overlay-convergence.json,
reported, never asserted; asserted is that both VMs became reachable in both modes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from netns_lab.features.overlay import controller
from netns_lab.features.overlay.plan import Member, plan
from tests.lab.overlay_lab import Mode, OverlayLab, add_vm, move_vm, overlay_data, overlay_lab

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces"),
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs ping (apt-get install iputils-ping)"),
]

MODES: tuple[Mode, ...] = ("flood", "controller")
REPORT_FILE = Path(".benchmarks") / "overlay-convergence.json"
GIVE_UP = 60.0  # seconds; flood mode's move waits for ARP timers


def reached_after(lab: OverlayLab, ip: str, start: float) -> float:
    """Seconds from `start` until a1's ping of `ip` is answered."""
    command = ["ip", "netns", "exec", lab.ns("a1"), "ping", "-n", "-q", "-c", "1", "-W", "0.1", ip]
    while subprocess.run(command, capture_output=True, check=False).returncode != 0:
        assert time.monotonic() - start < GIVE_UP, f"{ip} not reachable from a1 in {GIVE_UP} s"
    return time.monotonic() - start


def hand_over(lab: OverlayLab, proc: subprocess.Popen[bytes], members: tuple[Member, ...]) -> None:
    lab.plan = plan(replace(overlay_data(lab.mode), members=members))
    controller.write_plan(lab.lab, lab.plan)
    proc.send_signal(signal.SIGHUP)


def converge(lab: OverlayLab) -> dict[str, float]:
    proc = lab.start_controller()
    assert lab.ping("a1", "10.0.0.3").returncode == 0  # warm: a1 knows a3 where it is now
    members = overlay_data(lab.mode).members
    a4 = add_vm(lab, "a4", "hv3", "blue", "10.0.0.4")
    start = time.monotonic()
    members = (*members, a4)
    hand_over(lab, proc, members)
    added = reached_after(lab, "10.0.0.4", start)
    a3 = move_vm(lab, "a3", "hv3", "hv2", "blue", "10.0.0.3")
    start = time.monotonic()
    hand_over(lab, proc, tuple(a3 if m.vm == "a3" else m for m in members))
    moved = reached_after(lab, "10.0.0.3", start)
    return {"added_ms": round(added * 1e3, 1), "moved_ms": round(moved * 1e3, 1)}


def test_convergence_after_a_vm_is_added_or_moved(benchmark: Any) -> None:
    results: dict[str, dict[str, float]] = {}

    def both() -> None:
        for mode in MODES:
            with overlay_lab(mode) as lab:
                results[mode] = converge(lab)

    benchmark.group = "overlay convergence"
    benchmark.pedantic(both, rounds=1, iterations=1)
    report: dict[str, Any] = {"modes": results}
    for what in ("added_ms", "moved_ms"):  # > 1: the controller converges faster
        flood, ctl = results["flood"][what], results["controller"][what]
        report[f"{what[:-3]}_ratio_flood_per_controller"] = round(flood / ctl, 2) if ctl else None
    benchmark.extra_info.update(report)
    path = Path(__file__).resolve().parents[2] / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
