"""The NIC firewall over time: connection entries and their collection, policy updates (cut the
flows a new policy denies, never let a packet see half a policy), a full connection table, and
the event ring buffer when its reader lags. Through BPF_PROG_TEST_RUN on port 1 (fwtools).

    VM app1 (endpoint 1) ── port 1 ── peers 10.0.20.0/24 (servers), 192.0.2.0/24 (the world)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from scapy.layers.inet import ICMP, IP

from dataplane import abi, fwpolicy, syscalls, testrun
from dataplane.abi import Reason, Verdict
from dataplane.events import now_ns
from dataplane.firewall import Settings
from dataplane.fwpolicy import AnyPeer, Cidr, Endpoint, Policy, Rule, evaluate
from tests.bpf.fwtools import (
    ENDPOINT,
    IN,
    OUT,
    VM4,
    Harness,
    Vnic,
    age,
    check_event,
    clear_connections,
    ct_count,
    framed,
    harness_on,
    tagged,
    tcp,
    udp,
)

if TYPE_CHECKING:
    from scapy.packet import Packet

    from dataplane.switch import SwitchDataplane

SERVER = "10.0.20.5"
APP1 = Endpoint(ENDPOINT, (VM4,))


def rule(
    rid: int,
    direction: str,
    peer: object,
    proto: str,
    ports: tuple[int, int] | None = None,
    action: str = "allow",
    priority: int = 0,
) -> Rule:
    return Rule(rid, {ENDPOINT}, direction, peer, proto, ports, action, priority)  # type: ignore[arg-type]


SERVERS = Cidr("10.0.20.0/24")


@pytest.fixture(scope="module")
def harness(dataplane: SwitchDataplane) -> Iterator[Harness]:
    with harness_on(dataplane) as h:
        yield h


def handshake(h: Harness, dport: int, peer: str = SERVER, sport: int = 40000) -> None:
    """SYN out, SYN-ACK in: an established connection to peer:dport."""
    assert h.send(OUT, tcp(VM4, peer, sport, dport, "S")).result.passed
    assert h.send(IN, tcp(peer, VM4, dport, sport, "SA")).result.passed


def entry(h: Harness, dport: int) -> abi.CtEntry:
    [(_, found)] = [
        (k, e)
        for k, e in syscalls.map_items(h.dp.maps["conntrack"], abi.CtKey, abi.CtEntry)
        if int.from_bytes(k.dport.to_bytes(2, "little"), "big") == dport
    ]
    return found


# -- connections ----------------------------------------------------------------------------------
def test_connection_entry_describes_the_flow(harness: Harness) -> None:
    harness.start(Policy((APP1,), (rule(7, OUT, SERVERS, "tcp", (80, 80)),)))
    handshake(harness, 80)

    [conn] = harness.connections()
    assert (conn.endpoint, conn.proto, conn.src, conn.dst, conn.sport, conn.dport) == (
        ENDPOINT,
        6,
        VM4,
        SERVER,
        40000,
        80,
    )
    assert (conn.state, conn.origin, conn.rule) == ("established", "out", 7)
    assert 0 <= conn.age_s < 5
    assert entry(harness, 80).generation == harness.fw.config().generation
    assert ct_count(harness.dp) == 1


def test_gc_removes_expired_entries_only(harness: Harness) -> None:
    policy = Policy((APP1,), (rule(7, OUT, SERVERS, "tcp", (80, 80)), rule(8, OUT, SERVERS, "udp")))
    harness.start(policy)
    handshake(harness, 80)  # established TCP: 3600 s
    assert harness.send(OUT, udp(VM4, SERVER, 33000, 53)).result.passed  # UDP: 60 s
    assert harness.fw.gc() == 0

    age(harness.dp, 61)

    assert harness.fw.gc() == 1
    assert [(c.proto, c.dport) for c in harness.connections()] == [(6, 80)]
    assert ct_count(harness.dp) == 1, "gc must give the quota share back"


def test_gc_and_forget_give_inbound_shares_back(harness: Harness) -> None:
    """ct_reap releases the shares of the entry's origin: an inbound flow's entry, expired or
    forgotten, frees the inbound share and its peer's, and leaves the outbound one alone."""
    policy = Policy((APP1,), (rule(3, IN, AnyPeer(), "udp", (53, 53)), rule(8, OUT, SERVERS, "udp")))
    harness.start(policy)
    assert harness.send(IN, udp("192.0.2.9", VM4, 5353, 53)).result.passed
    assert harness.send(IN, udp("192.0.2.9", VM4, 5354, 53)).result.passed
    assert harness.send(OUT, udp(VM4, SERVER, 33000, 53)).result.passed
    assert harness.fw.quota_counts(ENDPOINT) == (1, 2, 2)
    sport = int.from_bytes((5354).to_bytes(2, "big"), "little")  # the key holds network order
    table = syscalls.map_items(harness.dp.maps["conntrack"], abi.CtKey, abi.CtEntry)
    [key] = [k for k, _ in table if k.sport == sport]
    assert harness.fw.forget(key)
    assert harness.fw.quota_counts(ENDPOINT) == (1, 1, 1)

    age(harness.dp, 61)

    assert harness.fw.gc() == 2
    assert harness.connections() == []
    assert harness.fw.quota_counts(ENDPOINT) == (0, 0, 0)


