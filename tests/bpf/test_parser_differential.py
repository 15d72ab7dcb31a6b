"""Differential test of the parser: the real port_to_vm / port_from_vm (BPF_PROG_TEST_RUN) and the
reference classifier tests/bpf/pktref.py must agree, frame by frame, on generated frames.

    generator (seeded) ──frame──> port_to_vm (firewall, policy below) ──> counter reason + events
                  └─────────────> pktref.parse + the model here        ──> expected reason + events

The program does not expose what it parsed, so the policy makes its verdict show it: deny rules
for one port or type of each protocol (tcp 80: rule 41, udp 53: 42, icmp echo: 43, icmpv6 echo:
44) and an allow rule for anything else (50). Every classified packet then leaves one event
naming the deciding rule with the protocol and ports the policy saw; refused ones leave their
reason (ipv6-chain, frag-tiny, l3-malformed, ...). Both ways: from the VM (port_from_vm, port
security on: router advertisements and redirects refused on their real upper layer; the same rules
with ids + 100) and to it (port_to_vm). Generated: random extension-header chains of
every length up to and past the bound, fragments of IPv4 and IPv6 datagrams in every order,
tunnels (IPv6 in IPv4, IPv4 in IPv6), ICMP in the wrong IP version, VLAN tags, truncations.
On failure the seed is printed; NLAB_DIFF_SEED=N replays it, NLAB_DIFF_FRAMES=N sizes the run.
"""

from __future__ import annotations

import os
import random
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from dataplane import testrun
from dataplane.abi import IPV6_MAX_EXT, FwDirection, Reason, Verdict
from dataplane.fwpolicy import AnyPeer, Endpoint, Policy, Rule
from tests.bpf import pktref
from tests.bpf.fwcases import REPORTED
from tests.bpf.fwtools import COUNTED, GW_MAC, IN, OUT, VM4, VM6, VM_MAC, Harness, address, forget, harness_on

if TYPE_CHECKING:
    from collections.abc import Iterator

    from dataplane.switch import SwitchDataplane

FRAMES = int(os.environ.get("NLAB_DIFF_FRAMES", "3000"))
PEERS4 = ("198.51.100.7", "203.0.113.9")
PEERS6 = ("2001:db8:99::7", "2001:db8:77::9")
DENY = {(6, None, 80): 41, (17, None, 53): 42, (1, 4, 8): 43, (58, 6, 128): 44}
ALLOW_RULE = 50


OUT_RULES = 100  # the same rules for packets from the VM: ids + 100


def _rules(direction: str) -> tuple[Rule, ...]:
    base = OUT_RULES if direction == OUT else 0
    kinds = [(41, "tcp", (80, 80)), (42, "udp", (53, 53)), (43, "icmp", (8, 8)), (44, "icmpv6", (128, 128))]
    rules = [
        Rule(base + rid, {1}, direction, AnyPeer(), proto, ports, "deny", 0) for rid, proto, ports in kinds
    ]
    return (*rules, Rule(base + ALLOW_RULE, {1}, direction, AnyPeer(), "any", None, "allow", 9))


POLICY = Policy((Endpoint(1, (VM4, VM6), {"app"}),), (*_rules(IN), *_rules(OUT)))


@dataclass(frozen=True)
class Seen:
    """What one run showed: the counted reason and the events (verdict, reason, rule, proto, ports)."""

    reason: Reason
    events: tuple[tuple[int, int, int, int, int, int], ...]


# -- the model: what the firewall must do with what pktref parsed ---------------------------------
ICMP_ERRORS = {4: {3, 4, 5, 11, 12}, 6: {1, 2, 3, 4}}
ICMP_REPLIES = {4: {0, 14, 16, 18}, 6: {129}}
ND_LINK = set(range(130, 137)) | {143}


