"""Flooded frames on the VXLAN underlay for one fixed ARP/ping workload: flood vs controller vs
evpn, in the same run, on labs/overlay.yaml built by `nlab up` (one lab per mode, `overlay.mode`
edited, each under a name of its own):

    hv1 ── tor1 ── hv2        tor1/tor2 ports hv1-eth0, hv2-eth0, hv3-eth0: every frame a host
      spine ── tor2 ── hv3    sends to the underlay is received there (AF_PACKET, before the
                              switch's programs): each VXLAN copy is counted once, at its sender

Workload: every VM of a segment pings each other member of it once (blue-web: bweb1..3 and bgw;
blue-db: bgw, bdb1; red-web: rweb1, rweb3; 16 pings), the VMs' neighbour tables flushed first,
so each ping needs an ARP resolution. Twice per lab: `cold`, the first workload after `nlab up`
(flood mode has learned nothing yet, EVPN has advertised only MACs the bridges have seen), and
`warm`, the same again with the neighbour tables flushed again (the destinations are known to the
VTEPs now: what is flooded then is what a mode floods by design). The ping replies are the barrier:
a flooded copy leaves its host in the same transmit as the copy that is answered.

Counted per mode and round, over the three hosts' underlay ports (inner frames decoded):
  bum            copies whose inner destination is broadcast/multicast, of which `arp` are ARP;
  unknown_ucast  copies of a unicast frame sent to a VTEP that does not host its destination;
  flooded        the two together; total: every VXLAN frame.
The controller answers ARP on each host's bridge (no ARP leaves a host); EVPN here fills the FDB
from type-2 routes but does not suppress ARP (no neighbour suppression on the bridge ports), so
its broadcasts are replicated to every VTEP of the segment by design. The figures and the ratios
flood/controller and flood/evpn go to .benchmarks/overlay-bum.json and the terminal, never
asserted; asserted are that every ping was answered and that flood mode did flood (the counter's
positive control).
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

from netns_lab.features.overlay import frr
from netns_lab.observe.capture import Capture
from netns_lab.topology.model import Topology
from tests.bench import record
from tests.bench.overlay_labs import in_ns, overlay_up, ping
from tests.lab.conftest import Lab

pytestmark = [
    pytest.mark.skipif(record.quick(), reason="not in QUICK=1: builds several labs with nlab up (minutes)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces"),
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs ping (apt-get install iputils-ping)"),
]

MODES = ("flood", "controller", "evpn")
ROUNDS = ("cold", "warm")
REPORT_FILE = Path(".benchmarks") / "overlay-bum.json"
VXLAN_PORT = 4789
ETH_ARP = b"\x08\x06"


def members(topo: Topology) -> dict[str, list[tuple[str, str]]]:
    """segment -> its (VM, address) pairs."""
    found: dict[str, list[tuple[str, str]]] = {}
    for vm in topo.vms:
        for nic in vm.nics:
            if nic.segment is not None and nic.ip is not None:
                found.setdefault(nic.segment, []).append((vm.name, str(nic.ip.ip)))
    return found


def workload(lab: Lab, topo: Topology) -> tuple[int, int]:
    """Flush every segment VM's neighbour table, then every VM pings each other member of its
    segment once; (pings, answered)."""
    segs = members(topo)
    for vm in {vm for pairs in segs.values() for vm, _ in pairs}:
        in_ns(lab, vm, "ip", "neigh", "flush", "all")
    pings = answered = 0
    for pairs in segs.values():
        for vm, _ in pairs:
            for other, ip in pairs:
                if other != vm:
                    pings += 1
                    answered += ping(lab, vm, ip).returncode == 0
    return pings, answered


class Counter:
    def __init__(self, topo: Topology) -> None:
        self.host_of_mac = {
            bytes.fromhex(nic.mac.replace(":", "")): vm.host
            for vm in topo.vms
            for nic in vm.nics
            if nic.segment is not None
        }
        self.host_of_vtep = {str(ip): h.name for h in topo.hosts if (ip := topo.vtep_ip(h.name))}
        self.counts = dict.fromkeys(("total", "bum", "arp", "unknown_ucast"), 0)

    def frame(self, frame: bytes) -> None:
        """Count one underlay frame (outer Ethernet/IPv4/UDP 4789/VXLAN/inner Ethernet)."""
        if frame[12:14] != b"\x08\x00" or frame[23] != 17:
            return
        udp = 14 + (frame[14] & 0x0F) * 4
        if struct.unpack_from("!H", frame, udp + 2)[0] != VXLAN_PORT:
            return
        inner, outer_dst = frame[udp + 16 :], ".".join(str(b) for b in frame[30:34])
        self.counts["total"] += 1
        if inner[0] & 1:
            self.counts["bum"] += 1
            self.counts["arp"] += inner[12:14] == ETH_ARP
        elif self.host_of_mac.get(inner[:6]) != self.host_of_vtep.get(outer_dst):
            self.counts["unknown_ucast"] += 1


def underlay_ports(topo: Topology) -> list[tuple[str, str]]:
    """(switch, port) where each host's VTEP pNIC meets the underlay."""
    ports = []
    for host in topo.hosts:
        pnic = next(p for p in host.pnics if p.name == host.vtep)
        ports.append((pnic.switch, f"{host.name}-{pnic.name}"))
    return ports