def test_rule_hits_count_packets_and_bytes(harness: Harness) -> None:
    harness.start(Policy((APP1,), (rule(7, OUT, SERVERS, "tcp", (80, 80)),)))
    before = harness.fw.rule_hits([0, 7])
    first = harness.send(OUT, tcp(VM4, SERVER, 40000, 80, "S"))
    harness.send(IN, tcp(SERVER, VM4, 80, 40000, "SA"))  # tracked: decided by no rule
    denied = harness.send(OUT, tcp(VM4, SERVER, 40000, 81, "S"))
    after = harness.fw.rule_hits([0, 7])
    assert after[7] == (before[7][0] + 1, before[7][1] + len(first.frame))
    assert after[0] == (before[0][0] + 1, before[0][1] + len(denied.frame))


# -- the connection table full --------------------------------------------------------------------
def test_full_table_refuses_new_flows_and_keeps_established_ones(harness: Harness) -> None:
    """Fill the table to NLAB_CT_SIZE with entries of another endpoint, leaving one slot that a
    real connection takes: a further new flow fails closed, the connection goes on."""
    harness.start(Policy((APP1,), (rule(7, OUT, SERVERS, "tcp"),)), settings=Settings(ct_quota=1 << 20))
    fd, keys = harness.dp.maps["conntrack"], []
    filler = abi.CtEntry(last_seen=now_ns(), state=abi.CtState.ESTABLISHED)
    try:
        for i in range(abi.CT_SIZE - 1):
            key = abi.CtKey(endpoint=2, proto=17, family=4, sport=i & 0xFFFF, dport=i >> 16)
            syscalls.map_update(fd, key, filler, flags=1)  # BPF_NOEXIST
            keys.append(key)
        handshake(harness, 80)
        sent = harness.send(OUT, tcp(VM4, SERVER, 40001, 80, "S"))
        assert sent.counted == {(abi.Direction.INGRESS, Reason.CT_FULL): (1, len(sent.frame))}
        check_event(sent.events[0], OUT, sent.frame, Verdict.DENY, Reason.CT_FULL, 7)
        assert harness.send(OUT, tcp(VM4, SERVER, 40000, 80, "A")).result.passed
        assert ct_count(harness.dp) == 1, "a refused flow must not take a quota share"
    finally:
        for key in keys:
            syscalls.map_delete(fd, key)