@dataclass
class Model:
    """Reassembly state per datagram, as the program keeps it: None, "pending" or (verdict, end)."""

    frags: dict[tuple, object] = field(default_factory=dict)

    def expect(self, frame: bytes, direction: str) -> Seen:
        p = pktref.parse(frame)
        base = OUT_RULES if direction == OUT else 0
        if p.refused is None and direction == OUT and p.frag != pktref.LATER and _router_role(p):
            return Seen(Reason.ROUTER_ADVERT, ((0, Reason.ROUTER_ADVERT, 0, p.proto, p.sport, p.dport),))
        if p.refused is not None:
            ev = (0, p.refused, 0, 0, 0, 0) if p.refused in REPORTED else None
            if ev and p.refused is Reason.FRAG_TINY:
                ev = (0, p.refused, 0, p.proto, 0, 0)
            return Seen(p.refused, (ev,) if ev else ())
        key = (p.src, p.dst, p.frag_id, p.proto if p.family == 4 else 0)
        if p.frag == pktref.LATER:
            return self._later(p, key)
        if p.frag == pktref.FIRST and self.frags.get(key) == "pending":
            return Seen(Reason.FRAG_REORDERED, ((0, Reason.FRAG_REORDERED, 0, p.proto, p.sport, p.dport),))
        reason, events = self._flow(p, base)
        if p.frag != pktref.FIRST:
            return Seen(reason, events)
        if key in self.frags:  # a duplicate first fragment
            if reason is Reason.PASS:
                dup = (0, Reason.FRAG_DUP, base + ALLOW_RULE, p.proto, p.sport, p.dport)
                return Seen(Reason.FRAG_DUP, (*events, dup))
            return Seen(reason, events)
        self.frags[key] = (reason is Reason.PASS, p.frag_off + p.frag_len)
        return Seen(reason, events)

    def _later(self, p: pktref.Parsed, key: tuple) -> Seen:
        state = self.frags.get(key)

        def drop(reason: Reason) -> Seen:
            return Seen(reason, ((0, reason, 0, p.proto, 0, 0),))

        if state is None:
            self.frags[key] = "pending"
            return drop(Reason.FRAG_ORPHAN)
        if state == "pending":
            return drop(Reason.FRAG_ORPHAN)
        allowed, end = state  # type: ignore[misc]
        if p.frag_off < end or (p.proto == 6 and p.frag_off == 8):
            return drop(Reason.FRAG_OVERLAP)
        if p.frag_more:
            self.frags[key] = (allowed, p.frag_off + p.frag_len)
        else:
            del self.frags[key]
        return Seen(Reason.PASS, ()) if allowed else drop(Reason.POLICY)

    @staticmethod
    def _flow(p: pktref.Parsed, base: int) -> tuple[Reason, tuple]:
        icmp = pktref.is_icmp(p.family, p.proto)
        t = p.icmp_type
        if icmp and p.family == 6 and t in ND_LINK and p.frag == pktref.NONE:
            return Reason.PASS, ()
        if icmp and t in ICMP_ERRORS[p.family]:
            return Reason.ICMP_UNRELATED, ((0, Reason.ICMP_UNRELATED, 0, p.proto, p.sport, p.dport),)
        if icmp and t in ICMP_REPLIES[p.family]:
            return Reason.CT_INVALID, ((0, Reason.CT_INVALID, 0, p.proto, p.sport, p.dport),)
        port = t if icmp else p.dport if p.proto in (6, 17) else None
        rule = DENY.get((p.proto, p.family if icmp else None, port))
        if rule is not None:
            return Reason.POLICY, ((0, Reason.POLICY, base + rule, p.proto, p.sport, p.dport),)
        return Reason.PASS, ((1, Reason.PASS, base + ALLOW_RULE, p.proto, p.sport, p.dport),)


def _router_role(p: pktref.Parsed) -> bool:
    """Port security: an RA, or a redirect from a VM that does not forward (the VM here does not)."""
    if not pktref.is_icmp(p.family, p.proto):
        return False
    return p.icmp_type in ((134, 137) if p.family == 6 else (5,))


# -- the generator -------------------------------------------------------------------------------
def _ext(rnd: random.Random, kind: int, nxt: int) -> bytes:
    if kind == pktref.AH:
        n = rnd.randint(1, 4)
        return bytes([nxt, n]) + bytes((n + 2) * 4 - 2)
    n = rnd.randint(0, 2)
    return bytes([nxt, n]) + bytes([1, (n + 1) * 8 - 4]) + bytes((n + 1) * 8 - 4)  # a PadN option


