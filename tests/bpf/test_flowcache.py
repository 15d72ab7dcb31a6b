"""The per-CPU flow cache (ebpf/include/flowcache.h) never changes what the firewall decides or
counts: random sequences of TCP and UDP packets both ways, with policy changes, forgotten
connections and expiry in between, against a reference model of the stateful firewall whose
policy verdicts are `fwpolicy.evaluate`'s.

    packets (bursts of 1-3 copies, back to back: a copy after the first rides the cache when it
    runs in the same clock tick on the same CPU) ──> port_from_vm / port_to_vm
    the same packets ──> Model (connection table of dicts + fwpolicy.evaluate)

Every run's verdict, and per step the port counters by reason, the rule hits and the events,
must equal the model's. The process is pinned to one CPU while it runs, so that the per-CPU
slots it fills are the ones its next packets find. The deterministic cases check each way a
cached flow must stop passing (a forgotten connection, an entry rewritten by user space, a
policy that denies it) right after a run that filled its slot.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dataplane import abi, fwpolicy, syscalls, testrun
from dataplane.abi import Reason, Verdict
from dataplane.events import now_ns
from dataplane.firewall import Settings
from dataplane.fwpolicy import Cidr, Endpoint, Policy, Rule, evaluate
from tests.bpf.fwtools import (
    COUNTED,
    ENDPOINT,
    IN,
    OUT,
    PORT,
    PROGRAM,
    VM4,
    Harness,
    age,
    framed,
    harness_on,
    tagged,
    tcp,
    udp,
)

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

PEERS = ("10.20.0.1", "10.20.0.2", "10.30.0.1")
NETS = ("10.20.0.0/24", "10.20.0.2/32", "10.30.0.0/16")
SERVICE_PORTS = (80, 443, 53)
VM_PORTS = (40000, 40001)
TCP_FLAGS = ("S", "SA", "A", "A", "A", "PA", "PA", "FA", "R")
RULE_IDS = range(1, 7)
HOUR = 3600
SETTINGS = Settings(
    tcp_timeout=HOUR, tcp_open_timeout=HOUR, udp_timeout=HOUR, tcp_close_timeout=HOUR, icmp_timeout=HOUR
)
AGE_S = 2 * HOUR  # past every timeout of SETTINGS
TCP_F = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}


@dataclass(frozen=True)
class Packet:
    direction: str
    proto: int  # 6 or 17
    peer: str
    vm_port: int
    peer_port: int
    flags: str = ""

    def tuple(self) -> tuple[str, int, str, int, int]:
        if self.direction == OUT:
            return (VM4, self.vm_port, self.peer, self.peer_port, self.proto)
        return (self.peer, self.peer_port, VM4, self.vm_port, self.proto)

    def frame(self, vlan: int | None) -> bytes:
        src, sport, dst, dport, _ = self.tuple()
        pkt = tcp(src, dst, sport, dport, self.flags) if self.proto == 6 else udp(src, dst, sport, dport)
        frame = framed(self.direction, pkt)
        return tagged(frame, vlan) if self.direction == IN and vlan else frame


@dataclass
class Conn:
    origin: str
    state: abi.CtState
    generation: int


@dataclass
class Outcome:
    passed: bool
    reason: Reason
    hit: int | None = None  # the rule counted (0: the default), None: none
    event: tuple[Verdict, Reason] | None = None


@dataclass
class Model:
    """The firewall of one vNIC as the specification says, for TCP and UDP without fragments."""

    policy: Policy
    generation: int = 0
    conns: dict[tuple, Conn] = field(default_factory=dict)

    def flow_of(self, p: Packet | None) -> tuple | None:
        """The key of the connection `p` rides, if any."""
        if p is None:
            return None
        src, sport, dst, dport, proto = key = p.tuple()
        return next((k for k in (key, (dst, dport, src, sport, proto)) if k in self.conns), None)

    def send(self, p: Packet) -> Outcome:
        src, sport, dst, dport, proto = key = p.tuple()
        reverse = (dst, dport, src, sport, proto)
        reply = key not in self.conns and reverse in self.conns
        found = reverse if reply else key
        conn = self.conns.get(found)
        flags = sum(TCP_F[f] for f in p.flags)
        if conn is not None:
            if conn.generation != self.generation:
                o_src, _, o_dst, o_dport, _ = found
                peer = o_dst if conn.origin == OUT else o_src
                v = evaluate(self.policy, ENDPOINT, conn.origin, peer, proto, o_dport)
                if not v.allowed:
                    del self.conns[found]
                    return Outcome(False, Reason.POLICY, v.rule_id or 0, (Verdict.DENY, Reason.POLICY))
                conn.generation = self.generation
            if proto == 6:
                if flags & (TCP_F["R"] | TCP_F["F"]):
                    conn.state = abi.CtState.CLOSING
                elif reply and conn.state == abi.CtState.NEW and flags & TCP_F["A"]:
                    conn.state = abi.CtState.ESTABLISHED
            elif reply:
                conn.state = abi.CtState.ESTABLISHED
            return Outcome(True, Reason.PASS)
        if proto == 6 and flags & (TCP_F["S"] | TCP_F["A"] | TCP_F["F"] | TCP_F["R"]) != TCP_F["S"]:
            return Outcome(False, Reason.CT_INVALID, None, (Verdict.DENY, Reason.CT_INVALID))
        v = evaluate(self.policy, ENDPOINT, p.direction, p.peer, proto, dport)
        if not v.allowed:
            return Outcome(False, Reason.POLICY, v.rule_id or 0, (Verdict.DENY, Reason.POLICY))
        self.conns[key] = Conn(p.direction, abi.CtState.NEW, self.generation)
        return Outcome(True, Reason.PASS, v.rule_id or 0, (Verdict.ALLOW, Reason.PASS))


@st.composite
def small_policies(draw: st.DrawFn) -> Policy:
    rules = []
    for rid in draw(st.lists(st.sampled_from(RULE_IDS), min_size=1, max_size=5, unique=True)):
        proto = draw(st.sampled_from(("tcp", "udp", "any")))
        rules.append(
            Rule(
                rid,
                frozenset({ENDPOINT}),
                draw(st.sampled_from((IN, OUT))),
                Cidr(draw(st.sampled_from(NETS))),
                proto,
                None if proto == "any" else draw(st.sampled_from((None, (80, 80), (53, 443)))),
                draw(st.sampled_from(("allow", "allow", "deny"))),
                draw(st.integers(0, 2)),
            )
        )
    default = {ENDPOINT: {d: draw(st.sampled_from(("allow", "deny"))) for d in (IN, OUT)}}
    return Policy((Endpoint(ENDPOINT, (VM4,)),), tuple(rules), default)


packets = st.builds(
    Packet,
    st.sampled_from((IN, OUT)),
    st.sampled_from((6, 17)),
    st.sampled_from(PEERS),
    st.sampled_from(VM_PORTS),
    st.sampled_from(SERVICE_PORTS),
    st.sampled_from(TCP_FLAGS),
)
steps = st.one_of(
    st.tuples(st.just("send"), packets, st.integers(1, 3)),
    st.tuples(st.just("send"), packets, st.integers(1, 3)),
    st.tuples(st.just("send"), packets, st.integers(1, 3)),
    # the last packet again (the slot it filled), or its flow with other TCP flags (the same slot)
    st.tuples(st.just("again"), st.integers(1, 3), st.none()),
    st.tuples(st.just("again"), st.integers(1, 3), st.sampled_from(TCP_FLAGS)),
    st.tuples(st.just("reply"), st.integers(1, 3), st.sampled_from(TCP_FLAGS)),  # the other way
    st.tuples(st.just("policy"), small_policies()),
    st.tuples(
        st.just("forget-last"),
    ),
    st.tuples(st.just("forget"), st.integers(0, 7)),
    st.tuples(st.just("age")),
)


@contextlib.contextmanager
def one_cpu() -> Iterator[None]:
    """This thread on one CPU meanwhile: runs fill and find the same per-CPU slots."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@pytest.fixture(scope="module")
