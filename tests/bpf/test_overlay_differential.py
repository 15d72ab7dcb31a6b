"""Differential test of the underlay guard: the real overlay_from_underlay (BPF_PROG_TEST_RUN) and
a model built on the reference classifier tests/bpf/pktref.py (written from the RFCs, independent
of flow.h) must agree, frame by frame, on generated outer frames: the counted reason, the verdict,
and whether the hosted VNI counted the frame.

    generator (seeded) ──frame──> overlay_from_underlay     ──> counter reason, VNI counter
                  └─────────────> pktref + the model here   ──> expected reason, accepted

Generated: IPv4 (with options) and IPv6 (with extension-header chains up to and past the bound)
outer headers from registered, unregistered and other peers, to the VTEP address, the subnet
broadcast, broadcast and multicast groups and addresses elsewhere; fragments (first, later,
atomic); UDP, TCP and ICMP; ports 4789 on either side; VXLAN headers whole, cut, with any flag
or reserved bit, VNIs hosted, not hosted and 0; UDP lengths short and long; truncations; tags.
On failure the seed is printed; NLAB_DIFF_SEED=N replays it, NLAB_DIFF_FRAMES=N sizes the run.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING

import pytest

from dataplane import testrun
from dataplane.abi import IPV6_MAX_EXT, Direction, Reason
from dataplane.overlay import PROGRAM, local_addresses
from tests.bpf import pktref
from tests.bpf.conftest import PORT, Counters
from tests.bpf.test_overlay_programs import hosting

if TYPE_CHECKING:
    from dataplane.overlay import Overlay
    from dataplane.switch import SwitchDataplane

FRAMES = int(os.environ.get("NLAB_DIFF_FRAMES", "3000"))
LOCAL = ("10.255.2.11/24", "fd00:2::11")
PEERS = ("10.255.2.12", "fd00:2::12")
SOURCES = {4: ("10.255.2.12", "10.255.2.66", "10.255.3.12"), 6: ("fd00:2::12", "fd00:2::66", "fd00:3::12")}
DESTINATIONS = {
    4: ("10.255.2.11", "10.255.2.11", "10.255.2.255", "255.255.255.255", "239.1.2.3", "10.255.2.99"),
    6: ("fd00:2::11", "fd00:2::11", "ff02::1", "fd00:2::99"),
}
HOSTED, NOT_HOSTED = 20010, 20020
MACS = bytes.fromhex("02000aff020b" + "02000aff020c")
TO_HOST = local_addresses(LOCAL)


# -- the model: what the guard must do with what pktref parsed ------------------------------------
def to_host(family: int, dst: bytes) -> bool:
    address = ip_address(dst)
    if address in TO_HOST:
        return True
    if family == 6:
        return address.is_multicast
    return address.is_multicast or address == IPv4Address("255.255.255.255")


def expect(frame: bytes) -> tuple[Reason, bool]:
    """The reason the guard must count and whether it accepts the frame on the hosted VNI."""
    ethertype = frame[12:14]
    if ethertype in (b"\x81\x00", b"\x88\xa8"):  # test-run: tags are in the bytes
        return (
            Reason.QINQ
            if ethertype == b"\x88\xa8" or frame[16:18] in (b"\x81\x00", b"\x88\xa8")
            else Reason.TAGGED_ON_ACCESS
        ), False
    ip = frame[14:]
    if ethertype == b"\x08\x00":
        p, family = pktref._ipv4(ip), 4
        dst = ip[16:20] if p.refused is None else None  # the guard learns it only from a valid header
    elif ethertype == b"\x86\xdd":
        p, family = pktref._ipv6(ip), 6
        dst = ip[24:40]  # read before any check of the header
    else:
        return Reason.PASS, False
    if dst is None or not to_host(family, dst):
        return Reason.PASS, False
    if p.refused is not None:
        return p.refused, False
    if p.frag != pktref.NONE:
        return Reason.VXLAN_FRAGMENT, False
    if p.proto != 17:
        return Reason.PASS, False
    if len(p.l4) < 8:
        return Reason.L3_MALFORMED, False
    if int.from_bytes(p.l4[2:4], "big") != 4789:
        return Reason.PASS, False
    if str(ip_address(p.src)) not in PEERS:
        return Reason.VXLAN_UNKNOWN_VTEP, False
    ulen = int.from_bytes(p.l4[4:6], "big")
    if len(p.l4) < 16 or not 16 <= ulen <= len(p.l4):
        return Reason.VXLAN_MALFORMED, False
    flags, word = struct.unpack("!II", p.l4[8:16])
    if flags != 0x08000000 or word & 0xFF:
        return Reason.VXLAN_MALFORMED, False
    return (Reason.PASS, True) if word >> 8 == HOSTED else (Reason.VXLAN_UNKNOWN_VNI, False)


# -- the generator -------------------------------------------------------------------------------
def udp(rnd: random.Random) -> bytes:
    """A UDP datagram: mostly VXLAN to 4789, with every field sometimes wrong."""
    sport, dport = rnd.choice(((50000, 4789),) * 6 + ((4789, 4789), (4789, 53), (50000, 4790)))
    flags = rnd.choice((0x08000000,) * 6 + (0, 0x88000000, 0x08000001, 0x0C000000))
    vni = rnd.choice((HOSTED,) * 5 + (NOT_HOSTED, 0, 0xFFFFFF))
    low = rnd.choice((0,) * 8 + (1, 0xFF))
    vxlan = struct.pack("!II", flags, vni << 8 | low)[: rnd.choice((8,) * 8 + (0, 4, 7))]
    body = vxlan + bytes(rnd.choice((14, 0, 50)))
    ulen = 8 + len(body) + rnd.choice((0,) * 8 + (-1, 1, -len(body)))
    return struct.pack("!HHHH", sport, dport, ulen & 0xFFFF, 0) + body


def upper(rnd: random.Random, family: int) -> tuple[int, bytes]:
    kind = rnd.choice(("udp",) * 6 + ("tcp", "icmp", "short-udp"))
    if kind == "udp":
        return 17, udp(rnd)
    if kind == "short-udp":
        return 17, struct.pack("!HH", 50000, 4789)
    if kind == "tcp":
        return 6, struct.pack("!HHIIBBHHH", 40000, rnd.choice((179, 4789)), 1, 0, 0x50, 0x02, 512, 0, 0)
    return (58 if family == 6 else 1), struct.pack("!BBHHH", 128 if family == 6 else 8, 0, 0, 1, 1)


def ipv4(rnd: random.Random) -> bytes:
    proto, payload = upper(rnd, 4)
    options = b"\x01" * 4 * rnd.choice((0, 0, 0, 1, 2, 10))  # NOPs: the header grows to 60 bytes
    frag, ident = 0, rnd.randint(0, 0xFFFF)
    kind = rnd.choice(("none",) * 6 + ("first", "later", "last"))
    if kind != "none":
        frag = {"first": 0x2000, "later": 0x2000 | rnd.randint(1, 64), "last": rnd.randint(1, 64)}[kind]
    hlen = 20 + len(options)
    head = struct.pack("!BBHHHBBH", 0x40 | hlen // 4, 0, hlen + len(payload), ident, frag, 64, proto, 0)
    src, dst = rnd.choice(SOURCES[4]), rnd.choice(DESTINATIONS[4])
    return b"\x08\x00" + head + IPv4Address(src).packed + IPv4Address(dst).packed + options + payload


def ipv6(rnd: random.Random) -> bytes:
    proto, payload = upper(rnd, 6)
    length = rnd.choice((0, 0, 0, 1, 2, IPV6_MAX_EXT, IPV6_MAX_EXT + 1))
    kinds = [rnd.choice((pktref.DSTOPTS, pktref.ROUTING, pktref.AH)) for _ in range(length)]
    if kinds and rnd.random() < 0.4:
        kinds[0] = pktref.HOPOPTS
    if rnd.random() < 0.3:  # a fragment header somewhere in the chain
        kinds.insert(rnd.randint(0, len(kinds)), pktref.FRAGMENT)
    body = payload
    for i in reversed(range(len(kinds))):
        nxt = kinds[i + 1] if i + 1 < len(kinds) else proto
        if kinds[i] == pktref.FRAGMENT:
            offset = rnd.choice((0, 0, 8, 64))
            body = (
                struct.pack("!BBHI", nxt, 0, offset | rnd.choice((0, 1)), rnd.randint(0, 0xFFFFFFFF)) + body
            )
        elif kinds[i] == pktref.AH:
            body = bytes([nxt, 1]) + bytes(10) + body
        else:
            body = bytes([nxt, 0]) + b"\x01\x04\x00\x00\x00\x00" + body
    src, dst = rnd.choice(SOURCES[6]), rnd.choice(DESTINATIONS[6])
    head = struct.pack("!IHBB", 6 << 28, len(body), kinds[0] if kinds else proto, 64)
    return b"\x86\xdd" + head + IPv6Address(src).packed + IPv6Address(dst).packed + body


def generate(rnd: random.Random) -> bytes:
    frame = MACS + (ipv6(rnd) if rnd.random() < 0.4 else ipv4(rnd))
    v6 = frame[12:14] == b"\x86\xdd"
    head = 14 + (40 if v6 else 20)
    if rnd.random() < 0.1 and len(frame) > head + 1:  # cut short, lengths fixed up or left past the end
        frame = frame[: rnd.randint(head, len(frame) - 1)]
        if rnd.random() < 0.5:
            fixed = bytearray(frame)
            if v6:
                fixed[18:20] = struct.pack("!H", len(frame) - head)
            else:
                fixed[16:18] = struct.pack("!H", len(frame) - 14)
            frame = bytes(fixed)
    if rnd.random() < 0.05:  # tags on the untagged underlay
        tag = rnd.choice((b"\x81\x00\x00\x00", b"\x81\x00\x00\x0a", b"\x88\xa8\x00\x0a"))
        frame = frame[:12] + tag * rnd.choice((1, 2)) + frame[12:]
    return frame


# -- running -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guard(dataplane: SwitchDataplane) -> Iterator[Overlay]:
    with hosting(dataplane, LOCAL, PEERS, HOSTED) as overlay:
        yield overlay


def test_guard_agrees_with_the_reference(
    dataplane: SwitchDataplane, guard: Overlay, counters: Counters
) -> None:
    seed = int(os.environ.get("NLAB_DIFF_SEED", random.randrange(1 << 32)))
    rnd = random.Random(seed)
    program = dataplane.program(PROGRAM)
    seen: dict[Reason, int] = {}
    for i in range(FRAMES):
        frame = generate(rnd)
        want, accepted = expect(frame)
        before, vni_before = counters.snapshot(), guard.vnis()[HOSTED].packets
        result = testrun.run(program, frame, ifindex=PORT)
        delta = counters.delta(before)
        got = [Reason(r) for (d, r), (n, _) in delta.items() if d == Direction.INGRESS and n == 1]
        where = f"seed {seed}, frame {i}: {frame.hex()}"
        assert got == [want], f"{where}: counted {got}, expected {want.label}"
        assert result.passed == (want is Reason.PASS), where
        assert guard.vnis()[HOSTED].packets - vni_before == int(accepted), where
        seen[want] = seen.get(want, 0) + 1
    # the generator reached every decision (a run that never met one proves nothing about it)
    decisions = {Reason.PASS, Reason.VXLAN_UNKNOWN_VTEP, Reason.VXLAN_UNKNOWN_VNI, Reason.VXLAN_MALFORMED}
    decisions |= {Reason.VXLAN_FRAGMENT, Reason.IPV6_CHAIN, Reason.TAGGED_ON_ACCESS, Reason.QINQ}
    assert decisions <= set(seen), f"seed {seed}: never met {sorted(r.label for r in decisions - set(seen))}"
