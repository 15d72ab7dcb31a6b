"""Overlay convergence on labs/overlay.yaml built by `nlab up`: time from a VM added (or moved)
until another host reaches it, controller vs evpn vs flood, in the same run (modes alternated
round by round, medians reported).

A bench VM (namespace of its own, not the lab's: `nlab down` never sees it) is plugged by hand
into blue-web's bridge on hv3 (`added`), then unplugged there and plugged into hv2's with the
same MAC and address (`moved`). Each plug is followed by what a booting VM does, the same in every
mode: one ARP for a neighbour (its first frame, which the local bridge learns). Then each mode
gets what it needs to know: controller mode the new plan (the lab's topology plus the VM,
handed to the running controller, SIGHUP); evpn mode nothing more (zebra sees the bridge learn
the MAC and bgpd advertises a type-2 route through the spine's reflector); flood mode nothing
(the vxlan devices learn from the flooded ARP). The clock starts when the plug is complete.

Two figures per event, both from hv1 / bweb1 (hv1 hosts no bench VM):
  reach_ms    until bweb1's `ping -c 1 -W 0.1` is answered (one ping after another: a lost ping
              costs 0.1 s); for `moved`, bweb1 reached the VM at hv3 just before (warm ARP cache
              and FDB entry pointing at hv3);
  program_ms  until hv1's vx-10010 FDB holds the VM's MAC at the right VTEP (a netlink dump every
              millisecond) — the control plane's own convergence: a static entry from the
              controller, an extern_learn entry from BGP, a learned one in flood mode.
In evpn and flood modes an added VM is reachable before its MAC is programmed: the ping's unknown
unicast is replicated to every VTEP of the segment. Fresh MACs and addresses each round (EVPN
keeps a withdrawn MAC's routes until it ages out). Figures and ratios evpn/controller and
flood/controller go to .benchmarks/overlay-convergence.json, never asserted; asserted is that
every event converged. The millisecond EVPN path on a kernel-helper fabric, with more rounds, is
tests/bench/test_overlay_converge.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from netns_lab.features.overlay import frr, install
from netns_lab.features.overlay.plan import Member, from_topology, plan
from netns_lab.kernel import netlink
from netns_lab.topology.model import Topology
from tests.bench import record
from tests.bench.overlay_labs import overlay_up
from tests.lab.conftest import Lab

pytestmark = [
    pytest.mark.skipif(record.quick(), reason="not in QUICK=1: builds several labs with nlab up (minutes)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces"),
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs ping (apt-get install iputils-ping)"),
]

MODES = ("controller", "evpn", "flood")
ROUNDS = 5
SEGMENT, VNI, BRIDGE, VXLAN = "blue-web", 10010, "sg-10010", "vx-10010"
VM_MTU = 1450
GIVE_UP_S = 30.0
POLL_S = 0.001
REPORT_FILE = Path(".benchmarks") / "overlay-convergence.json"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def answered(ns: str, ip: str, wait: str = "0.1") -> bool:
    command = ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", wait, ip]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


class BenchVm:
    """A VM made by hand: its own namespace, a veth into a host's segment bridge."""

    def __init__(self, lab: Lab, index: int) -> None:
        self.lab, self.ns = lab, f"ovc{secrets.token_hex(3)}"
        self.mac = ":".join(f"{b:02x}" for b in (0x02, 0xCE, *secrets.token_bytes(4)))
        self.ip = f"10.0.0.{100 + index}"
        self.port: tuple[str, str] | None = None  # (host namespace, port name)
        sh("ip", "netns", "add", self.ns)

    def plug(self, host: str) -> None:
        host_ns, port = self.lab.ns(host), f"{self.ns}-0"[-15:]
        sh("ip", "link", "add", port, "netns", host_ns, "type", "veth", "peer", "eth0", "netns", self.ns)
        self.port = (host_ns, port)
        sh("ip", "-n", host_ns, "link", "set", port, "master", BRIDGE, "mtu", str(VM_MTU), "up")
        sh("ip", "-n", self.ns, "link", "set", "eth0", "address", self.mac, "mtu", str(VM_MTU), "up")
        sh("ip", "-n", self.ns, "addr", "add", f"{self.ip}/24", "dev", "eth0")
        answered(self.ns, "10.0.0.12", "0.05")  # the boot frame: an ARP broadcast

    def unplug(self) -> None:
        if self.port is not None:
            subprocess.run(["ip", "-n", self.port[0], "link", "del", self.port[1]], check=False)
            self.port = None

    def remove(self) -> None:
        self.unplug()
        subprocess.run(["ip", "netns", "del", self.ns], check=False)

    def member(self, host: str) -> Member:
        return Member(host, self.ns, 0, SEGMENT, self.mac, (self.ip,))


@contextlib.contextmanager
def bench_vm(lab: Lab, index: int) -> Iterator[BenchVm]:
    vm = BenchVm(lab, index)
    try:
        yield vm
    finally:
        vm.remove()


