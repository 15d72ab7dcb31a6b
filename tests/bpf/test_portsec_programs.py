"""Port security and the IPv6 parser on tables of attacks, each beside the legitimate twin that must
still pass, through BPF_PROG_TEST_RUN (same harness and checks as test_firewall_programs.py).

    attacker frames ── port_from_vm ──> vSwitch        "out": from the VM app1 (10.0.10.1,
    peers' frames   <── port_to_vm  ──                   2001:db8:10::1, 02:00:00:00:0a:01)

Classes: extension-header chains that hide the upper layer, neighbour discovery for others'
addresses, DHCP server messages by message (not port), unspecified sources, ICMP bound to its IP
version, IPv4 redirects, IPv6 fragments keyed without the upper layer, reordered fragments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dhcp6 import DHCP6_Advertise, DHCP6_RelayReply, DHCP6_Reply, DHCP6_Solicit
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw, raw

from dataplane import abi
from dataplane.firewall import Settings
from tests.bpf import pktref
from tests.bpf.fwcases import (
    POLICY,
    SERVER,
    SERVER6,
    WEB6,
    C,
    Case,
    R,
    Step,
    deny,
    drop,
    new,
    ok,
    refuse,
    syn_out,
)
from tests.bpf.fwtools import (
    IN,
    OUT,
    VLAN,
    VM4,
    VM6,
    VM_LL,
    VM_MAC,
    Harness,
    Vnic,
    harness_on,
    udp_bytes,
    with_ext_headers,
)
from tests.bpf.test_firewall_programs import check_step

if TYPE_CHECKING:
    from collections.abc import Iterator

    from dataplane.switch import SwitchDataplane

OTHER_MAC = "02:00:00:00:0b:01"
VM_SOLICITED = "ff02::1:ff00:1"  # VM6's solicited-node group
LL_SOLICITED = "ff02::1:ff00:a01"  # VM_LL's
NONCE = Raw(bytes([14, 1, 1, 2, 3, 4, 5, 6]))  # the nonce option Linux puts in a DAD NS (RFC 7527)

VNICS = {
    "fw": Vnic(),
    "portsec-only": Vnic(firewall=False),
    "forwarder-portsec-only": Vnic(any_source=True, firewall=False),
    "dhcp-server": Vnic(dhcp_server=True),
}


def ah_chain(pkt: Packet, before: int = 0) -> Packet:
    """`pkt` with `before` destination options headers, then AH (12 bytes: length field 1)."""
    ip = pkt[IPv6]
    upper = ip.nh
    body = raw(ip.payload)
    headers = b""
    kinds = [60] * before + [51]
    for i, kind in enumerate(kinds):
        nxt = kinds[i + 1] if i + 1 < len(kinds) else upper
        headers += bytes([nxt, 1]) + b"\0" * 10 if kind == 51 else bytes([nxt, 0]) + b"\1\4\0\0\0\0"
    first = kinds[0]
    return IPv6(src=ip.src, dst=ip.dst, nh=first, plen=len(headers) + len(body)) / Raw(headers + body)


def dst_opts(pkt: Packet, count: int) -> Packet:
    """`pkt` behind `count` destination options headers (the chain scapy builds)."""
    return with_ext_headers(pkt, *["dst"] * count)


def bootp(op: int, src: str = VM4, dst: str = "255.255.255.255", sport: int = 67, dport: int = 68) -> Packet:
    kind = "offer" if op == 2 else "discover"
    return (
        IP(src=src, dst=dst)
        / UDP(sport=sport, dport=dport)
        / BOOTP(op=op, chaddr=bytes.fromhex("02000000 0a01".replace(" ", "")))
        / DHCP(options=[("message-type", kind), "end"])
    )


def nd_from(src: str, dst: str, msg: Packet) -> Packet:
    return IPv6(src=src, dst=dst, hlim=255) / msg


RA = nd_from(VM_LL, "ff02::1", ICMPv6ND_RA())
UDP_DATA = udp_bytes(33000, 9000)


def v6_frag_with_dstopts(lo: int, hi: int, more: bool) -> Packet:
    """A fragment of a datagram whose fragmentable part is a destination options header then UDP:
    the first fragment's upper layer is UDP, its later fragments can only name the options."""
    data = raw(IPv6ExtHdrDestOpt(nh=17)) + UDP_DATA
    frag = IPv6ExtHdrFragment(nh=60, offset=lo // 8, m=int(more), id=0x6161)
    return IPv6(src=VM6, dst=SERVER6) / frag / Raw(data[lo:hi])


def v4_frag(lo: int, hi: int, more: bool, ident: int = 0x7171) -> Packet:
    return IP(src=VM4, dst=SERVER, proto=17, id=ident, frag=lo // 8, flags="MF" if more else 0) / Raw(
        UDP_DATA[lo:hi]
    )


CASES = [
    # ---- extension-header chains: the upper layer or a refusal, never the last header reached ----
    C("chain-ra-within-the-bound", drop(OUT, dst_opts(RA, 4), R.ROUTER_ADVERT), vnic="portsec-only"),
    C(
        "chain-ra-past-the-bound",
        drop(OUT, dst_opts(RA, abi.IPV6_MAX_EXT + 1), R.IPV6_CHAIN),
        vnic="portsec-only",
    ),
    C(
        "chain-redirect-behind-chain",
        drop(
            OUT,
            dst_opts(nd_from(VM_LL, "fe80::2", ICMPv6ND_Redirect(tgt="fe80::3", dst="2001:db8::1")), 5),
            R.ROUTER_ADVERT,
        ),
        vnic="portsec-only",
    ),
    C("chain-at-the-bound", new(OUT, dst_opts(syn_out(SERVER6, 80), abi.IPV6_MAX_EXT), 27)),
    C("chain-short-with-ah", new(OUT, ah_chain(syn_out(SERVER6, 80), before=2), 27)),
    C("chain-of-every-kind", new(OUT, with_ext_headers(syn_out(SERVER6, 80), "hbh", "dst", "rt", "dst"), 27)),
    C("chain-deny-not-dodged", deny(OUT, dst_opts(syn_out(SERVER6, 81), 6))),
    C(
        "chain-past-the-bound-denied-tcp",
        drop(OUT, dst_opts(syn_out(SERVER6, 80), abi.IPV6_MAX_EXT + 1), R.IPV6_CHAIN),
    ),
    C(
        "chain-to-vm-past-the-bound",
        drop(
            IN,
            dst_opts(IPv6(src="fe80::1", dst="ff02::1") / ICMPv6ND_RA(), abi.IPV6_MAX_EXT + 1),
            R.IPV6_CHAIN,
        ),
        vnic="portsec-only",
    ),
    C(
        "chain-hop-by-hop-not-first",
        drop(OUT, with_ext_headers(syn_out(SERVER6, 80), "dst", "hbh"), R.IPV6_CHAIN),
    ),
    C(
        "chain-two-fragment-headers",
        drop(
            OUT,
            IPv6(src=VM6, dst=SERVER6)
            / IPv6ExtHdrFragment(nh=44, m=1, id=1)
            / IPv6ExtHdrFragment(nh=17, m=1, id=2)
            / Raw(UDP_DATA[:40]),
            R.IPV6_CHAIN,
        ),
    ),
    C(
        "chain-header-past-payload",
        drop(OUT, IPv6(src=VM6, dst=SERVER6, nh=60) / Raw(bytes([6, 4]) + b"\0" * 14), R.IPV6_CHAIN),
    ),
    C(
        "chain-unwalked-shim6",
        drop(
            OUT,
            IPv6(src=VM6, dst=SERVER6, nh=140) / Raw(bytes([6, 0]) + b"\0" * 6) / TCP(dport=80),
            R.IPV6_CHAIN,
        ),
    ),
    C(
        "chain-first-fragment-cut",
        drop(
            OUT,
            IPv6(src=VM6, dst=SERVER6)
            / IPv6ExtHdrFragment(nh=60, m=1, id=3)
            / Raw(bytes([17, 8]) + b"\0" * 14),
            R.IPV6_CHAIN,
        ),
    ),
    C("chain-esp-is-the-upper-layer", deny(OUT, IPv6(src=VM6, dst=SERVER6, nh=50) / Raw(b"\0" * 24))),
    # ---- ICMP only in its own IP version ----
    C(
        "icmp-rule-skips-v6-next-header-1",
        deny(IN, IPv6(src="2001:db8:99::1", dst=VM6, nh=1) / ICMP(type=8, id=5)),
    ),
    C(
        "icmpv6-rule-skips-v4-protocol-58",
        deny(IN, IP(src="198.51.100.1", dst=VM4, proto=58) / ICMPv6EchoRequest(id=5)),
    ),
    C("icmp-rule-v4-twin", new(IN, IP(src="198.51.100.1", dst=VM4) / ICMP(type=8, id=5), 19)),
    C("icmpv6-rule-v6-twin", new(IN, IPv6(src="2001:db8:99::1", dst=VM6) / ICMPv6EchoRequest(id=5), 29)),
    # ---- redirects ----
    C(
        "icmp4-redirect-from-vm",
        drop(
            OUT,
            IP(src=VM4, dst=SERVER) / ICMP(type=5, code=1, gw="10.0.10.66") / Raw(b"\0" * 28),
            R.ROUTER_ADVERT,
        ),
        vnic="portsec-only",
    ),
    C(
        "icmp4-redirect-from-forwarder",
        ok(OUT, IP(src=VM4, dst=SERVER) / ICMP(type=5, code=1, gw="10.0.10.66") / Raw(b"\0" * 28)),
        vnic="forwarder-portsec-only",
    ),
    C(
        "icmp6-redirect-from-forwarder",
        ok(OUT, nd_from(VM_LL, "fe80::2", ICMPv6ND_Redirect(tgt="fe80::3", dst="2001:db8::1"))),
        vnic="forwarder-portsec-only",
    ),
    C("ra-from-forwarder", drop(OUT, RA, R.ROUTER_ADVERT), vnic="forwarder-portsec-only"),
    # ---- neighbour discovery inspected like ARP ----
    C(
        "na-foreign-target",
        drop(
            OUT,
            nd_from(
                VM_LL, "ff02::1", ICMPv6ND_NA(tgt=WEB6, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=VM_MAC)
            ),
            R.SPOOF_ND,
        ),
    ),
    C(
        "na-own-target",
        ok(
            OUT,
            nd_from(
                VM_LL, "ff02::1", ICMPv6ND_NA(tgt=VM6, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=VM_MAC)
            ),
        ),
    ),
    C("na-own-link-local", ok(OUT, nd_from(VM_LL, "fe80::2", ICMPv6ND_NA(tgt=VM_LL, R=0, S=1, O=1)))),
    C(
        "na-foreign-mac",
        drop(
            OUT,
            nd_from(VM_LL, "ff02::1", ICMPv6ND_NA(tgt=VM6) / ICMPv6NDOptDstLLAddr(lladdr=OTHER_MAC)),
            R.SPOOF_ND,
        ),
    ),
    C(
        "na-from-forwarder-foreign",
        drop(OUT, nd_from(VM_LL, "ff02::1", ICMPv6ND_NA(tgt=WEB6)), R.SPOOF_ND),
        vnic="forwarder-portsec-only",
    ),
    C("na-unspecified-source", drop(OUT, nd_from("::", "ff02::1", ICMPv6ND_NA(tgt=VM6)), R.SPOOF_IP)),
    C(
        "ns-foreign-mac",
        drop(
            OUT,
            nd_from(
                VM_LL, "ff02::1:ff00:2", ICMPv6ND_NS(tgt="fe80::2") / ICMPv6NDOptSrcLLAddr(lladdr=OTHER_MAC)
            ),
            R.SPOOF_ND,
        ),
    ),
    C(
        "ns-own-mac",
        ok(
            OUT,
            nd_from(
                VM_LL, "ff02::1:ff00:2", ICMPv6ND_NS(tgt="fe80::2") / ICMPv6NDOptSrcLLAddr(lladdr=VM_MAC)
            ),
        ),
    ),
    C(
        "ns-zero-length-option",
        drop(
            OUT,
            nd_from(VM_LL, "ff02::1:ff00:2", ICMPv6ND_NS(tgt="fe80::2") / Raw(bytes([1, 0]) + b"\0" * 6)),
            R.SPOOF_ND,
        ),
    ),
    C("dad-own-address", ok(OUT, nd_from("::", VM_SOLICITED, ICMPv6ND_NS(tgt=VM6) / NONCE))),
    C("dad-link-local", ok(OUT, nd_from("::", LL_SOLICITED, ICMPv6ND_NS(tgt=VM_LL)))),
    C("dad-foreign-target", drop(OUT, nd_from("::", "ff02::1:ff00:2", ICMPv6ND_NS(tgt=WEB6)), R.SPOOF_ND)),
    C("dad-not-to-solicited-node", drop(OUT, nd_from("::", "ff02::1", ICMPv6ND_NS(tgt=VM6)), R.SPOOF_ND)),
    C(
        "dad-with-source-lladdr",
        drop(
            OUT,
            nd_from("::", VM_SOLICITED, ICMPv6ND_NS(tgt=VM6) / ICMPv6NDOptSrcLLAddr(lladdr=VM_MAC)),
            R.SPOOF_ND,
        ),
    ),
    C("rs-own-mac", ok(OUT, nd_from(VM_LL, "ff02::2", ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr=VM_MAC)))),
    C("rs-unspecified", ok(OUT, nd_from("::", "ff02::2", ICMPv6ND_RS()))),
    C(
        "rs-foreign-mac",
        drop(
            OUT, nd_from(VM_LL, "ff02::2", ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr=OTHER_MAC)), R.SPOOF_ND
        ),
    ),
    C(
        "ns-fragmented",
        drop(
            OUT,
            IPv6(src=VM_LL, dst="ff02::1:ff00:2", hlim=255)
            / IPv6ExtHdrFragment(nh=58, m=1, id=9)
            / Raw(raw(ICMPv6ND_NS(tgt="fe80::2"))),
            R.SPOOF_ND,
        ),
    ),
    # ---- DHCP server messages, whatever the ports; client and unrelated traffic passes ----
    C("dhcp4-offer-from-67", drop(OUT, bootp(2), R.DHCP_SERVER)),
    C("dhcp4-offer-other-source-port", drop(OUT, bootp(2, sport=6767), R.DHCP_SERVER)),
    C("dhcp4-reply-on-other-ports", drop(OUT, bootp(2, dst=SERVER, sport=5000, dport=5001), R.DHCP_SERVER)),
    C(
        "dhcp4-offer-fragmented",
        drop(
            OUT,
            IP(src=VM4, dst="255.255.255.255", proto=17, flags="MF") / UDP(sport=67, dport=68, len=300),
            R.DHCP_SERVER,
        ),
    ),
    C("dhcp4-discover", new(OUT, bootp(1, src="0.0.0.0", sport=68, dport=67), 23)),
    C("dhcp4-renew", new(OUT, bootp(1, dst=SERVER, sport=68, dport=67), 23)),
    C(
        "udp-from-67-not-dhcp",
        new(OUT, IP(src=VM4, dst=SERVER) / UDP(sport=67, dport=9999) / Raw(b"\2" * 16), 23),
    ),
    C("dhcp4-offer-declared-server", new(OUT, bootp(2), 23), vnic="dhcp-server"),
    C(
        "dhcp6-advertise",
        drop(
            OUT, IPv6(src=VM_LL, dst="fe80::2") / UDP(sport=547, dport=546) / DHCP6_Advertise(), R.DHCP_SERVER
        ),
    ),
    C(
        "dhcp6-reply-other-source-port",
        drop(OUT, IPv6(src=VM_LL, dst="fe80::2") / UDP(sport=5555, dport=546) / DHCP6_Reply(), R.DHCP_SERVER),
    ),
    C(
        "dhcp6-relay-reply",
        drop(OUT, IPv6(src=VM6, dst=SERVER6) / UDP(sport=547, dport=547) / DHCP6_RelayReply(), R.DHCP_SERVER),
    ),
    C(
        "dhcp6-solicit",
        new(OUT, IPv6(src=VM_LL, dst="ff02::1:2") / UDP(sport=546, dport=547) / DHCP6_Solicit(), 23),
    ),
    C(
        "dhcp6-advertise-declared-server",
        new(OUT, IPv6(src=VM_LL, dst="fe80::2") / UDP(sport=547, dport=546) / DHCP6_Advertise(), 23),
        vnic="dhcp-server",
    ),
    # ---- unspecified sources only where a protocol needs them ----
    C("unspecified4-tcp", drop(OUT, IP(src="0.0.0.0", dst=SERVER) / TCP(dport=80, flags="S"), R.SPOOF_IP)),
    C(
        "unspecified4-dhcp-not-broadcast",
        drop(OUT, bootp(1, src="0.0.0.0", dst=SERVER, sport=68, dport=67), R.SPOOF_IP),
    ),
    C("unspecified6-udp", drop(OUT, IPv6(src="::", dst=SERVER6) / UDP(sport=1, dport=9000), R.SPOOF_IP)),
    C("unspecified6-echo", drop(OUT, IPv6(src="::", dst=SERVER6) / ICMPv6EchoRequest(), R.SPOOF_IP)),
    C("unspecified6-mldv2-report", ok(OUT, IPv6(src="::", dst="ff02::16", hlim=1) / ICMPv6MLReport2())),
    C(
        "unspecified-from-forwarder",
        drop(OUT, IP(src="0.0.0.0", dst=SERVER) / TCP(dport=80, flags="S"), R.SPOOF_IP),
        vnic="forwarder-portsec-only",
    ),
    # ---- fragments ----
    C(
        "frag-v6-first-keyed-like-later",
        new(OUT, v6_frag_with_dstopts(0, 48, True), 23),
        ok(OUT, v6_frag_with_dstopts(48, 80, False)),
    ),
    C(
        "frag-reordered",
        refuse(OUT, v4_frag(40, 72, False), R.FRAG_ORPHAN),
        refuse(OUT, v4_frag(0, 40, True), R.FRAG_REORDERED),
        entries=0,
    ),
    C(
        "frag-reordered-v6",
        refuse(OUT, v6_frag_with_dstopts(48, 80, False), R.FRAG_ORPHAN),
        refuse(OUT, v6_frag_with_dstopts(0, 48, True), R.FRAG_REORDERED),
        entries=0,
    ),
    C(
        "frag-in-order",
        new(OUT, v4_frag(0, 40, True), 23),
        ok(OUT, v4_frag(40, 72, False)),
    ),
]


