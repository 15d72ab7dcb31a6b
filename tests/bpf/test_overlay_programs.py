"""The underlay guard on a table of frames an underlay attacker can send, each beside the
registered VTEP's twin that must pass, through BPF_PROG_TEST_RUN.

    peer VTEP 10.255.1.12 / fd00:255::12 ─┐
    rogue     10.255.1.66 / fd00:255::66 ─┴─ underlay ── overlay_from_underlay ──> this host
                                             (TC ingress of the pNIC, ifindex 1 here)
    this host: VTEP 10.255.1.11/24 (and its subnet broadcast), fd00:255::11; hosts VNI 10010

Each row runs the program once on one frame and checks the verdict, the exact counter delta of
the port (one frame, its reason, its length) and of the hosted VNI (accepted frames only).
"""

from __future__ import annotations

import contextlib
import secrets
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert
from scapy.layers.inet6 import ICMPv6ND_NS, IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw, raw

from dataplane import bpf, testrun
from dataplane.abi import Direction, Reason
from dataplane.overlay import PROGRAM, OverlayError
from tests.bpf.conftest import PORT, Counters
from tests.bpf.fwtools import fragment, with_ext_headers

if TYPE_CHECKING:
    from dataplane.overlay import Overlay
    from dataplane.switch import SwitchDataplane

LOCAL4, PEER4, ROGUE4, ELSEWHERE4 = "10.255.1.11", "10.255.1.12", "10.255.1.66", "10.255.1.99"
LOCAL6, PEER6, ROGUE6, ELSEWHERE6 = "fd00:255::11", "fd00:255::12", "fd00:255::66", "fd00:255::99"
SUBNET_BROADCAST = "10.255.1.255"
HOSTED, NOT_HOSTED = 10010, 10020
HOST_MAC, PEER_MAC = "02:00:0a:ff:01:0b", "02:00:0a:ff:01:0c"
INNER = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01") / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()
R = Reason
PIN_ROOT = Path("/sys/fs/bpf/netns-lab")


def vxlan_header(vni: int = HOSTED, flags: int = 0x08000000, low: int = 0) -> bytes:
    """RFC 7348: flags and 24 reserved bits, then VNI << 8 | 8 reserved bits."""
    return struct.pack("!II", flags, vni << 8 | low)


def outer(src: str, dst: str) -> Packet:
    return IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)


def vx(
    src: str = PEER4,
    dst: str = LOCAL4,
    vni: int = HOSTED,
    header: bytes | None = None,
    sport: int = 54321,
    dport: int = 4789,
    ulen: int | None = None,
) -> Packet:
    """A VXLAN datagram (without Ethernet): the inner frame behind `header` (default: a valid
    header for `vni`)."""
    body = (vxlan_header(vni) if header is None else header) + (
        raw(INNER) if header is None or len(header) == 8 else b""
    )
    return outer(src, dst) / UDP(sport=sport, dport=dport, len=ulen) / Raw(body)


def eth(pkt: Packet, dst: str = HOST_MAC) -> Packet:
    return Ether(dst=dst, src=PEER_MAC) / pkt


def with_ip_options(pkt: Packet) -> Packet:
    """The IPv4 datagram with 8 bytes of options (the UDP header moves by 8)."""
    ip = pkt[IP]
    return IP(src=ip.src, dst=ip.dst, options=[IPOption_Router_Alert(), IPOption_NOP()] * 2) / ip.payload


def tag(frame: Packet, *layers: Packet) -> Packet:
    """`frame` with VLAN tags inserted after its MAC addresses (outermost first)."""
    data = raw(frame)
    pkt: Packet = Ether(data[:14])
    pkt.type = 0x88A8 if isinstance(layers[0], Dot1AD) else 0x8100
    for i, layer in enumerate(layers):
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        layer.type = (
            int.from_bytes(data[12:14], "big")
            if nxt is None
            else (0x88A8 if isinstance(nxt, Dot1AD) else 0x8100)
        )
        pkt = pkt / layer
    return pkt / Raw(data[14:])


def vx_fragment(src: str, dst: str, lo: int, hi: int, more: bool, proto: int = 17) -> Packet:
    return fragment(src, dst, proto, raw(vx(src, dst)[UDP]), lo, hi, more)


@dataclass(frozen=True)
class Case:
    frame: Packet
    reason: Reason = R.PASS
    accepted: bool = False  # counted on the hosted VNI


def ok(frame: Packet) -> Case:
    """Passes as VXLAN accepted for the hosted VNI."""
    return Case(eth(frame), R.PASS, accepted=True)


def untouched(frame: Packet) -> Case:
    """Passes without being VXLAN to this host."""
    return Case(frame if isinstance(frame, Ether) else eth(frame), R.PASS)