def hand_over(lab: Lab, topo: Topology, extra: tuple[Member, ...]) -> None:
    """The controller's new plan: the lab's members plus the bench VM's."""
    data = from_topology(topo)
    assert install.reload_controller(lab.name, plan(replace(data, members=(*data.members, *extra))))


@contextlib.contextmanager
def fdb_at(lab: Lab) -> Iterator[Callable[[str, str], bool]]:
    """holds(mac, vtep): hv1's vx-10010 FDB has `mac` at `vtep` (one netlink dump)."""
    with netlink.session(lab.ns("hv1")) as nl:
        ipr, index = nl.iproute(), nl.index(VXLAN)

        def holds(mac: str, vtep: str) -> bool:
            return any(
                m.get_attr("NDA_LLADDR") == mac and m.get_attr("NDA_DST") == vtep
                for m in ipr.fdb("dump", ifindex=index)
            )

        yield holds


def event(lab: Lab, vtep: str, vm: BenchVm, hand: Callable[[], None]) -> dict[str, float]:
    """After a plug: hand the mode what it needs, then time reach and program (in parallel: the
    FDB is polled between pings)."""
    start = time.monotonic()
    hand()
    with fdb_at(lab) as holds:
        program = reach = None
        while program is None or reach is None:
            assert time.monotonic() - start < GIVE_UP_S, f"{vm.ip} not converged in {GIVE_UP_S} s"
            if program is None and holds(vm.mac, vtep):
                program = time.monotonic() - start
            if reach is None and answered(lab.ns("bweb1"), vm.ip):
                reach = time.monotonic() - start
            if program is None:
                time.sleep(POLL_S)
    return {"reach_ms": reach * 1e3, "program_ms": program * 1e3}


def one_round(mode: str, lab: Lab, topo: Topology, index: int) -> dict[str, dict[str, float]]:
    vteps = {h.name: str(topo.vtep_ip(h.name)) for h in topo.hosts}
    with bench_vm(lab, index) as vm:
        vm.plug("hv3")
        tell: Callable[[str], Callable[[], None]] = (
            (lambda host: lambda: hand_over(lab, topo, (vm.member(host),)))
            if mode == "controller"
            else (lambda host: lambda: None)
        )
        added = event(lab, vteps["hv3"], vm, tell("hv3"))
        assert answered(lab.ns("bweb1"), vm.ip, "2")  # warm: bweb1 reaches it at hv3
        vm.unplug()
        vm.plug("hv2")
        moved = event(lab, vteps["hv2"], vm, tell("hv2"))
    if mode == "controller":
        hand_over(lab, topo, ())  # back to the lab's own plan
    return {"added": added, "moved": moved}


def test_convergence_after_a_vm_is_added_or_moved(benchmark: Any, tmp_path: Path, bench_record: Any) -> None:
    modes = [m for m in MODES if m != "evpn" or frr.available() is None]
    samples: dict[str, list[dict[str, dict[str, float]]]] = {m: [] for m in modes}
    with contextlib.ExitStack() as stack:
        labs = {mode: stack.enter_context(overlay_up(tmp_path, mode)) for mode in modes}

        def every_mode() -> None:
            for index in range(ROUNDS):
                order = modes if index % 2 == 0 else modes[::-1]  # spread the drift over all
                for mode in order:
                    samples[mode].append(one_round(mode, *labs[mode], index * len(modes) + modes.index(mode)))

        benchmark.group = "overlay convergence"
        benchmark.pedantic(every_mode, rounds=1, iterations=1)
    report = _report(samples, frr.available())
    bench_record("overlay-convergence", figures=report, ratios=report["ratios"], baseline="controller mode")
    benchmark.extra_info.update(report)
    path = Path(__file__).resolve().parents[2] / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def _report(samples: dict[str, list[dict[str, dict[str, float]]]], frr_missing: str | None) -> dict[str, Any]:
    medians = {
        mode: {
            ev: {
                fig: round(statistics.median(r[ev][fig] for r in rounds), 1)
                for fig in ("reach_ms", "program_ms")
            }
            for ev in ("added", "moved")
        }
        for mode, rounds in samples.items()
    }
    ratios = {
        f"{ev}_{fig[:-3]}_{mode}_per_controller": (
            round(medians[mode][ev][fig] / ctl, 2) if (ctl := medians["controller"][ev][fig]) else None
        )
        for mode in medians
        if mode != "controller"
        for ev in ("added", "moved")
        for fig in ("reach_ms", "program_ms")
    }
    return {
        "lab": "labs/overlay.yaml by nlab up, overlay.mode per lab; a bench VM on blue-web",
        "rounds": ROUNDS,
        "evpn_skipped": frr_missing,
        "median_ms": medians,
        "ratios": ratios,
        "load_average": os.getloadavg(),
    }
