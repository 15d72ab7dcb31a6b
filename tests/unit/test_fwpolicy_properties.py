"""Properties of the firewall policy compiler: the compiled maps decide every packet as the
reference evaluator does, port covers are exact and minimal, the LPM model is a longest-prefix
match, and `diff` takes the old maps to the new ones keeping each address's identity old or new."""

from __future__ import annotations

import random
from ipaddress import ip_address, ip_network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataplane import lpm
from dataplane.fwpolicy import Policy, Rule, compile, diff, evaluate
from dataplane.lpm import DIRECTIONS, Compiled, IpcacheKey, IpcacheValue, LpmTrie, Maps, Write
from tests.fwgen import CIDRS, HOSTS, OTHER_IPS, PORTS, peer_address, policies

PROTOS = ["tcp", "udp", "icmp", "icmpv6", 47]
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def packets(policy: Policy, rnd: random.Random, count: int) -> list[tuple[int, str, str, object, int]]:
    """Packets for the policy: half aimed at a rule (its endpoint, direction, protocol and a peer
    it matches, a port at or next to its range's ends), half from the pools (one endpoint the
    policy lacks, random addresses and ports). One seeded generator is much cheaper than a
    strategy per field, and a failure still reproduces."""
    edges = [
        p
        for r in policy.rules
        if r.ports
        for p in (r.ports[0] - 1, *r.ports, r.ports[1] + 1)
        if 0 <= p <= 65535
    ]
    out = []
    for _ in range(count):
        endpoint = rnd.choice([ep.id for ep in policy.endpoints] + [7])
        direction, proto = rnd.choice(["in", "out"]), rnd.choice(PROTOS)
        if rnd.random() < 0.8:
            ip = rnd.choice(HOSTS + OTHER_IPS)
        else:
            ip = str(
                ip_address(rnd.getrandbits(32)) if rnd.random() < 0.5 else ip_address(rnd.getrandbits(128))
            )
        port = rnd.choice(edges + PORTS) if rnd.random() < 0.8 else rnd.randrange(65536)
        if policy.rules and rnd.random() < 0.5:
            rule = rnd.choice(policy.rules)
            endpoint, direction, ip = (
                rnd.choice(sorted(rule.applies_to)),
                rule.direction,
                peer_address(policy, rule.peer, rnd),
            )
            proto = proto if rule.proto == "any" else rule.proto
        out.append((endpoint, direction, ip, proto, port))
    return out


@settings(SETTINGS, max_examples=300)
@given(st.data())
def test_compiled_maps_decide_as_the_evaluator(data: st.DataObject) -> None:
    policy = data.draw(policies())
    compiled = compile(policy)
    for packet in packets(policy, data.draw(st.randoms(use_true_random=False)), 20):
        assert compiled.lookup(*packet) == evaluate(policy, *packet), packet


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, 65535), st.integers(0, 65535))
def test_range_cover_is_exact_disjoint_and_minimal(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    cover = lpm.range_cover(lo, hi)
    nxt = lo
    for base, bits in cover:
        size = 1 << (16 - bits)
        assert base == nxt and base % size == 0  # aligned, contiguous, in order
        if bits:  # maximal: the enclosing block of twice the size sticks out of [lo, hi]
            parent = base - base % (2 * size)
            assert parent < lo or parent + 2 * size - 1 > hi
        nxt = base + size
    assert nxt == hi + 1
    assert len(cover) <= 30


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 63), st.integers(0, 63), st.integers(0, 3)), max_size=8))
def test_paint_gives_the_first_range_covering_each_point(raw: list[tuple[int, int, int]]) -> None:
    ranges = [(min(a, b), max(a, b), v) for a, b, v in raw]
    painted = {p: v for lo, hi, v in lpm.paint(ranges) for p in range(lo, hi + 1)}
    expected = {p: next((v for lo, hi, v in ranges if lo <= p <= hi), None) for p in range(64)}
    assert painted == {p: v for p, v in expected.items() if v is not None}


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(CIDRS + [f"{h}/{32 if '.' in h else 128}" for h in HOSTS]), st.integers(1, 9)
    ),
    st.lists(st.sampled_from(HOSTS + OTHER_IPS) | st.ip_addresses().map(str), max_size=10),
)
def test_lpm_trie_is_longest_prefix_match(table: dict[str, int], ips: list[str]) -> None:
    trie = LpmTrie(IpcacheKey)
    for net, value in table.items():
        trie.update(lpm.ipcache_key(ip_network(net)), IpcacheValue(value))
    for text in ips:
        ip = ip_address(text)
        matches = [(ip_network(n).prefixlen, v) for n, v in table.items() if ip in ip_network(n)]
        found = trie.lookup(lpm.ipcache_lookup_key(ip))
        assert (IpcacheValue.from_buffer_copy(found).identity if found else None) == (
            max(matches)[1] if matches else None
        )