def drop(frame: Packet, reason: Reason) -> Case:
    return Case(frame if isinstance(frame, Ether) else eth(frame), reason)


CASES: dict[str, Case] = {
    # the registered VTEP, hosted VNI: accepted, also behind IPv4 options and IPv6 extension headers
    "peer4": ok(vx()),
    "peer6": ok(vx(PEER6, LOCAL6)),
    "peer4-ip-options": ok(with_ip_options(vx())),
    "peer6-dstopts-hbh": ok(with_ext_headers(vx(PEER6, LOCAL6), "hbh", "dst", "dst")),
    "peer6-atomic-fragment": ok(
        IPv6(src=PEER6, dst=LOCAL6) / IPv6ExtHdrFragment(nh=17) / vx(PEER6, LOCAL6)[UDP]
    ),
    "peer4-subnet-broadcast": ok(vx(dst=SUBNET_BROADCAST)),
    # an unregistered underlay source, wherever the kernel's wildcard-bound vxlan socket listens
    "rogue4": drop(vx(ROGUE4), R.VXLAN_UNKNOWN_VTEP),
    "rogue6": drop(vx(ROGUE6, LOCAL6), R.VXLAN_UNKNOWN_VTEP),
    "rogue4-ip-options": drop(with_ip_options(vx(ROGUE4)), R.VXLAN_UNKNOWN_VTEP),
    "rogue6-dstopts": drop(with_ext_headers(vx(ROGUE6, LOCAL6), "dst", "dst"), R.VXLAN_UNKNOWN_VTEP),
    "rogue4-subnet-broadcast": drop(vx(ROGUE4, SUBNET_BROADCAST), R.VXLAN_UNKNOWN_VTEP),
    "rogue4-limited-broadcast": drop(vx(ROGUE4, "255.255.255.255"), R.VXLAN_UNKNOWN_VTEP),
    "rogue4-multicast": drop(vx(ROGUE4, "239.1.1.1"), R.VXLAN_UNKNOWN_VTEP),
    "rogue6-multicast": drop(vx(ROGUE6, "ff02::1"), R.VXLAN_UNKNOWN_VTEP),
    "rogue6-atomic-fragment": drop(
        IPv6(src=ROGUE6, dst=LOCAL6) / IPv6ExtHdrFragment(nh=17) / vx(ROGUE6, LOCAL6)[UDP],
        R.VXLAN_UNKNOWN_VTEP,
    ),
    "rogue4-both-ports-4789": drop(vx(ROGUE4, sport=4789), R.VXLAN_UNKNOWN_VTEP),
    # VNIs: only those hosted here; 0 is never hosted
    "peer4-vni-not-hosted": drop(vx(vni=NOT_HOSTED), R.VXLAN_UNKNOWN_VNI),
    "peer4-vni-0": drop(vx(vni=0), R.VXLAN_UNKNOWN_VNI),
    "peer4-vni-max": drop(vx(vni=0xFFFFFF), R.VXLAN_UNKNOWN_VNI),
    "peer4-ip-options-vni-not-hosted": drop(with_ip_options(vx(vni=NOT_HOSTED)), R.VXLAN_UNKNOWN_VNI),
    "peer6-dstopts-vni-not-hosted": drop(
        with_ext_headers(vx(PEER6, LOCAL6, NOT_HOSTED), "dst"), R.VXLAN_UNKNOWN_VNI
    ),
    # the header: whole, I flag set, every reserved bit clear
    "peer4-i-flag-clear": drop(vx(header=vxlan_header(flags=0)), R.VXLAN_MALFORMED),
    "peer4-reserved-flag": drop(vx(header=vxlan_header(flags=0x88000000)), R.VXLAN_MALFORMED),
    "peer4-gbp-flags": drop(vx(header=vxlan_header(flags=0x88000000 | 0x1234)), R.VXLAN_MALFORMED),
    "peer4-reserved-24": drop(vx(header=vxlan_header(flags=0x08000001)), R.VXLAN_MALFORMED),
    "peer4-reserved-low": drop(vx(header=vxlan_header(low=1)), R.VXLAN_MALFORMED),
    "peer4-header-cut": drop(vx(header=vxlan_header()[:4]), R.VXLAN_MALFORMED),
    "peer4-no-header": drop(vx(header=b""), R.VXLAN_MALFORMED),
    "peer4-udp-length-short": drop(vx(ulen=12), R.VXLAN_MALFORMED),
    "peer4-udp-length-long": drop(vx(ulen=8 + 8 + len(INNER) + 1), R.VXLAN_MALFORMED),
    "peer4-udp-header-cut": drop(
        IP(src=PEER4, dst=LOCAL4, proto=17) / Raw(b"\x12\xb5\x12\xb5"), R.L3_MALFORMED
    ),
    # outer fragments to this host: all of them, first, middle and last, from anyone, any protocol
    "peer4-first-fragment": drop(vx_fragment(PEER4, LOCAL4, 0, 32, more=True), R.VXLAN_FRAGMENT),
    "peer4-middle-fragment": drop(vx_fragment(PEER4, LOCAL4, 32, 64, more=True), R.VXLAN_FRAGMENT),
    "peer4-last-fragment": drop(vx_fragment(PEER4, LOCAL4, 64, 200, more=False), R.VXLAN_FRAGMENT),
    "rogue4-later-fragment": drop(vx_fragment(ROGUE4, LOCAL4, 32, 64, more=True), R.VXLAN_FRAGMENT),
    "peer4-whole-in-one-fragment": drop(vx_fragment(PEER4, LOCAL4, 0, 200, more=True), R.VXLAN_FRAGMENT),
    "peer4-tcp-fragment": drop(
        fragment(PEER4, LOCAL4, 6, raw(TCP(dport=179)), 0, 20, True), R.VXLAN_FRAGMENT
    ),
    "peer6-first-fragment": drop(vx_fragment(PEER6, LOCAL6, 0, 32, more=True), R.VXLAN_FRAGMENT),
    "peer6-last-fragment": drop(vx_fragment(PEER6, LOCAL6, 32, 200, more=False), R.VXLAN_FRAGMENT),
    "fragment-elsewhere": untouched(vx_fragment(ROGUE4, ELSEWHERE4, 32, 64, more=True)),
    # IPv6 chains the guard cannot follow to the upper layer, towards this host
    "rogue6-long-chain": drop(with_ext_headers(vx(ROGUE6, LOCAL6), *["dst"] * 9), R.IPV6_CHAIN),
    "rogue6-hbh-not-first": drop(with_ext_headers(vx(ROGUE6, LOCAL6), "dst", "hbh"), R.IPV6_CHAIN),
    "long-chain-elsewhere": untouched(with_ext_headers(vx(ROGUE6, ELSEWHERE6), *["dst"] * 9)),
    # tags on the untagged underlay: a priority tag would be stripped by the stack and delivered
    "peer4-priority-tagged": drop(tag(eth(vx()), Dot1Q(vlan=0)), R.TAGGED_ON_ACCESS),
    "rogue4-tagged": drop(tag(eth(vx(ROGUE4)), Dot1Q(vlan=10)), R.TAGGED_ON_ACCESS),
    "rogue4-two-priority-tags": drop(tag(eth(vx(ROGUE4)), Dot1Q(vlan=0), Dot1Q(vlan=0)), R.QINQ),
    "rogue4-8021ad": drop(tag(eth(vx(ROGUE4)), Dot1AD(vlan=10)), R.QINQ),
    # not VXLAN to this host: untouched
    "udp4789-elsewhere": untouched(vx(ROGUE4, ELSEWHERE4)),
    "udp4789-elsewhere6": untouched(vx(ROGUE6, ELSEWHERE6)),
    "rogue4-source-port-4789": untouched(vx(ROGUE4, sport=4789, dport=53)),
    "rogue4-tcp-4789": untouched(IP(src=ROGUE4, dst=LOCAL4) / TCP(dport=4789)),
    "bgp4": untouched(IP(src=ROGUE4, dst=LOCAL4) / TCP(sport=40000, dport=179, flags="S")),
    "bgp6": untouched(IPv6(src=ROGUE6, dst=LOCAL6) / TCP(sport=40000, dport=179, flags="S")),
    "icmp-echo": untouched(IP(src=ROGUE4, dst=LOCAL4) / ICMP()),
    "neighbour-solicitation": untouched(
        Ether(dst="33:33:ff:00:00:11", src=PEER_MAC)
        / IPv6(src=ROGUE6, dst="ff02::1:ff00:11", hlim=255)
        / ICMPv6ND_NS(tgt=LOCAL6)
    ),
    "arp": untouched(Ether(dst="ff:ff:ff:ff:ff:ff", src=PEER_MAC) / ARP(psrc=ROGUE4, pdst=LOCAL4)),
    # an IPv4 header the stack refuses itself (length past the frame): left to it
    "ipv4-length-past-frame": untouched(
        IP(src=ROGUE4, dst=LOCAL4, len=400) / UDP(dport=4789) / Raw(vxlan_header())
    ),
}


