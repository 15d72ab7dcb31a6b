"""The watch view's frame decoder on crafted frames: every protocol it knows, and truncated
frames (every prefix of every frame) that must never raise.

Frames are built with scapy, an independent encoder: a decoder bug cannot cancel itself out.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from netns_lab.observe.pktdecode import decode

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
ETH = Ether(src=A, dst=B)
V4 = IP(src="10.0.0.1", dst="10.0.0.2")
V6 = IPv6(src="2001:db8::1", dst="2001:db8::2")

CASES = {
    "tcp syn": (ETH / V4 / TCP(sport=1234, dport=80, flags="S"), "tcp", 1234, 80, "SYN"),
    "tcp syn-ack": (ETH / V4 / TCP(sport=80, dport=1234, flags="SA"), "tcp", 80, 1234, "SYN,ACK"),
    "tcp fin-psh-ack": (ETH / V4 / TCP(flags="FPA"), "tcp", 20, 80, "FIN,PSH,ACK"),
    "tcp rst": (ETH / V4 / TCP(sport=5, dport=6, flags="R"), "tcp", 5, 6, "RST"),
    "tcp no flags": (ETH / V4 / TCP(sport=5, dport=6, flags=0), "tcp", 5, 6, "none"),
    "tcp ece-cwr-urg": (ETH / V4 / TCP(sport=5, dport=6, flags="UEC"), "tcp", 5, 6, "URG,ECE,CWR"),
    "udp": (ETH / V4 / UDP(sport=53, dport=5353), "udp", 53, 5353, ""),
    "icmp echo": (ETH / V4 / ICMP(type=8, id=7, seq=3), "icmp", None, None, "echo-request id 7 seq 3"),
    "icmp unreachable": (ETH / V4 / ICMP(type=3, code=3), "icmp", None, None, "dest-unreach code 3"),
    "ipv4 with options": (ETH / IP(src="10.0.0.1", dst="10.0.0.2", ihl=6, options=b"\x01\x01\x01\x00") / UDP(sport=1, dport=2), "udp", 1, 2, ""),  # noqa: E501
    "ipv4 later fragment": (ETH / IP(src="10.0.0.1", dst="10.0.0.2", proto=6, frag=3) / (b"x" * 20), "tcp", None, None, "fragment offset 24"),  # noqa: E501
    "ipv4 first fragment": (ETH / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / UDP(sport=1, dport=2), "udp", 1, 2, "first-fragment"),  # noqa: E501
    "ipv6 tcp": (ETH / V6 / TCP(sport=4, dport=443, flags="S"), "tcp", 4, 443, "SYN"),
    "ipv6 ext chain": (ETH / V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() / UDP(sport=9, dport=10), "udp", 9, 10, ""),  # noqa: E501
    "ipv6 first fragment": (ETH / V6 / IPv6ExtHdrFragment(m=1, offset=0) / UDP(sport=9, dport=10), "udp", 9, 10, ""),  # noqa: E501
    "ipv6 later fragment": (ETH / V6 / IPv6ExtHdrFragment(nh=17, offset=5) / (b"y" * 16), "udp", None, None, "fragment offset 40"),  # noqa: E501
    "ipv6 ah": (ETH / V6 / AH(nh=6, payloadlen=4, icv=b"\0" * 12) / TCP(sport=1, dport=2, flags="A"), "tcp", 1, 2, "ACK"),  # noqa: E501
    "icmpv6 echo": (ETH / V6 / ICMPv6EchoRequest(id=1, seq=2), "icmpv6", None, None, "echo-request id 1 seq 2"),  # noqa: E501
    "icmpv6 ns": (ETH / V6 / ICMPv6ND_NS(tgt="2001:db8::2"), "icmpv6", None, None, "neighbor-solicit"),
}  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_decodes_transport(name: str) -> None:
    pkt, proto, sport, dport, info = CASES[name]
    d = decode(bytes(pkt))
    assert (d.proto, d.sport, d.dport, d.info) == (proto, sport, dport, info)
    assert (d.src_mac, d.dst_mac, d.length, d.vlans) == (A, B, len(bytes(pkt)), [])
    assert d.src in ("10.0.0.1", "2001:db8::1") and d.dst in ("10.0.0.2", "2001:db8::2")


def test_vlan_tags_single_and_stacked() -> None:
    one = decode(bytes(ETH / Dot1Q(vlan=120) / V4 / UDP(sport=1, dport=2)))
    assert (one.vlans, one.proto, one.sport) == ([120], "udp", 1)
    qinq = decode(bytes(ETH / Dot1AD(vlan=7) / Dot1Q(vlan=4094) / V6 / TCP(sport=3, dport=4, flags="S")))
    assert (qinq.vlans, qinq.proto, qinq.src, qinq.info) == ([7, 4094], "tcp", "2001:db8::1", "SYN")
    assert qinq.summary().startswith("vlan 7,4094 tcp [2001:db8::1]:3 -> [2001:db8::2]:4 SYN")


def test_arp_request_and_reply() -> None:
    ask = decode(bytes(Ether(src=A, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc="10.0.0.1", pdst="10.0.0.2")))
    assert (ask.proto, ask.src, ask.dst, ask.info) == ("arp", "10.0.0.1", "10.0.0.2", "who-has 10.0.0.2")
    reply = decode(bytes(ETH / ARP(op=2, hwsrc=A, psrc="10.0.0.1", pdst="10.0.0.2")))
    assert reply.info == f"10.0.0.1 is-at {A}"


def test_other_ethertypes_and_ip_protocols() -> None:
    assert decode(bytes(Ether(src=A, dst=B, type=0x88CC) / b"lldp")).proto == "0x88cc"
    gre = decode(bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2", proto=47) / (b"\0" * 8)))
    assert (gre.proto, gre.src, gre.sport) == ("gre", "10.0.0.1", None)
    assert decode(bytes(ETH / IP(proto=253) / b"")).proto == "ip/253"


def test_summary_of_a_tcp_frame() -> None:
    d = decode(bytes(ETH / V4 / TCP(sport=1234, dport=80, flags="S")))
    assert d.summary() == "tcp 10.0.0.1:1234 -> 10.0.0.2:80 SYN len 54"


@pytest.mark.parametrize("name", [*CASES, "qinq", "arp"])
def test_every_prefix_of_every_frame_decodes_without_raising(name: str) -> None:
    extra = {
        "qinq": ETH / Dot1AD(vlan=7) / Dot1Q(vlan=9) / V6 / IPv6ExtHdrHopByHop() / UDP(),
        "arp": ETH / ARP(op=2),
    }
    frame = bytes(extra[name] if name in extra else CASES[name][0])
    for cut in range(len(frame)):
        d = decode(frame[:cut])
        assert d.length == cut
        if cut < len(frame) - 20 and name not in ("ipv4 later fragment", "ipv6 later fragment"):
            assert d.info == "truncated" or d.sport is None, (cut, d)
    assert decode(b"").info == "truncated"


def test_garbage_never_raises() -> None:
    import random

    rng = random.Random(5)
    heads = [bytes(ETH / V4), bytes(ETH / V6), bytes(ETH / Dot1Q()), bytes(ETH / ARP())]
    for _ in range(3000):
        head = rng.choice(heads)[: rng.randrange(12, 60)]
        decode(head + rng.randbytes(rng.randrange(0, 80)))  # any exception fails the test


def test_a_loop_of_ipv6_extension_headers_ends() -> None:
    hop = bytes([0, 0, 0, 0, 0, 0, 0, 0])  # next header 0 = hop-by-hop again, forever
    frame = bytes(ETH / IPv6(src="::1", dst="::2", nh=0)) + hop * 20
    d = decode(frame)
    assert d.proto in ("ip/0", "ipv6") and d.sport is None


def test_a_chain_past_the_dataplanes_bound_is_named() -> None:
    """The view walks as far as the dataplane does (dataplane.abi.IPV6_MAX_EXT) and says so past it."""
    from dataplane.abi import IPV6_MAX_EXT
    from netns_lab.observe.pktdecode import IPV6_MAX_EXT as VIEW_MAX

    assert VIEW_MAX == IPV6_MAX_EXT

    def chain(n: int) -> bytes:
        head = V6
        for _ in range(n):
            head = head / IPv6ExtHdrDestOpt()
        return bytes(ETH / head / UDP(sport=9, dport=10))

    at = decode(chain(IPV6_MAX_EXT))
    assert (at.proto, at.sport, at.dport) == ("udp", 9, 10)
    past = decode(chain(IPV6_MAX_EXT + 1))
    assert past.sport is None and past.info == f"extension-header chain longer than {IPV6_MAX_EXT}"