# -- updates --------------------------------------------------------------------------------------
def test_update_cuts_flows_the_new_policy_denies(harness: Harness) -> None:
    """A tracked flow is checked again at its first packet under a new generation: dropped (and
    forgotten) where the new policy denies it, carried on under its new rule where it allows."""
    web, tls, dns = (
        rule(1, OUT, SERVERS, "tcp", (80, 80)),
        rule(2, OUT, SERVERS, "tcp", (443, 443)),
        rule(3, IN, AnyPeer(), "udp", (53, 53)),
    )
    harness.start(Policy((APP1,), (web, tls, dns)))
    handshake(harness, 80)
    handshake(harness, 443)
    assert harness.send(IN, udp("192.0.2.9", VM4, 5353, 53)).result.passed
    assert (ct_count(harness.dp, origin=OUT), ct_count(harness.dp, origin=IN)) == (2, 1)  # a share each

    tls2 = rule(5, OUT, SERVERS, "tcp", (443, 443))  # the same flows, under another rule id
    generation = harness.install(Policy((APP1,), (tls2, dns)))

    cut = harness.send(IN, tcp(SERVER, VM4, 80, 40000, "A"))
    assert cut.result.dropped and cut.hits == {0: 1}
    [ev] = cut.events
    check_event(ev, IN, cut.frame, Verdict.DENY, Reason.POLICY, 0)
    assert {c.dport for c in harness.connections()} == {443, 53}, "a cut flow must be forgotten"
    assert ct_count(harness.dp) == 1  # the cut flow's share is given back

    kept = harness.send(IN, tcp(SERVER, VM4, 443, 40000, "A"))
    assert kept.result.passed and kept.events == [] and kept.hits == {}
    assert (entry(harness, 443).rule, entry(harness, 443).generation) == (5, generation)
    assert harness.send(IN, udp("192.0.2.9", VM4, 5353, 53)).result.passed  # origin in: rule 3 still
    assert harness.send(OUT, tcp(VM4, SERVER, 40000, 80, "A")).result.dropped  # gone: a lone ACK now
    assert harness.send(OUT, tcp(VM4, SERVER, 40002, 80, "S")).result.dropped  # and the policy says no


def test_update_keeps_an_icmp_exchange_its_rule_still_allows(harness: Harness) -> None:
    """A flow opened by an ICMP request is checked again as that request (a timestamp request
    here, not an echo request) when the policy changes."""
    stamp = rule(4, OUT, SERVERS, "icmp", (13, 13))
    harness.start(Policy((APP1,), (stamp,)))
    request, answer = IP(src=VM4, dst=SERVER) / ICMP(type=13), IP(src=SERVER, dst=VM4) / ICMP(type=14)
    assert harness.send(OUT, request).result.passed
    assert harness.send(IN, answer).result.passed
    harness.install(Policy((APP1,), (stamp,)))

    sent = harness.send(IN, answer)
    assert sent.result.passed, f"cut by a policy that allows it: {sent.counted}"
    harness.install(Policy((APP1,), (rule(5, OUT, SERVERS, "icmp", (8, 8)),)))
    assert harness.send(IN, answer).result.dropped


def test_update_deny_rule_names_itself(harness: Harness) -> None:
    tls = rule(2, OUT, SERVERS, "tcp", (443, 443))
    harness.start(Policy((APP1,), (tls,)))
    handshake(harness, 443)
    block = rule(6, OUT, Cidr(f"{SERVER}/32"), "any", action="deny")
    harness.install(Policy((APP1,), (tls, block)))

    sent = harness.send(OUT, tcp(VM4, SERVER, 40000, 443, "A"))
    assert sent.result.dropped and sent.hits == {6: 1}
    check_event(sent.events[0], OUT, sent.frame, Verdict.DENY, Reason.POLICY, 6)


def test_endpoint_left_out_of_the_new_policy_is_denied(harness: Harness) -> None:
    """An endpoint the policy does not know is denied (fwpolicy.evaluate); one that had no rules
    allowed everything, and must not keep that default once it leaves the policy."""
    other = Endpoint(2, ("10.0.10.2",))
    old = Policy((APP1, other), (Rule(9, {2}, IN, AnyPeer(), "tcp", (22, 22)),))
    new = Policy((other,), (Rule(9, {2}, IN, AnyPeer(), "tcp", (22, 22)),))
    assert evaluate(old, ENDPOINT, OUT, SERVER, "tcp", 80).allowed
    assert not evaluate(new, ENDPOINT, OUT, SERVER, "tcp", 80).allowed
    harness.start(old)
    assert harness.send(OUT, tcp(VM4, SERVER, 40000, 80, "S")).result.passed

    harness.install(new)

    clear_connections(harness.dp)
    sent = harness.send(OUT, tcp(VM4, SERVER, 40000, 80, "S"))
    assert sent.result.dropped, "a stale default let a removed endpoint through"