def harness(dataplane: SwitchDataplane) -> Iterator[Harness]:
    with harness_on(dataplane) as h, one_cpu():
        yield h


def _ct_key(h: Harness, flow: tuple) -> abi.CtKey:
    [key] = [
        k for k, _ in syscalls.map_items(h.dp.maps["conntrack"], abi.CtKey, abi.CtEntry) if _flow(k) == flow
    ]
    return key


def _flow(k: abi.CtKey) -> tuple:
    import socket

    addr = lambda raw: socket.inet_ntop(socket.AF_INET, bytes(raw)[:4])  # noqa: E731
    return (addr(k.saddr), socket.ntohs(k.sport), addr(k.daddr), socket.ntohs(k.dport), k.proto)


def _run(h: Harness, model: Model, burst: list[Packet], change: Callable[[], None]) -> None:
    """`change` (the steps since the last burst), then the packets of `burst` back to back, as
    close after it as possible: the counters are read before it, and it changes none of them.
    Then their effects against the model's. (On this machine most bursts ran in the tick of
    their change, the change included, which is what makes a stale slot visible.)"""
    frames = [(p.frame(h.vlan), h.dp.programs[PROGRAM[p.direction]]) for p in burst]
    rules = [0, *RULE_IDS]
    h.drain()
    before, hits_before = h.counters.snapshot(), h.fw.rule_hits(rules)
    change()
    results = [testrun.run(prog, frame, ifindex=PORT) for frame, prog in frames]
    counted, events = h.counters.delta(before), h.drain()
    hits_after = h.fw.rule_hits(rules)
    want = [model.send(p) for p in burst]
    assert [r.passed for r in results] == [o.passed for o in want], (burst, want)
    by_reason: dict[tuple[int, int], tuple[int, int]] = {}
    for p, (frame, _), o in zip(burst, frames, want, strict=True):
        k = (COUNTED[p.direction], o.reason)
        n, b = by_reason.get(k, (0, 0))
        by_reason[k] = (n + 1, b + len(frame))
    assert counted == by_reason, (burst, want)
    hits = {r: hits_after[r][0] - hits_before[r][0] for r in rules}
    want_hits = {r: sum(o.hit == r for o in want) for r in rules}
    assert hits == want_hits, (burst, want)
    assert [(e.verdict, e.reason) for e in events] == [o.event for o in want if o.event], (burst, want)
    table = syscalls.map_items(h.dp.maps["conntrack"], abi.CtKey, abi.CtEntry)
    states = {_flow(k): e.state for k, e in table}
    assert {k: states.get(k) for k in model.conns} == {k: c.state for k, c in model.conns.items()}, burst


