"""Overlay injection: VXLAN sent to a VTEP from an underlay router that is no VTEP (as an
attacker on the physical network would). The VTEP's guard must drop and count every packet
(`vxlan-unknown-vtep` on the pNIC it arrives at) and none may reach the segment's VMs there."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from dataplane.abi import Reason
from netns_lab.features.compliance.verify.evidence import Recorder, until
from netns_lab.kernel import netns
from netns_lab.lab.running import RunningLab
from netns_lab.topology import names

COPIES = 2
VXLAN_PORT = 4789
SPORT = 40999


@dataclass(frozen=True)
class Injection:
    """VXLAN sent to a VTEP from an underlay router that is no VTEP: the guard must drop it."""

    router: str
    source: str
    host: str
    pnic: str
    vtep: str
    vni: int
    victims: tuple[str, ...]  # the segment's VMs on that host


def plan(lab: RunningLab) -> Injection | None:
    """The first VTEP pNIC that shares a subnet with a router of the underlay."""
    topo = lab.topo
    for h in topo.hosts:
        segments = topo.host_segments(h.name)
        for p in h.pnics:
            if p.ip is None or not segments:
                continue
            for r in topo.routers:
                for n in r.nics:
                    if n.switch == p.switch and p.ip.ip in n.ip.network:
                        seg = segments[0]
                        victims = tuple(
                            vm.name
                            for vm in topo.vms
                            if vm.host == h.name and any(nic.segment == seg.name for nic in vm.nics)
                        )
                        return Injection(r.name, str(n.ip.ip), h.name, p.name, str(p.ip.ip), seg.vni, victims)
    return None


def _vxlan(vni: int, marker: bytes) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw, raw

    inner = Ether(src="02:00:00:00:00:99", dst="ff:ff:ff:ff:ff:ff") / IP(
        src="10.0.0.99", dst="255.255.255.255"
    )
    return struct.pack("!II", 0x08000000, vni << 8) + raw(inner / UDP(sport=SPORT, dport=9) / Raw(marker))


def _guard_drops(lab: RunningLab, x: Injection) -> int:
    h = next(h for h in lab.hosts if h.host == x.host)
    return h.dataplane.overlay.counters(h.ifindexes[x.pnic]).reasons.get(Reason.VXLAN_UNKNOWN_VTEP, 0)


def _send_vxlan(lab: RunningLab, x: Injection, marker: bytes) -> None:
    with netns.inside(names.namespace(lab.lab, x.router)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.bind((x.source, 0))
        for _ in range(COPIES):
            sock.sendto(_vxlan(x.vni, marker), (x.vtep, VXLAN_PORT))


class Run:
    """The injection under way: captures in the victims and at the pNIC, the guard's counter
    before, the packets sent."""

    def __init__(self, lab: RunningLab, rec: Recorder, x: Injection, marker: bytes) -> None:
        self.lab, self.rec, self.x, self.marker = lab, rec, x, marker
        self.victims = [rec.capture(names.namespace(lab.lab, vm), "eth0") for vm in x.victims]
        rec.capture(names.namespace(lab.lab, x.host), x.pnic)
        self.before = _guard_drops(lab, x)
        _send_vxlan(lab, x, marker)

    def judge(self) -> tuple[list[dict[str, Any]], str]:
        """Findings and a sentence; reads the captures (`Recorder.drain`)."""
        x = self.x
        dropped = until(lambda: _guard_drops(self.lab, x) - self.before, COPIES)
        self.rec.drain()
        leaked = sum(self.marker in f.data for cap in self.victims for f in self.rec.frames_of(cap))
        findings = []
        if dropped != COPIES:
            where = f"{x.host} pNIC {x.pnic} ingress, reason vxlan-unknown-vtep"
            findings.append(
                {"what": "overlay injection drops", "where": where, "expected": COPIES, "observed": dropped}
            )
        if leaked:
            where = ", ".join(x.victims)
            findings.append(
                {"what": "overlay injection delivered", "where": where, "expected": 0, "observed": leaked}
            )
        text = (
            f"{COPIES} VXLAN packets (VNI {x.vni}) from {x.router} {x.source} to {x.host}'s VTEP "
            f"{x.vtep}: vxlan-unknown-vtep {dropped}/{COPIES}, {leaked} reached its VMs"
        )
        return findings, text