def test_rows_of_an_older_generation_never_go_live(harness: Harness) -> None:
    """Installs without `previous` (or with a wrong one) leave rows in the spare half; the next
    install into that half must not inherit them."""
    ssh = Policy((APP1,), (rule(1, OUT, SERVERS, "tcp", (22, 22)),))
    web = Policy((APP1,), (rule(2, OUT, SERVERS, "tcp", (80, 80)),))
    harness.start(ssh)  # generation g: the rows of rule 1 in half g & 1
    harness.fw.install(fwpolicy.compile(web))  # g + 1, nothing removed
    harness.fw.install(fwpolicy.compile(web))  # g + 2: the half of g again

    assert harness.send(OUT, tcp(VM4, SERVER, 40000, 80)).result.passed
    sent = harness.send(OUT, tcp(VM4, SERVER, 40000, 22))
    assert sent.result.dropped, "a row of a policy two installs ago went live again"


def test_install_refuses_endpoints_past_the_defaults_array(harness: Harness) -> None:
    harness.start(Policy((APP1,)))
    generation = harness.fw.config().generation
    big = Policy((Endpoint(abi.MAX_ENDPOINTS, ("10.0.10.9",)),))
    with pytest.raises(ValueError, match="NLAB_MAX_ENDPOINTS"):
        harness.fw.install(fwpolicy.compile(big))
    assert harness.fw.config().generation == generation, "nothing may be flipped"


# Two policies whose every difference is on a probe's path: rows that appear and disappear,
# addresses whose identity changes, and per-direction defaults that flip both ways.
OLD = Policy(
    (APP1,),
    (
        rule(1, OUT, AnyPeer(), "tcp", (80, 80)),
        rule(2, OUT, SERVERS, "tcp", (8080, 8080)),
        rule(3, IN, SERVERS, "tcp", (22, 22), "deny"),
    ),
    default={ENDPOINT: {IN: "allow"}},
)
NEW = Policy(
    (APP1,),
    (
        rule(4, OUT, AnyPeer(), "tcp", (8080, 8080), "deny"),
        rule(5, OUT, Cidr("10.0.20.0/25"), "tcp", (443, 443)),
        rule(6, IN, Cidr(f"{SERVER}/32"), "tcp", (22, 22)),
    ),
    default={ENDPOINT: {OUT: "allow"}},
)
PROBES = [
    (OUT, "10.0.20.5", 80),
    (OUT, "10.0.20.5", 8080),
    (OUT, "10.0.30.5", 8080),  # denied by both: by the old default, by the new rule 4
    (OUT, "10.0.20.5", 443),
    (OUT, "10.0.20.200", 443),
    (IN, "10.0.20.5", 22),
    (IN, "10.0.20.9", 22),
    (IN, "10.0.20.9", 3306),
    (IN, "192.0.2.1", 3306),
]


def probe_frame(direction: str, peer: str, port: int) -> Packet:
    return tcp(VM4, peer, 40000, port) if direction == OUT else tcp(peer, VM4, 40000, port)


def verdicts(h: Harness) -> tuple[bool, ...]:
    """Each probe as a new flow: passed or not. Leaves no connection behind."""
    seen = []
    for direction, peer, port in PROBES:
        clear_connections(h.dp)
        wire = framed(direction, probe_frame(direction, peer, port))
        if direction == IN:
            wire = tagged(wire)
        program = h.dp.programs["port_from_vm" if direction == OUT else "port_to_vm"]
        seen.append(testrun.run(program, wire).passed)
    clear_connections(h.dp)
    return tuple(seen)