def _upper(rnd: random.Random, family: int, direction: str) -> tuple[int, bytes]:
    """An upper-layer protocol and its bytes: TCP SYN, UDP, ICMP of either version, tunnels, ...
    From the VM, none that port security reads further (ND, DHCP): test_portsec_programs.py."""
    kind = rnd.choice(("tcp", "udp", "icmp", "icmp", "cross", "tunnel", "esp", "none", "other"))
    data = bytes(rnd.randint(0, 24))
    if kind == "tcp":
        dport = rnd.choice((80, 80, 443, rnd.randint(1, 65535)))
        syn = struct.pack("!HHIIBBHHH", rnd.randint(1024, 65535), dport, 1, 0, 0x50, 0x02, 512, 0, 0)
        return 6, syn + data
    if kind == "udp":
        dport = rnd.choice((53, 53, 5353, rnd.randint(1, 65535)))
        dport = 9 if direction == OUT and dport in (67, 68, 546, 547) else dport
        return 17, struct.pack("!HHHH", rnd.randint(1024, 65535), dport, 8 + len(data), 0) + data
    icmp_proto = 58 if family == 6 else 1
    if kind == "cross":  # ICMP of the other IP version
        icmp_proto = 1 if family == 6 else 58
    if kind in ("icmp", "cross"):
        types = (8, 128, 0, 129, 13, 9, 200, 3, 1, 5, 134, 137, 143) + ((135, 136) if direction == IN else ())
        return icmp_proto, struct.pack("!BBHHH", rnd.choice(types), 0, 0, rnd.randint(0, 65535), 1) + data
    if kind == "tunnel":  # IPv4 in IPv6 (4) or IPv6 in IPv4 (41)
        if family == 6:
            return 4, bytes([0x45]) + bytes(19) + data
        return 41, bytes([0x60]) + bytes(39) + data
    return {"esp": 50, "none": 59, "other": rnd.choice((47, 132, 200))}[kind], data


def _chain(rnd: random.Random) -> list[int]:
    length = rnd.choice((0, 1, 2, rnd.randint(0, IPV6_MAX_EXT + 2), IPV6_MAX_EXT, IPV6_MAX_EXT + 1))
    kinds = [rnd.choice((pktref.DSTOPTS, pktref.DSTOPTS, pktref.ROUTING, pktref.AH)) for _ in range(length)]
    if kinds and rnd.random() < 0.5:
        kinds[0] = pktref.HOPOPTS
    if kinds and rnd.random() < 0.1:
        kinds[rnd.randrange(len(kinds))] = rnd.choice((pktref.HOPOPTS, 140, 253))
    return kinds


def _ipv6(src: str, dst: str, nxt: int, payload: bytes) -> bytes:
    from ipaddress import IPv6Address

    head = struct.pack("!IHBB", 6 << 28, len(payload), nxt, 64)
    return head + IPv6Address(src).packed + IPv6Address(dst).packed + payload


def _ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 1, frag: int = 0) -> bytes:
    from ipaddress import IPv4Address

    head = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0)
    return head + IPv4Address(src).packed + IPv4Address(dst).packed + payload


def _eth(ip: bytes, v6: bool, direction: str) -> bytes:
    pair = (GW_MAC, VM_MAC) if direction == OUT else (VM_MAC, GW_MAC)  # (dst, src)
    macs = bytes.fromhex("".join(pair).replace(":", ""))
    return macs + (b"\x86\xdd" if v6 else b"\x08\x00") + ip


def _ends(rnd: random.Random, v6: bool, direction: str) -> tuple[str, str]:
    peer, vm = rnd.choice(PEERS6 if v6 else PEERS4), VM6 if v6 else VM4
    return (vm, peer) if direction == OUT else (peer, vm)


def chained_v6(rnd: random.Random, direction: str) -> bytes:
    kinds = _chain(rnd)
    proto, upper = _upper(rnd, 6, direction)
    body = upper
    for i in reversed(range(len(kinds))):
        nxt = kinds[i + 1] if i + 1 < len(kinds) else proto
        body = _ext(rnd, kinds[i], nxt) + body
    src, dst = _ends(rnd, True, direction)
    return _eth(_ipv6(src, dst, kinds[0] if kinds else proto, body), True, direction)


