"""The attack suite, bounded: a few crafted frames of each kind sent from one VM at a neighbour,
judged by the exact drop counters on the attacker's port and by what reached the victim.

VLAN hopping (a double tag, a foreign tag on an access port), MAC, IPv4 and IPv6 source
spoofing, ARP spoofing, and, on a firewalled port, fragments (a tiny first fragment, an orphan).
Each frame carries a random marker: a capture inside the victim that finds it has caught an
attack that got through. Snooping is judged from the echo round (traffic.py).
"""

from __future__ import annotations

import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplane.abi import Direction, Reason
from netns_lab.features.compliance.verify import expected
from netns_lab.features.compliance.verify.evidence import recording
from netns_lab.kernel import netns
from netns_lab.lab.running import RunningLab
from netns_lab.topology import names
from netns_lab.topology.model import Nic, Vm

COPIES = 2  # frames of each attack
VXLAN_PORT = 4789
SPORT = 40999
WAIT = 1.0  # seconds for the counters to show every frame (they are counted as the frame passes)


@dataclass(frozen=True)
class Attack:
    name: str
    expect: dict[str, int]  # drop reason -> frames, on the attacker's port, ingress
    frames: tuple[bytes, ...]


@dataclass(frozen=True)
class End:
    vm: Vm
    nic: Nic

    @property
    def ip(self) -> str:
        assert self.nic.ip is not None
        return str(self.nic.ip.ip)

    @property
    def name(self) -> str:
        return f"{self.vm.name}.{self.nic.name}"


def _link_local(mac: str) -> str:
    b = bytes(int(x, 16) for x in mac.split(":"))
    eui = bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:]
    return str(socket.inet_ntop(socket.AF_INET6, b"\xfe\x80" + bytes(6) + eui))


def choose(lab: RunningLab) -> tuple[End, End, End] | None:
    """(attacker, victim, impersonated): an attacker with port security, a firewalled one first,
    and a victim it shares a layer-2 network with; None when the lab has no such pair."""
    topo = lab.topo
    fw = topo.firewalled_nics()
    ends = [
        End(vm, nic)
        for vm in topo.vms
        if not vm.forwards and vm.role != "analyzer"
        for nic in vm.nics
        if nic.ip is not None and nic.ip.version == 4 and nic.port_security
    ]
    ends.sort(key=lambda e: ((e.vm.name, e.nic.index) not in fw, e.nic.vlan is None))
    for a in ends:
        for v in ends:
            if v.vm.name != a.vm.name and expected.layer2(topo, (a.vm, a.nic), (v.vm, v.nic))[0]:
                other = next((o for o in ends if o.vm.name not in (a.vm.name, v.vm.name)), v)
                return a, v, other
    return None


def suite(lab: RunningLab, a: End, v: End, o: End, marker: bytes) -> list[Attack]:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Dot1Q, Ether
    from scapy.packet import Raw, raw

    udp = UDP(sport=SPORT, dport=9) / Raw(marker)
    to_v = Ether(src=a.nic.mac, dst=v.nic.mac)
    attacks = []
    if a.nic.vlan is not None:
        other = next(
            (x.id for x in lab.topo.vlans if x.id != a.nic.vlan), 4000 if a.nic.vlan != 4000 else 4001
        )
        payload = IP(src=a.ip, dst=v.ip) / udp
        attacks += [
            Attack(
                "VLAN hopping: double tag",
                {"qinq": 1},
                (raw(to_v / Dot1Q(vlan=a.nic.vlan) / Dot1Q(vlan=other) / payload),),
            ),
            Attack(
                "VLAN hopping: foreign tag",
                {"tagged-on-access": 1},
                (raw(to_v / Dot1Q(vlan=other) / payload),),
            ),
        ]
    attacks += [
        Attack(
            "MAC spoofing",
            {"spoof-mac": 1},
            (raw(Ether(src=o.nic.mac, dst=v.nic.mac) / IP(src=a.ip, dst=v.ip) / udp),),
        ),
        Attack("IPv4 source spoofing", {"spoof-ip": 1}, (raw(to_v / IP(src=o.ip, dst=v.ip) / udp),)),
        Attack(
            "IPv6 source spoofing",
            {"spoof-ip": 1},
            (raw(to_v / IPv6(src=_link_local(o.nic.mac), dst=_link_local(v.nic.mac)) / udp),),
        ),
        Attack(
            "ARP spoofing",
            {"spoof-arp": 1},
            (raw(to_v / ARP(op=2, hwsrc=a.nic.mac, psrc=o.ip, hwdst=v.nic.mac, pdst=v.ip) / Raw(marker)),),
        ),
    ]
    if (a.vm.name, a.nic.index) in lab.topo.firewalled_nics():
        attacks += _fragments(a, v, marker)
    return [Attack(x.name, {r: n * COPIES for r, n in x.expect.items()}, x.frames * COPIES) for x in attacks]