def test_update_is_atomic(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """After every single map write of an install, every probe gets the whole old policy's verdict
    or the whole new one's, the same for all probes: no packet sees half a policy, and a flow both
    policies deny never passes while rules flip."""
    expected = {
        policy_name: tuple(evaluate(p, ENDPOINT, d, peer, "tcp", port).allowed for d, peer, port in PROBES)
        for policy_name, p in (("old", OLD), ("new", NEW))
    }
    assert expected["old"] != expected["new"]
    harness.start(OLD, Vnic(port_security=False))
    assert verdicts(harness) == expected["old"]
    states, probing = [], [False]
    real_update, real_delete = syscalls.map_update, syscalls.map_delete

    def observed(real):  # type: ignore[no-untyped-def]
        def write(fd, key, *args, **kwargs):  # type: ignore[no-untyped-def]
            done = real(fd, key, *args, **kwargs)
            # every write, but the thousands of default slots of endpoints no probe uses
            other = fd == harness.dp.maps["defaults"] and key.value % (abi.MAX_ENDPOINTS * 2) // 2 != ENDPOINT
            if not probing[0] and not other:
                probing[0] = True
                try:
                    states.append(verdicts(harness))
                finally:
                    probing[0] = False
            return done

        return write

    monkeypatch.setattr(syscalls, "map_update", observed(real_update))
    monkeypatch.setattr(syscalls, "map_delete", observed(real_delete))
    harness.install(NEW)
    monkeypatch.undo()

    assert len(states) > 10
    names = [
        "old" if s == expected["old"] else "new" if s == expected["new"] else f"mixed {s}" for s in states
    ]
    flip = names.index("new")
    assert names == ["old"] * flip + ["new"] * (len(names) - flip), names
    assert verdicts(harness) == expected["new"]
    harness.drain()


# -- events ---------------------------------------------------------------------------------------
def test_events_lost_when_the_reader_lags(harness: Harness) -> None:
    """The ring (64 pages) holds some 3000 records; denials past that are counted as lost, and
    every denial is either read or counted."""
    harness.start(Policy((APP1,), (rule(7, OUT, SERVERS, "tcp", (80, 80)),)))
    frame = framed(OUT, tcp(VM4, SERVER, 40000, 81))
    lost_before, runs = harness.fw.events_lost(), 5000

    result = testrun.run(harness.dp.programs["port_from_vm"], frame, repeat=runs)

    assert result.dropped
    read = harness.drain()
    lost = harness.fw.events_lost() - lost_before
    assert lost > 0 and len(read) + lost == runs
    assert {(ev.verdict, ev.reason, ev.dport) for ev in read} == {(Verdict.DENY, Reason.POLICY, 81)}
    again = harness.send(OUT, tcp(VM4, SERVER, 40000, 82))
    assert len(again.events) == 1, "a drained ring must take records again"


def test_event_time_is_the_coarse_monotonic_clock(harness: Harness) -> None:
    """Events and connection entries carry CLOCK_MONOTONIC_COARSE (bpf_ktime_get_coarse_ns)."""
    harness.start(Policy((APP1,), (rule(7, OUT, SERVERS, "tcp", (80, 80)),)))
    before = now_ns()
    sent = harness.send(OUT, tcp(VM4, SERVER, 40000, 80))
    after = now_ns()
    assert before <= sent.events[0].time_ns <= after


def test_closed_tcp_connection_expires_on_the_close_timeout(harness: Harness) -> None:
    """After a FIN or RST the entry (and the VM's quota share) goes after tcp_close_timeout (10 s),
    not after the open timeout (60 s): a VM that opens and closes many connections keeps its quota."""
    harness.start(Policy((APP1,), (rule(7, OUT, SERVERS, "tcp", (80, 81)),)))
    handshake(harness, 80)
    handshake(harness, 81)
    assert harness.send(OUT, tcp(VM4, SERVER, 40000, 80, "FA")).result.passed
    assert entry(harness, 80).state == abi.CtState.CLOSING
    assert ct_count(harness.dp) == 2

    age(harness.dp, 11)

    assert harness.fw.gc() == 1
    assert [(c.dport, c.state) for c in harness.connections()] == [(81, "established")]
    assert ct_count(harness.dp) == 1


def test_gc_spares_a_flow_refreshed_after_it_was_picked(harness: Harness) -> None:
    """gc deletes through ct_reap, which checks the age again in the kernel: an entry the
    datapath refreshed since user space read it stays (and so does its quota share)."""
    harness.start(Policy((APP1,), (rule(8, OUT, SERVERS, "udp"),)))
    assert harness.send(OUT, udp(VM4, SERVER, 33000, 53)).result.passed
    [(key, _)] = list(syscalls.map_items(harness.dp.maps["conntrack"], abi.CtKey, abi.CtEntry))
    assert not harness.fw.reap(key, force=False), "a live entry must not be reaped"
    age(harness.dp, 61)
    assert harness.fw.reap(key, force=False)
    assert harness.connections() == [] and ct_count(harness.dp) == 0