@contextlib.contextmanager
def hosting(
    dataplane: SwitchDataplane, local: Iterable[str], peers: Iterable[str], vni: int
) -> Iterator[Overlay]:
    """The session's dataplane as a VTEP host for the block; its tables are left empty after."""
    guard = dataplane.overlay
    guard.set_local(local)
    for peer in peers:
        guard.add_peer(peer)
    guard.add_vni(vni)
    try:
        yield guard
    finally:
        guard.set_local([])
        for peer in guard.peers():
            guard.remove_peer(peer)
        guard.remove_vni(vni)


@pytest.fixture(scope="module")
def overlay(dataplane: SwitchDataplane) -> Iterator[Overlay]:
    with hosting(dataplane, [f"{LOCAL4}/24", LOCAL6], [PEER4, PEER6], HOSTED) as guard:
        yield guard


def run(dataplane: SwitchDataplane, frame: bytes) -> testrun.Result:
    return testrun.run(dataplane.program(PROGRAM), frame, ifindex=PORT)


@pytest.mark.parametrize("name", CASES)
def test_guard(dataplane: SwitchDataplane, overlay: Overlay, counters: Counters, name: str) -> None:
    case = CASES[name]
    frame = raw(case.frame)
    before, vnis_before = counters.snapshot(), overlay.vnis()
    result = run(dataplane, frame)
    assert result.retval == (testrun.TC_ACT_OK if case.reason is R.PASS else testrun.TC_ACT_SHOT)
    assert counters.delta(before) == {(Direction.INGRESS, case.reason): (1, len(frame))}
    accepted = overlay.vnis()[HOSTED].packets - vnis_before[HOSTED].packets
    assert accepted == int(case.accepted)
    if result.passed:
        assert result.data == frame, "the guard only reads"


