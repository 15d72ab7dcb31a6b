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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplane.abi import Direction, Reason
from netns_lab.features.compliance.verify import expected, injection
from netns_lab.features.compliance.verify.evidence import recording, until
from netns_lab.kernel import netns
from netns_lab.lab.running import RunningLab
from netns_lab.topology import names
from netns_lab.topology.model import Nic, Vm

COPIES = 2  # frames of each attack
SPORT = 40999


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


def _wanted(attacks: list[Attack]) -> dict[str, int]:
    want: dict[str, int] = {}
    for x in attacks:
        for r, n in x.expect.items():
            want[r] = want.get(r, 0) + n
    return want


def _attack(lab: RunningLab, a: End, attacks: list[Attack], want: dict[str, int]) -> dict[str, int]:
    """Send the attacks; the drops they added on the attacker's port, by reason."""
    before = _drops(lab, a)
    for x in attacks:
        _inject(names.namespace(lab.lab, a.vm.name), a.nic.name, x.frames)

    def added() -> dict[str, int]:
        return {r: n - before.get(r, 0) for r, n in _drops(lab, a).items() if n > before.get(r, 0)}

    until(lambda: min((added().get(r, 0) - n for r, n in want.items()), default=0), 0)  # all counted
    return added()


def check(lab: RunningLab, folder: Path | None, snooping: list[dict[str, Any]]) -> dict[str, Any]:
    chosen = choose(lab)
    if chosen is None:
        return _doc("skipped", "no VM with port security shares a layer-2 network with another", [], {})
    a, v, o = chosen
    marker = secrets.token_bytes(12)
    attacks = suite(lab, a, v, o, marker)
    want = _wanted(attacks)
    vx = injection.plan(lab)
    with recording(lab, folder, "attacks") as rec:
        rec.capture(names.namespace(lab.lab, a.vm.host), names.vm_port(a.vm.name, a.nic.index))
        victim = rec.capture(names.namespace(lab.lab, v.vm.name), v.nic.name)
        overlay = injection.Run(lab, rec, vx, marker) if vx is not None else None
        got = _attack(lab, a, attacks, want)
        vx_findings, vx_text = overlay.judge() if overlay is not None else ([], "")
        rec.drain()
        leaked = sum(marker in f.data for f in rec.frames_of(victim))
        files = rec.finish()
    port = f"{a.vm.host} port {names.vm_port(a.vm.name, a.nic.index)} ingress"
    findings = [
        {"what": "attack drops", "where": f"{port}, reason {r}", "expected": n, "observed": got.get(r, 0)}
        for r, n in sorted(want.items())
        if got.get(r, 0) != n
    ]
    if leaked:
        findings.append(
            {"what": "attack frames delivered", "where": v.name, "expected": 0, "observed": leaked}
        )
    findings += snooping + vx_findings
    counters = ", ".join(f"{r} {got.get(r, 0)}/{n}" for r, n in sorted(want.items()))
    reason = (
        f"{a.name} attacked {v.name} (impersonating {o.name}), {len(attacks)} kinds of frames: "
        f"drops {counters}; {leaked} frames reached the victim; "
        f"snooping: {len(snooping)} frames seen by others"
    )
    if vx_text or lab.topo.segments:
        reason += "; overlay injection: " + (
            vx_text or "no underlay router shares a subnet with a VTEP (not sent)"
        )
    doc = _doc(
        "fail" if findings else "pass", reason, findings, files, counters={r: got.get(r, 0) for r in want}
    )
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