def measure(lab: Lab, topo: Topology) -> dict[str, int]:
    counter = Counter(topo)
    caps = [Capture(lab.ns(switch), port) for switch, port in underlay_ports(topo)]
    try:
        pings, answered = workload(lab, topo)
        for cap in caps:
            while frames := cap.read():
                for f in frames:
                    counter.frame(f.data)
            assert cap.drops() == 0  # a lost frame would hide a flooded one
    finally:
        for cap in caps:
            cap.close()
    c = counter.counts
    return {"pings": pings, "answered": answered, **c, "flooded": c["bum"] + c["unknown_ucast"]}


def test_underlay_bum_frames_flood_vs_controller_vs_evpn(
    benchmark: Any, tmp_path: Path, bench_record: Any
) -> None:
    modes = [m for m in MODES if m != "evpn" or frr.available() is None]
    results: dict[str, dict[str, dict[str, int]]] = {m: {} for m in modes}
    with contextlib.ExitStack() as stack:
        labs = {mode: stack.enter_context(overlay_up(tmp_path, mode)) for mode in modes}

        def every_mode() -> None:
            for round_ in ROUNDS:
                for mode in modes:
                    results[mode][round_] = measure(*labs[mode])

        benchmark.group = "overlay BUM"
        benchmark.pedantic(every_mode, rounds=1, iterations=1)
    for mode, rounds in results.items():
        for round_, r in rounds.items():
            assert r["answered"] == r["pings"], (mode, round_, r)
    assert results["flood"]["cold"]["flooded"] > 0  # the positive control of the counter
    report = _report(results, frr.available())
    bench_record("overlay-bum", figures=report, ratios=report["ratios"], baseline="controller / evpn mode")
    benchmark.extra_info.update(report)
    path = Path(__file__).resolve().parents[2] / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 2) if b else None  # None: the denominator flooded nothing


def _report(results: dict[str, dict[str, dict[str, int]]], frr_missing: str | None) -> dict[str, Any]:
    flood = results["flood"]
    ratios = {
        f"{what}_flood_per_{mode}_{round_}": _ratio(flood[round_][what], results[mode][round_][what])
        for mode in results
        if mode != "flood"
        for round_ in ROUNDS
        for what in ("flooded", "total")
    }
    goals = {
        f"{mode}_flooded_zero_{round_}": results[mode][round_]["flooded"] == 0
        for mode in results
        if mode != "flood"
        for round_ in ROUNDS
    }
    goals.update(
        {
            f"{mode}_non_arp_flooded_zero_warm": results[mode]["warm"]["flooded"]
            == results[mode]["warm"]["arp"]
            for mode in results
            if mode != "flood"
        }
    )
    return {
        "workload": "every VM pings each other member of its segment once, neighbour tables flushed",
        "lab": "labs/overlay.yaml by nlab up, overlay.mode per lab",
        "evpn_skipped": frr_missing,
        "modes": results,
        "ratios": ratios,
        "goals": goals,
        "load_average": os.getloadavg(),
    }