def fragmented(rnd: random.Random, direction: str) -> list[bytes]:
    """The fragments of one datagram (IPv4 or IPv6, the v6 one with headers on both sides of its
    fragment header), in a random order, sometimes one twice."""
    v6 = rnd.random() < 0.5
    proto, upper = _upper(rnd, 6 if v6 else 4, direction)
    upper += bytes(rnd.randint(8, 48))
    ident = rnd.randint(0, 0xFFFFFFFF if v6 else 0xFFFF)
    fragmentable, first_nh = upper, proto
    if v6 and rnd.random() < 0.5:
        fragmentable, first_nh = _ext(rnd, pktref.DSTOPTS, proto) + upper, pktref.DSTOPTS
    pieces = min(rnd.randint(1, 3), (len(fragmentable) - 1) // 8)
    cuts = sorted(rnd.sample(range(8, len(fragmentable), 8), k=pieces))
    bounds = list(zip([0, *cuts], [*cuts, len(fragmentable)], strict=True))
    src, dst = _ends(rnd, v6, direction)
    frames = []
    for lo, hi in bounds:
        more = hi < len(fragmentable)
        if v6:
            fh = struct.pack("!BBHI", first_nh, 0, lo | int(more), ident)
            unfrag = _ext(rnd, pktref.HOPOPTS, pktref.FRAGMENT) if rnd.random() < 0.3 else b""
            nh = pktref.HOPOPTS if unfrag else pktref.FRAGMENT
            frames.append(_eth(_ipv6(src, dst, nh, unfrag + fh + fragmentable[lo:hi]), True, direction))
        else:
            flags = (lo // 8) | (0x2000 if more else 0)
            frames.append(_eth(_ipv4(src, dst, proto, fragmentable[lo:hi], ident, flags), False, direction))
    rnd.shuffle(frames)
    if rnd.random() < 0.2:
        frames.insert(rnd.randrange(len(frames) + 1), rnd.choice(frames))
    return frames


def truncated(rnd: random.Random, frame: bytes) -> bytes:
    """`frame` cut short: its IP length fields set to the cut (a chain or header cut off) or left
    as they were (a length past the frame)."""
    v6 = frame[12:14] == b"\x86\xdd"
    head = 14 + (40 if v6 else 20)
    if len(frame) <= head + 1:
        return frame
    cut = bytearray(frame[: rnd.randint(head, len(frame) - 1)])
    if rnd.random() < 0.7:
        if v6:
            cut[18:20] = struct.pack("!H", len(cut) - head)
        else:
            cut[16:18] = struct.pack("!H", len(cut) - 14)
    return bytes(cut)


def generate(rnd: random.Random) -> list[tuple[str, bytes]]:
    """One scenario: one or more (direction, frame)."""
    pick, direction = rnd.random(), rnd.choice((IN, OUT))
    if pick < 0.45:
        frame = chained_v6(rnd, direction)
    elif pick < 0.7:
        return [(direction, f) for f in fragmented(rnd, direction)]
    else:
        proto, upper = _upper(rnd, 4, direction)
        src, dst = _ends(rnd, False, direction)
        frame = _eth(_ipv4(src, dst, proto, upper), False, direction)
    if rnd.random() < 0.15:
        frame = truncated(rnd, frame)
    if rnd.random() < 0.05:  # a tag of its own
        tagged = frame[:12] + b"\x81\x00\x00\x0a" + frame[12:]
        return [(direction, tagged)]
    return [(direction, frame)]


# -- running -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def harness(dataplane: SwitchDataplane) -> Iterator[Harness]:
    with harness_on(dataplane) as h:
        h.start(POLICY)
        yield h


def observe(harness: Harness, direction: str, frame: bytes) -> Seen:
    sent = harness.send(direction, frame)
    (reason,) = [r for (_, r), (n, _) in sent.counted.items() if n == 1] or [-1]
    assert len(sent.counted) == 1 and next(iter(sent.counted))[0] == COUNTED[direction], sent.counted
    events = []
    for ev in sent.events:
        vm = address(ev.family, ev.daddr if direction == IN else ev.saddr)
        assert ev.direction == FwDirection[direction.upper()] and vm in (VM4, VM6, "::")
        events.append((ev.verdict, ev.reason, ev.rule, ev.proto, ev.sport, ev.dport))
    if any(ev[0] == Verdict.ALLOW for ev in events):
        forget(harness.dp, 1)  # a new flow each time: no connection state between frames
    want_code = testrun.TC_ACT_OK if reason == Reason.PASS else testrun.TC_ACT_SHOT
    assert sent.result.retval == want_code
    return Seen(Reason(reason), tuple(events))


def expected(model: Model, direction: str, frame: bytes) -> Seen:
    if frame[12:14] == b"\x81\x00":  # from the VM: refused; to it: a second tag under the port's
        return Seen(Reason.TAGGED_ON_ACCESS if direction == OUT else Reason.QINQ, ())
    return model.expect(frame, direction)


def test_parser_agrees_with_the_reference(harness: Harness) -> None:
    seed = int(os.environ.get("NLAB_DIFF_SEED", random.randrange(1 << 32)))
    rnd, model, sent, reasons = random.Random(seed), Model(), 0, set()
    while sent < FRAMES:
        for direction, frame in generate(rnd):
            want = expected(model, direction, frame)
            got = observe(harness, direction, frame)
            sent += 1
            reasons.add(got.reason)
            assert got == want, (
                f"seed {seed} (NLAB_DIFF_SEED={seed} replays it), frame {sent}, {direction} "
                f"{frame.hex()}:\n  program   {got}\n  reference {want}"
            )
    # the generator reaches every class it is meant to
    assert {
        Reason.PASS,
        Reason.POLICY,
        Reason.IPV6_CHAIN,
        Reason.FRAG_ORPHAN,
        Reason.ROUTER_ADVERT,
    } <= reasons