DENY_ALL = Policy((Endpoint(ENDPOINT, (VM4,)),), (), {ENDPOINT: {IN: "deny", OUT: "deny"}})
OPEN = Policy((Endpoint(ENDPOINT, (VM4,)),), (), {ENDPOINT: {IN: "allow", OUT: "allow"}})
HANDSHAKE = [
    ("send", Packet(OUT, 6, PEERS[0], 40000, 80, "S"), 1),
    ("reply", 1, "SA"),
    ("reply", 2, "A"),
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(first=OPEN, script=[*HANDSHAKE, ("again", 1, "FA"), ("reply", 1, "A")])
@example(first=OPEN, script=[*HANDSHAKE, ("forget-last",), ("again", 2, None)])
@example(
    first=OPEN, script=[*HANDSHAKE, ("policy", Policy((Endpoint(ENDPOINT, (VM4,)),))), ("again", 2, None)]
)
@given(first=small_policies(), script=st.lists(steps, min_size=5, max_size=40))
def test_cache_on_equals_the_reference(harness: Harness, first: Policy, script: list[tuple]) -> None:
    harness.start(first, settings=SETTINGS)
    model = Model(first)
    changes: list[Callable[[], None]] = []
    burst: list[Packet] = []
    last: Packet | None = None

    def flush() -> None:
        nonlocal changes, burst
        if burst:
            _run(harness, model, burst, lambda todo=tuple(changes): [c() for c in todo])
            changes, burst = [], []

    for step in script:
        if step[0] == "reply" and last is not None:
            back = IN if last.direction == OUT else OUT
            step = ("send", dataclasses.replace(last, direction=back, flags=step[2]), step[1])
        if step[0] == "again" and last is not None:
            flags = last.flags if step[2] is None or last.proto != 6 else step[2]
            step = ("send", dataclasses.replace(last, flags=flags), step[1])
        if step[0] == "send":
            _, last, copies = step
            burst += [last] * copies
            continue
        flush()
        if step[0] in ("again", "reply"):
            continue
        if step[0] == "policy":
            if any(isinstance(c, functools.partial) for c in changes):  # one staged policy per batch
                continue
            generation = harness.fw.stage(fwpolicy.compile(step[1]))  # only the flip between runs
            changes.append(functools.partial(harness.fw.flip, generation))
            model.policy, model.generation = step[1], model.generation + 1
        elif step[0] in ("forget", "forget-last") and model.conns:
            flow = (
                sorted(model.conns)[step[1] % len(model.conns)]
                if step[0] == "forget"
                else model.flow_of(last)
            )
            if flow is None:
                continue
            key = _ct_key(harness, flow)
            changes.append(lambda k=key: harness.fw.forget(k))
            del model.conns[flow]
        elif step[0] == "age":
            changes.append(lambda: age(harness.dp, AGE_S))
            model.conns.clear()  # expired: the next packet of each meets the table as new
    flush()
    for change in changes:
        change()
    harness.fw.gc()  # expired entries no packet touched since
    table = syscalls.map_items(harness.dp.maps["conntrack"], abi.CtKey, abi.CtEntry)
    assert {_flow(k): e.state for k, e in table} == {k: c.state for k, c in model.conns.items()}


# -- each way out of the cache, right after a run that filled the slot -----------------------------
ALLOW_WEB = Policy(
    (Endpoint(ENDPOINT, (VM4,)),),
    (Rule(1, frozenset({ENDPOINT}), OUT, Cidr("10.20.0.0/24"), "tcp", (80, 80)),),
)
SYN = Packet(OUT, 6, PEERS[0], 40000, 80, "S")
SYNACK = Packet(IN, 6, PEERS[0], 40000, 80, "SA")
ACK = Packet(OUT, 6, PEERS[0], 40000, 80, "A")


def _established(h: Harness) -> tuple[bytes, int]:
    h.start(ALLOW_WEB, settings=SETTINGS)
    for p in (SYN, SYNACK):
        assert testrun.run(h.dp.programs[PROGRAM[p.direction]], p.frame(h.vlan), ifindex=PORT).passed
    return ACK.frame(h.vlan), h.dp.programs[PROGRAM[OUT]]


def _slot_holds(h: Harness, cpu: int) -> bool:
    """Some slot of `cpu` holds a packet of the flow (its tuple as ACK carries it)."""
    ncpu = syscalls.num_possible_cpus()
    values = (abi.FcEntry * ncpu)()
    fd = h.dp.maps["flow_cache"]
    for idx in range(1 << 12):
        syscalls.map_lookup(fd, ctypes.c_uint32(idx), values)
        e = values[cpu]
        if e.tick and bytes(e.key)[32:34] == (40000).to_bytes(2, "big") and e.key[4] >> 48 == ENDPOINT:
            return True
    return False


def test_a_passed_packet_fills_a_slot_of_its_cpu(harness: Harness) -> None:
    frame, prog = _established(harness)
    assert testrun.run(prog, frame, ifindex=PORT).passed
    assert _slot_holds(harness, min(os.sched_getaffinity(0)))


@pytest.mark.parametrize("way", ["forget", "rewritten", "policy"])
def test_a_cached_flow_stops_at_once(harness: Harness, way: str) -> None:
    """Two ACKs back to back (the second rides the slot), then the connection goes and the next
    ACK comes at once (everything else prepared before: mostly in the same tick, so a slot that
    outlived its connection would pass it). Positive control: the two ACKs passed."""
    frame, prog = _established(harness)
    [(key, entry)] = list(syscalls.map_items(harness.dp.maps["conntrack"], abi.CtKey, abi.CtEntry))
    staged = harness.fw.stage(fwpolicy.compile(DENY_ALL)) if way == "policy" else 0
    entry.last_seen -= AGE_S * 1_000_000_000

    def change() -> None:
        if way == "forget":
            assert harness.fw.forget(key)
        elif way == "rewritten":  # as `age` does: past its timeout, then the REWRITTEN notice
            syscalls.map_update(harness.dp.maps["conntrack"], key, entry)
            harness.fw.rewritten(key)
        else:
            harness.fw.flip(staged)

    before = harness.counters.snapshot()
    passed = [testrun.run(prog, frame, ifindex=PORT).passed for _ in range(2)]
    change()
    dropped = testrun.run(prog, frame, ifindex=PORT).dropped
    assert passed == [True, True]
    assert dropped
    reason = Reason.POLICY if way == "policy" else Reason.CT_INVALID
    assert harness.counters.delta(before) == {
        (COUNTED[OUT], Reason.PASS): (2, 2 * len(frame)),
        (COUNTED[OUT], reason): (1, len(frame)),
    }


def test_a_later_tick_refreshes_the_connection(harness: Harness) -> None:
    """A slot serves only the tick it was filled in: the first packet after the clock moved
    takes the slow path, which writes the connection's last_seen (else a busy flow would expire)."""
    frame, prog = _established(harness)
    assert [testrun.run(prog, frame, ifindex=PORT).passed for _ in range(2)] == [True, True]
    tick = now_ns()
    while now_ns() == tick:  # the coarse clock's next tick: no sleep of a guessed length
        pass
    later = now_ns()
    assert testrun.run(prog, frame, ifindex=PORT).passed
    [(_, entry)] = list(syscalls.map_items(harness.dp.maps["conntrack"], abi.CtKey, abi.CtEntry))
    assert entry.last_seen >= later


@pytest.mark.parametrize("flags", ["FA", "R"])
def test_a_fin_or_reset_on_a_cached_flow_closes_it(harness: Harness, flags: str) -> None:
    """Only packets that would leave the connection as it is ride a slot: a FIN or RST right
    after two ACKs (the second on the slot) still moves it to CLOSING."""
    frame, prog = _established(harness)
    fin = dataclasses.replace(ACK, flags=flags).frame(harness.vlan)
    runs = [testrun.run(prog, f, ifindex=PORT).passed for f in (frame, frame, fin)]
    [(_, entry)] = list(syscalls.map_items(harness.dp.maps["conntrack"], abi.CtKey, abi.CtEntry))
    assert runs == [True, True, True]
    assert entry.state == abi.CtState.CLOSING