@pytest.fixture(scope="module")
def harness(dataplane: SwitchDataplane) -> Iterator[Harness]:
    with harness_on(dataplane) as h:
        yield h


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(harness: Harness, case: Case) -> None:
    vnic = VNICS[case.vnic]
    harness.start(POLICY, vnic, Settings(ct_quota=case.quota), vlan=VLAN)
    for i, step in enumerate(case.steps):
        assert isinstance(step, Step), "no ageing here"
        sent = harness.send(step.direction, step.pkt)
        try:
            check_step(step, sent, vnic.endpoint)  # type: ignore[arg-type]
        except AssertionError as err:
            raise AssertionError(f"step {i} ({step.direction} {step.pkt.summary()}): {err}") from err  # type: ignore[union-attr]
    if case.entries is not None:
        assert len(harness.connections()) == case.entries


def test_table_covers_the_new_reasons() -> None:
    reasons = {s.reason for case in CASES for s in case.steps}  # type: ignore[union-attr]
    assert {R.IPV6_CHAIN, R.SPOOF_ND, R.FRAG_REORDERED, R.DHCP_SERVER, R.ROUTER_ADVERT, R.SPOOF_IP} <= reasons
    assert len({case.id for case in CASES}) == len(CASES)


def test_frames_are_what_they_say() -> None:
    """The chain builders make what their names say, as the reference classifier reads them."""
    for pkt, upper in ((ah_chain(syn_out(SERVER6, 80), before=2), 6), (dst_opts(RA, 3), 58)):
        parsed = pktref.parse(raw(Ether() / pkt))
        assert raw(pkt)[6] == pktref.DSTOPTS and (parsed.refused, parsed.proto) == (None, upper), parsed