def _mutated(policy: Policy, flips: list[tuple[bool, int]]) -> Policy:
    """The same rules with some actions flipped and priorities changed: an update that keeps every
    address's identity."""
    swap = {"allow": "deny", "deny": "allow"}
    rules = tuple(
        Rule(
            r.id,
            r.applies_to,
            r.direction,
            r.peer,
            r.proto,
            r.ports,
            swap[r.action] if flip else r.action,
            prio,
        )
        for r, (flip, prio) in zip(policy.rules, flips, strict=False)
    )
    return Policy(policy.endpoints, rules + policy.rules[len(rules) :], policy.default)


def _address_of(compiled: Compiled, identity: int, rnd: random.Random) -> str | None:
    """An address the compiled ipcache gives `identity`, if one is easy to find."""
    nets = [net for net, i in compiled.ipcache.items() if i == identity]
    world = ["203.0.113.9", "2001:db8:ffff::1", "11.0.0.1", "fe80::1"]
    candidates = [str(a) for net in nets for a in (net.network_address, net.broadcast_address)] + world
    found = [ip for ip in candidates if compiled._maps.identity(ip) == identity]
    return rnd.choice(found) if found else None


def _aimed_at(write: Write, old: Compiled, new: Compiled, rnd: random.Random) -> tuple | None:
    """A packet whose verdict the write may change (or None)."""
    ep, direction = rnd.randrange(1, 8), rnd.choice(["in", "out"])
    proto, port = rnd.choice(PROTOS), rnd.choice(PORTS)
    if write.map == "defaults":
        ep, direction = write.key
    elif write.map == "ipcache":
        net = write.key
        return ep, direction, str(rnd.choice([net.network_address, net.broadcast_address])), proto, port
    else:
        key = write.key
        ep, direction = key.endpoint, {code: name for name, code in DIRECTIONS.items()}[key.direction]
        proto = key.proto or 47
        port = key.port + rnd.choice([0, (1 << (16 - key.port_bits)) - 1])
        ip = _address_of(rnd.choice([old, new]), key.identity, rnd)
        return (ep, direction, ip, proto, port) if ip else None
    return ep, direction, rnd.choice(HOSTS + OTHER_IPS), proto, port


@settings(SETTINGS, max_examples=100)
@given(st.data())
def test_diff_turns_the_old_maps_into_the_new_ones(data: st.DataObject) -> None:
    """Every address keeps its old or its new identity at every write, and once all writes are
    done the maps decide as the new policy compiled alone (live updates themselves are written
    into the spare generation and switched on at once: no packet sees the writes one by one)."""
    old_policy = data.draw(policies())
    if data.draw(st.booleans()):
        new_policy = data.draw(
            policies(ids=data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=4, unique=True)))
        )
    else:
        flips = data.draw(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=12))
        new_policy = _mutated(old_policy, flips)
    old = compile(old_policy)
    new = compile(new_policy, prev=old)
    update = diff(old, new)
    rnd = data.draw(st.randoms(use_true_random=False))
    writes = update.upserts + update.deletes
    aimed = [p for w in writes if (p := _aimed_at(w, old, new, rnd))]
    sample = (
        rnd.sample(aimed, min(len(aimed), 16)) + packets(old_policy, rnd, 4) + packets(new_policy, rnd, 4)
    )
    identities = [{old._maps.identity(p[2]), new._maps.identity(p[2])} for p in sample]
    maps = Maps()
    for write in diff(lpm.EMPTY, old).upserts:
        maps.apply(write)
    for write in writes:
        maps.apply(write)
        for p, known in zip(sample, identities, strict=True):
            assert maps.identity(p[2]) in known, (write, p)
    assert [maps.lookup(*p) for p in sample] == [new.lookup(*p) for p in sample]