def _fragments(a: End, v: End, marker: bytes) -> list[Attack]:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw, raw

    tcp = raw(IP(src=a.ip, dst=v.ip) / TCP(sport=SPORT, dport=80, flags="S") / Raw(marker * 4))[20:]
    ids = [secrets.randbelow(0xFFFF) + 1 for _ in range(2)]

    def frag(ident: int, offset: int, more: bool, data: bytes) -> bytes:
        ip = IP(src=a.ip, dst=v.ip, id=ident, proto=6, flags="MF" if more else 0, frag=offset // 8)
        return raw(Ether(src=a.nic.mac, dst=v.nic.mac) / ip / Raw(data))

    return [
        Attack(
            "tiny first fragment",
            {"frag-tiny": 1, "frag-orphan": 1},
            (frag(ids[0], 0, True, tcp[:8]), frag(ids[0], 8, False, tcp[8:])),
        ),
        Attack("orphan fragment", {"frag-orphan": 1}, (frag(ids[1], 1480, False, marker),)),
    ]


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


def injection(lab: RunningLab) -> Injection | None:
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


def _until(read: Callable[[], int], want: int) -> int:
    """`read()` once it reaches `want`, or after WAIT seconds (counters grow as frames pass)."""
    deadline = time.monotonic() + WAIT
    while (value := read()) < want and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def _inject(ns: str, ifname: str, frames: tuple[bytes, ...]) -> None:
    with netns.inside(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with sock:
        sock.bind((ifname, 0))
        for frame in frames:
            sock.send(frame)


def _drops(lab: RunningLab, a: End) -> dict[str, int]:
    h = next(h for h in lab.hosts if h.host == a.vm.host)
    ifindex = h.ifindexes[names.vm_port(a.vm.name, a.nic.index)]
    counts = h.dataplane.counters(ifindex)
    return {r.label: c.packets for (d, r), c in counts.items() if d == Direction.INGRESS and r != Reason.PASS}


def check(lab: RunningLab, folder: Path | None, snooping: list[dict[str, Any]]) -> dict[str, Any]:
    chosen = choose(lab)
    if chosen is None:
        return _doc("skipped", "no VM with port security shares a layer-2 network with another", [], {})
    a, v, o = chosen
    marker = secrets.token_bytes(12)
    attacks = suite(lab, a, v, o, marker)
    want: dict[str, int] = {}
    for x in attacks:
        for r, n in x.expect.items():
            want[r] = want.get(r, 0) + n
    with recording(lab, folder, "attacks") as rec:
        rec.capture(names.namespace(lab.lab, a.vm.host), names.vm_port(a.vm.name, a.nic.index))
        victim = rec.capture(names.namespace(lab.lab, v.vm.name), v.nic.name)
        before = _drops(lab, a)
        guard = leaked_vx = 0
        vx = injection(lab)
        if vx is not None:
            victims = [rec.capture(names.namespace(lab.lab, vm), "eth0") for vm in vx.victims]
            rec.capture(names.namespace(lab.lab, vx.host), vx.pnic)
            guard_before = _guard_drops(lab, vx)
            _send_vxlan(lab, vx, marker)
        for x in attacks:
            _inject(names.namespace(lab.lab, a.vm.name), a.nic.name, x.frames)
        deadline = time.monotonic() + WAIT
        while True:
            got = {r: n - before.get(r, 0) for r, n in _drops(lab, a).items() if n > before.get(r, 0)}
            if all(got.get(r, 0) >= n for r, n in want.items()) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if vx is not None:
            guard = _until(lambda: _guard_drops(lab, vx) - guard_before, COPIES)
        rec.drain()
        leaked = sum(marker in f.data for f in rec.frames_of(victim))
        if vx is not None:
            leaked_vx = sum(marker in f.data for cap in victims for f in rec.frames_of(cap))
        files = rec.finish()
    findings = [
        {
            "what": "attack drops",
            "where": f"{a.vm.host} port {names.vm_port(a.vm.name, a.nic.index)} ingress, reason {r}",
            "expected": n,
            "observed": got.get(r, 0),
        }
        for r, n in sorted(want.items())
        if got.get(r, 0) != n
    ]
    if leaked:
        findings.append(
            {"what": "attack frames delivered", "where": v.name, "expected": 0, "observed": leaked}
        )
    findings += snooping
    if vx is not None:
        where = f"{vx.host} pNIC {vx.pnic} ingress, reason vxlan-unknown-vtep"
        if guard != COPIES:
            findings.append(
                {"what": "overlay injection drops", "where": where, "expected": COPIES, "observed": guard}
            )
        if leaked_vx:
            victims_text = ", ".join(vx.victims)
            findings.append(
                {
                    "what": "overlay injection delivered",
                    "where": victims_text,
                    "expected": 0,
                    "observed": leaked_vx,
                }
            )
    counters = ", ".join(f"{r} {got.get(r, 0)}/{n}" for r, n in sorted(want.items()))
    reason = (
        f"{a.name} attacked {v.name} (impersonating {o.name}), {len(attacks)} kinds of frames: "
        f"drops {counters}; {leaked} frames reached the victim; "
        f"snooping: {len(snooping)} frames seen by others"
    )
    if vx is not None:
        reason += (
            f"; overlay injection: {COPIES} VXLAN packets (VNI {vx.vni}) from {vx.router} {vx.source} to "
            f"{vx.host}'s VTEP {vx.vtep}: vxlan-unknown-vtep {guard}/{COPIES}, {leaked_vx} reached its VMs"
        )
    elif lab.topo.segments:
        reason += "; overlay injection: no underlay router shares a subnet with a VTEP (not sent)"
    counted = {r: got.get(r, 0) for r in want}
    doc = _doc("fail" if findings else "pass", reason, findings, files, counters=counted)
    doc["attacks"] = [x.name for x in attacks]
    return doc


def _doc(
    status: str,
    reason: str,
    findings: list[dict[str, Any]],
    files: dict[str, str],
    counters: dict[str, int] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "attacks",
        "recommendations": ["VM-VN-R1", "VM-FW-R2", "VM-TM-R2"],
        "status": status,
        "reason": reason,
        "findings": findings,
        "evidence": files,
    }
    if counters is not None:
        doc["counters"] = counters
    return doc
