"""The cases of the firewall table (test_firewall_programs.py): the reference policy, the vNICs,
and a small language for steps, each saying what a frame must do and leave behind.

    peers (web 10.0.10.2, db 10.0.30.3, 192.168.0.0/24, ...) ── vSwitch port 1 ── VM app1
                                                 "in" = port_to_vm  ──>   (endpoint 1,
                                                 "out" = port_from_vm <──  10.0.10.1, 2001:db8:10::1)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from dataplane.abi import Reason
from dataplane.fwpolicy import AnyPeer, Cidr, Endpoint, Group, Policy, Rule
from tests.bpf.fwtools import IN, OUT, VM4, VM6, VM_MAC, Vnic, fragment, tcp, udp, udp_bytes

R = Reason
WEB4, WEB6, DB4, OPEN4 = "10.0.10.2", "2001:db8:10::2", "10.0.30.3", "10.0.10.4"
SERVER = "10.0.20.5"  # an ordinary v4 destination: out TCP and UDP are allowed towards it
SERVER6 = "2001:db8:20::5"
MONITOR = "10.0.66.9"  # may send us any ICMP; we may send it nothing (rules 28, 26)

ENDPOINTS = (
    Endpoint(1, (VM4, VM6), {"app"}),
    Endpoint(2, (WEB4, WEB6), {"web"}),
    Endpoint(3, (DB4,), {"db"}),
    Endpoint(4, (OPEN4,)),  # in the policy without rules: allows both ways
)


def _rule(
    rid: int,
    direction: str,
    peer: object,
    proto: str = "any",
    ports: tuple[int, int] | None = None,
    action: str = "allow",
    priority: int = 0,
) -> Rule:
    return Rule(rid, {1}, direction, peer, proto, ports, action, priority)  # type: ignore[arg-type]


POLICY = Policy(
    ENDPOINTS,
    (
        # in (towards app1)
        _rule(10, IN, Group("web"), "tcp", (8080, 8089)),
        _rule(11, IN, Cidr("192.168.0.0/24"), "tcp", (22, 22), priority=1),
        _rule(12, IN, Cidr("192.168.0.66/32"), "tcp", (22, 22), "deny", priority=0),  # priority wins
        _rule(13, IN, AnyPeer(), "udp", (53, 53), priority=5),
        _rule(14, IN, Cidr("10.0.99.0/24"), "udp", (53, 53), "deny", priority=5),  # deny wins a tie
        _rule(15, IN, Cidr("10.0.40.0/24"), "tcp", (443, 443), priority=0),
        _rule(16, IN, Cidr("10.0.40.0/24"), "tcp", None, "deny", priority=1),
        _rule(17, IN, AnyPeer(), "tcp", (1000, 1999), priority=2),
        _rule(18, IN, Cidr(f"{DB4}/32")),  # a VM by its address, any protocol
        _rule(19, IN, AnyPeer(), "icmp", (8, 8)),
        _rule(28, IN, Cidr("10.0.66.0/24"), "icmp"),
        _rule(29, IN, AnyPeer(), "icmpv6", (128, 128)),
        _rule(30, IN, Cidr("2001:db8:20::/48"), "udp", (5000, 5010)),
        _rule(31, IN, Group("web"), "tcp", (8443, 8443)),
        # out (from app1)
        _rule(20, OUT, Group("db"), "tcp", (5432, 5432)),
        _rule(21, OUT, AnyPeer(), "tcp", (25, 25), "deny"),
        _rule(22, OUT, Cidr("0.0.0.0/0"), "tcp", priority=5),
        _rule(23, OUT, AnyPeer(), "udp", priority=5),
        _rule(24, OUT, AnyPeer(), "icmp", (8, 8)),
        _rule(25, OUT, AnyPeer(), "icmpv6", (128, 128)),
        _rule(26, OUT, Cidr("10.0.66.0/24"), "any", None, "deny"),
        _rule(27, OUT, Cidr("2001:db8:20::/48"), "tcp", (80, 80)),
    ),
)

VNICS = {
    "fw": Vnic(),
    "fw-only": Vnic(port_security=False),
    "portsec-only": Vnic(firewall=False),
    "plain": Vnic(port_security=False, firewall=False),  # all-zero flags: nothing checked
    "forwarder": Vnic(any_source=True),
    "no-rules": Vnic(endpoint=4, addresses=(OPEN4,)),
    "unknown": Vnic(endpoint=9),  # an endpoint id the policy does not have
}


@dataclass(frozen=True)
class Step:
    direction: str
    pkt: Packet
    reason: Reason
    event: int | None = None  # the rule an event must name; None: no event
    hit: bool = False  # the rule's hit counter must grow by one


@dataclass(frozen=True)
class Age:
    """Move every connection's last packet this many seconds into the past."""

    seconds: float