def test_peer_and_vni_changes_apply_at_once(dataplane: SwitchDataplane, overlay: Overlay) -> None:
    frame = raw(eth(vx(ROGUE4, vni=NOT_HOSTED)))
    assert run(dataplane, frame).dropped
    overlay.add_peer(ROGUE4)
    overlay.add_vni(NOT_HOSTED)
    try:
        assert run(dataplane, frame).passed
        assert (
            overlay.peers() == {ip_address(a) for a in (ROGUE4, PEER4, PEER6)}
            and overlay.vnis()[NOT_HOSTED].packets == 1
        )
        overlay.add_vni(NOT_HOSTED)  # again: keeps its counters
        assert overlay.vnis()[NOT_HOSTED].packets == 1
    finally:
        assert overlay.remove_peer(ROGUE4) and overlay.remove_vni(NOT_HOSTED)
    assert not overlay.remove_peer(ROGUE4)
    assert run(dataplane, frame).dropped


def test_counters_by_reason_and_vni(dataplane: SwitchDataplane, overlay: Overlay) -> None:
    before = overlay.counters(PORT)
    for frame in (eth(vx()), eth(vx()), eth(vx(ROGUE4))):
        run(dataplane, raw(frame))
    after = overlay.counters(PORT)
    assert after.reasons[R.PASS] - before.reasons.get(R.PASS, 0) == 2
    assert after.reasons[R.VXLAN_UNKNOWN_VTEP] - before.reasons.get(R.VXLAN_UNKNOWN_VTEP, 0) == 1
    assert after.vnis[HOSTED].packets - before.vnis[HOSTED].packets == 2


def test_guard_is_loaded_and_pinned_only_where_first_used(dataplane: SwitchDataplane) -> None:
    from dataplane.switch import SwitchDataplane

    dataplane.program(PROGRAM)  # a template with the guard loaded still makes instances without it
    pins = PIN_ROOT / f"tovl{secrets.token_hex(3)}"
    instance = SwitchDataplane.load(pins, like=dataplane)
    try:
        assert PROGRAM not in instance.programs and not (pins / f"prog_{PROGRAM}").exists()
        with SwitchDataplane.open(pins) as reopened, pytest.raises(bpf.LoadError, match="not loaded"):
            reopened.program(PROGRAM)
        guard = instance.overlay
        guard.set_local([LOCAL4])
        guard.add_peer(PEER4)
        guard.add_vni(HOSTED)
        fd = instance.program(PROGRAM)
        assert instance.program(PROGRAM) == fd and (pins / f"prog_{PROGRAM}").exists()
        assert testrun.run(fd, raw(eth(vx())), ifindex=PORT).passed  # on the instance's own maps
        assert guard.vnis()[HOSTED].packets == 1
        with SwitchDataplane.open(pins) as reopened:
            assert PROGRAM in reopened.programs
    finally:
        instance.close()
        bpf.unpin(pins)


@pytest.mark.parametrize("vni", [0, 0x1000000, -1])
def test_vni_out_of_range(overlay: Overlay, vni: int) -> None:
    with pytest.raises(OverlayError, match=f"VNI {vni} is not in 1..16777215"):
        overlay.add_vni(vni)