@dataclass(frozen=True)
class Case:
    id: str
    steps: tuple[Step | Age, ...]
    vnic: str = "fw"
    quota: int = 4096  # and the peer quota
    quota_in: int = 4096
    port: str = "access"  # the VM port: access port of VLAN 10, or "plain" (untagged only)
    entries: int | None = None  # connection entries when the case ends
    states: tuple[str, ...] = field(default=())  # and their states, sorted


def new(d: str, pkt: Packet, rule: int) -> Step:
    """A new flow `rule` allows: passes, one allow event, one hit."""
    return Step(d, pkt, R.PASS, rule, hit=True)


def ok(d: str, pkt: Packet) -> Step:
    """Passes without a policy decision (tracked flow, related, link layer, port security only)."""
    return Step(d, pkt, R.PASS)


def deny(d: str, pkt: Packet, rule: int = 0) -> Step:
    """Denied by `rule` (0: the default): one deny event, one hit."""
    return Step(d, pkt, R.POLICY, rule, hit=True)


def refuse(d: str, pkt: Packet, reason: Reason, rule: int = 0) -> Step:
    """Refused by the firewall's state checks: one deny event naming `reason`, no rule hit."""
    return Step(d, pkt, reason, rule)


# refusals before the firewall that are attacks: reported as deny events of rule 0 (vswitch.c)
REPORTED = frozenset({R.SPOOF_MAC, R.SPOOF_IP, R.SPOOF_ARP, R.DHCP_SERVER, R.ROUTER_ADVERT, R.SPOOF_ND})
REPORTED |= {R.FRAG_TINY, R.IPV6_CHAIN}


def drop(d: str, pkt: Packet, reason: Reason) -> Step:
    """Dropped before the firewall (port security, parsing): counted; an event of rule 0 if the
    reason is an attack (REPORTED), none for malformed or unsupported frames."""
    return Step(d, pkt, reason, 0 if reason in REPORTED else None)


def C(id: str, *steps: Step | Age, **kw: object) -> Case:
    return Case(id, steps, **kw)  # type: ignore[arg-type]


def syn_out(dst: str, dport: int, sport: int = 40000) -> Packet:
    return tcp(VM6 if ":" in dst else VM4, dst, sport, dport, "S")


def tcp_in(src: str, sport: int, dport: int, flags: str = "S") -> Packet:
    return tcp(src, VM6 if ":" in src else VM4, sport, dport, flags)


def udp_in(src: str, sport: int, dport: int) -> Packet:
    return udp(src, VM6 if ":" in src else VM4, sport, dport)


def udp_out(dst: str, dport: int, sport: int = 33000) -> Packet:
    return udp(VM6 if ":" in dst else VM4, dst, sport, dport)


UDP_DATA = udp_bytes(33000, 9000)  # 72 bytes: fragments [0, 40) + [40, 72)


def frag_out(
    dst: str, lo: int, hi: int, more: bool, data: bytes = UDP_DATA, ident: int = 0x4242, proto: int = 17
) -> Packet:
    return fragment(VM6 if ":" in dst else VM4, dst, proto, data, lo, hi, more, ident)


def frag_in(src: str, lo: int, hi: int, more: bool, data: bytes, ident: int = 0x5151) -> Packet:
    return fragment(src, VM6 if ":" in src else VM4, 17, data, lo, hi, more, ident)


def arp(hwsrc: str = VM_MAC, psrc: str = VM4, pdst: str = WEB4, op: int = 1) -> Packet:
    return Ether(src=VM_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=op, hwsrc=hwsrc, psrc=psrc, pdst=pdst)
