"""Firewall policy compiler: the reference evaluator, the compiled maps against it, port prefix
covers, identities, binary layouts and update plans, on hand-written tables."""

from __future__ import annotations

import ctypes
import struct
from ipaddress import ip_network

import pytest

from dataplane import lpm
from dataplane.fwpolicy import (
    AnyPeer,
    Cidr,
    Endpoint,
    Group,
    Policy,
    PolicyError,
    Rule,
    Verdict,
    compile,
    diff,
    encode,
    evaluate,
)
from dataplane.lpm import IpcacheKey, IpcacheValue, LpmTrie, PolicyKey, PolicyValue

ALLOW, DENY = "allow", "deny"
WEB = Endpoint(1, ("10.1.2.3", "2001:db8:1::3"), {"web"})
DB = Endpoint(2, ("10.1.2.4",), {"db"})
APP = Endpoint(3, ("10.2.0.7",), {"app", "web"})
EPS = (WEB, DB, APP)


def rule(
    rid: int, peer: object, proto: str = "any", ports: tuple[int, int] | None = None, **kw: object
) -> Rule:
    """A rule on endpoint 2 (DB), inbound, allowing, at priority 10 unless told otherwise."""
    fields = {"applies_to": {2}, "direction": "in", "action": ALLOW, "priority": 10} | kw
    return Rule(rid, peer=peer, proto=proto, ports=ports, **fields)  # type: ignore[arg-type]


def check(policy: Policy, cases: list[tuple[tuple, Verdict]]) -> None:
    """Each packet gets the expected verdict from the evaluator and from the compiled maps."""
    compiled = compile(policy)
    for packet, expected in cases:
        assert evaluate(policy, *packet) == expected, packet
        assert compiled.lookup(*packet) == expected, packet


def test_port_range_edges() -> None:
    policy = Policy(EPS, (rule(7, AnyPeer(), "tcp", (1000, 2000)),))
    cases = [
        ((2, "in", "192.0.2.1", "tcp", port), Verdict(action, rid))
        for port, action, rid in [
            (0, DENY, None),
            (999, DENY, None),
            (1000, ALLOW, 7),
            (1500, ALLOW, 7),
            (2000, ALLOW, 7),
            (2001, DENY, None),
            (65535, DENY, None),
        ]
    ]
    check(policy, cases)


def test_full_and_single_port_ranges() -> None:
    rules = (rule(1, AnyPeer(), "udp", (0, 65535)), rule(2, AnyPeer(), "tcp", (65535, 65535)))
    check(
        Policy(EPS, rules),
        [
            ((2, "in", "192.0.2.1", "udp", 0), Verdict(ALLOW, 1)),
            ((2, "in", "192.0.2.1", "udp", 65535), Verdict(ALLOW, 1)),
            ((2, "in", "192.0.2.1", "tcp", 65535), Verdict(ALLOW, 2)),
            ((2, "in", "192.0.2.1", "tcp", 65534), Verdict(DENY)),
        ],
    )


def test_nested_cidrs_priority_not_specificity_decides() -> None:
    rules = (
        rule(1, Cidr("10.0.0.0/8"), "tcp", (80, 80), action=DENY, priority=20),
        rule(2, Cidr("10.1.0.0/16"), "tcp", (80, 80), priority=10),
        rule(3, Cidr("10.1.2.0/24"), "tcp", (80, 80), action=DENY, priority=5),
        rule(4, Cidr("10.1.2.3/32"), "tcp", (80, 80), priority=1),
        rule(5, Cidr("10.3.0.0/16"), "tcp", (80, 80), priority=30),  # loses to the /8
        rule(6, Cidr("10.0.0.0/8"), "tcp", (81, 81), action=DENY, priority=0),
        rule(7, Cidr("10.1.2.3/32"), "tcp", (81, 81), priority=9),  # loses to the /8
    )
    table = [
        ("10.1.2.3", 80, ALLOW, 4),
        ("10.1.2.9", 80, DENY, 3),
        ("10.1.9.9", 80, ALLOW, 2),
        ("10.9.9.9", 80, DENY, 1),
        ("10.3.0.1", 80, DENY, 1),
        ("11.0.0.1", 80, DENY, None),
        ("10.1.2.3", 81, DENY, 6),
    ]
    check(Policy(EPS, rules), [((2, "in", ip, "tcp", port), Verdict(a, r)) for ip, port, a, r in table])


def test_group_membership_is_by_member_addresses() -> None:
    rules = (rule(1, Group("web"), "tcp", (5432, 5432)), rule(2, Group("nobody"), "tcp", (22, 22)))
    cases = [
        ((2, "in", "10.1.2.3", "tcp", 5432), Verdict(ALLOW, 1)),  # WEB
        ((2, "in", "2001:db8:1::3", "tcp", 5432), Verdict(ALLOW, 1)),  # WEB's v6 address
        ((2, "in", "10.2.0.7", "tcp", 5432), Verdict(ALLOW, 1)),  # APP is also in web
        ((2, "in", "10.1.2.4", "tcp", 5432), Verdict(DENY)),  # DB itself is not
        ((2, "in", "10.1.2.5", "tcp", 5432), Verdict(DENY)),  # next to a member
        ((2, "in", "10.1.2.3", "tcp", 22), Verdict(DENY)),  # an empty group matches nothing
    ]
    check(Policy(EPS, rules), cases)


def test_membership_change_moves_an_address() -> None:
    rules = (rule(1, Group("web"), "tcp", (5432, 5432)),)
    moved = (Endpoint(1, WEB.ips, {"db"}), DB, APP)
    check(Policy(moved, rules), [((2, "in", "10.1.2.3", "tcp", 5432), Verdict(DENY))])


def test_any_peer_covers_world_of_both_families() -> None:
    rules = (
        rule(1, AnyPeer(), "tcp", (443, 443)),
        rule(2, Cidr("10.0.0.0/8"), "tcp", (443, 443), action=DENY),
    )
    cases = [
        ((2, "in", "198.51.100.1", "tcp", 443), Verdict(ALLOW, 1)),
        ((2, "in", "2001:db8:ffff::1", "tcp", 443), Verdict(ALLOW, 1)),
        ((2, "in", "10.0.0.1", "tcp", 443), Verdict(DENY, 2)),
    ]
    check(Policy(EPS, rules), cases)


def test_protocol_any_against_specific_ones() -> None:
    rules = (rule(1, AnyPeer(), "any", priority=20), rule(2, AnyPeer(), "tcp", (22, 22), action=DENY))
    cases = [
        ((2, "in", "192.0.2.1", "tcp", 22), Verdict(DENY, 2)),
        ((2, "in", "192.0.2.1", "tcp", 23), Verdict(ALLOW, 1)),
        ((2, "in", "192.0.2.1", "udp", 22), Verdict(ALLOW, 1)),
        ((2, "in", "192.0.2.1", 47, 0), Verdict(ALLOW, 1)),  # GRE: "other"
        ((2, "in", "192.0.2.1", 132, 22), Verdict(ALLOW, 1)),  # SCTP: the port plays no part
        ((2, "in", "192.0.2.1", "icmp", 8), Verdict(ALLOW, 1)),
    ]
    check(Policy(EPS, rules), cases)
    only_tcp = Policy(EPS, (rule(1, AnyPeer(), "tcp"),))
    check(
        only_tcp,
        [((2, "in", "192.0.2.1", 47, 0), Verdict(DENY)), ((2, "in", "192.0.2.1", 6, 9), Verdict(ALLOW, 1))],
    )


def test_icmp_types() -> None:
    rules = (rule(1, AnyPeer(), "icmp", (8, 8)), rule(2, AnyPeer(), "icmpv6", (128, 129)))
    cases = [
        ((2, "in", "192.0.2.1", "icmp", 8), Verdict(ALLOW, 1)),
        ((2, "in", "192.0.2.1", "icmp", 0), Verdict(DENY)),
        ((2, "in", "2001:db8::1", "icmpv6", 128), Verdict(ALLOW, 2)),
        ((2, "in", "2001:db8::1", "icmpv6", 129), Verdict(ALLOW, 2)),
        ((2, "in", "2001:db8::1", "icmpv6", 8), Verdict(DENY)),
        ((2, "in", "2001:db8::1", "icmp", 128), Verdict(DENY)),
    ]
    check(Policy(EPS, rules), cases)


def test_defaults() -> None:
    rules = (rule(1, AnyPeer(), "tcp", (80, 80)),)
    policy = Policy(EPS, rules, default={3: {"in": DENY}})
    cases = [
        ((2, "in", "192.0.2.1", "tcp", 81), Verdict(DENY)),  # has a rule: deny by default
        ((2, "out", "192.0.2.1", "tcp", 81), Verdict(DENY)),  # ... in both directions
        ((1, "in", "192.0.2.1", "tcp", 81), Verdict(ALLOW)),  # no rule: allow
        ((1, "out", "192.0.2.1", "udp", 53), Verdict(ALLOW)),
        ((3, "in", "192.0.2.1", "tcp", 81), Verdict(DENY)),  # explicit
        ((3, "out", "192.0.2.1", "tcp", 81), Verdict(ALLOW)),
        ((9, "in", "192.0.2.1", "tcp", 80), Verdict(DENY)),  # unknown endpoint: fail closed
    ]
    check(policy, cases)
    explicit_allow = Policy(EPS, rules, default={2: {"in": ALLOW, "out": ALLOW}})
    check(explicit_allow, [((2, "in", "192.0.2.1", "tcp", 81), Verdict(ALLOW))])


def test_ipv6_cidrs_and_families_kept_apart() -> None:
    rules = (
        rule(1, Cidr("2001:db8::/32"), "tcp", (80, 80)),
        rule(2, Cidr("2001:db8:1::/48"), "tcp", (80, 80), action=DENY, priority=5),
        rule(3, Cidr("0.0.0.0/0"), "udp", (53, 53)),
        rule(4, Cidr("::/0"), "udp", (123, 123)),
    )
    cases = [
        ((2, "in", "2001:db8:2::1", "tcp", 80), Verdict(ALLOW, 1)),
        ((2, "in", "2001:db8:1::1", "tcp", 80), Verdict(DENY, 2)),
        ((2, "in", "2001:db9::1", "tcp", 80), Verdict(DENY)),
        ((2, "in", "::ffff:10.0.0.1", "udp", 53), Verdict(DENY)),  # a v6 address, not a v4 one
        ((2, "in", "10.0.0.1", "udp", 53), Verdict(ALLOW, 3)),
        ((2, "in", "2001:db8::1", "udp", 53), Verdict(DENY)),
        ((2, "in", "2001:db8::1", "udp", 123), Verdict(ALLOW, 4)),
        ((2, "in", "10.0.0.1", "udp", 123), Verdict(DENY)),
    ]
    check(Policy(EPS, rules), cases)


def test_deny_wins_ties_and_lower_id_names_the_rule() -> None:
    rules = (
        rule(5, AnyPeer(), "tcp", (1, 100)),
        rule(9, AnyPeer(), "tcp", (50, 150), action=DENY),
        rule(3, AnyPeer(), "tcp", (120, 200)),
    )
    cases = [
        ((2, "in", "192.0.2.1", "tcp", 49), Verdict(ALLOW, 5)),
        ((2, "in", "192.0.2.1", "tcp", 50), Verdict(DENY, 9)),
        ((2, "in", "192.0.2.1", "tcp", 150), Verdict(DENY, 9)),
        ((2, "in", "192.0.2.1", "tcp", 151), Verdict(ALLOW, 3)),
    ]
    check(Policy(EPS, rules), cases)
    same = (rule(8, AnyPeer(), "tcp", (1, 100)), rule(4, AnyPeer(), "tcp", (100, 200)))
    check(Policy(EPS, same), [((2, "in", "192.0.2.1", "tcp", 100), Verdict(ALLOW, 4))])


def test_rows_of_one_user_rule_share_its_id() -> None:
    rows = (rule(5, Cidr("10.1.0.0/16"), "tcp", (80, 80)), rule(5, Group("web"), "tcp", (443, 443)))
    cases = [
        ((2, "in", "10.1.9.9", "tcp", 80), Verdict(ALLOW, 5)),
        ((2, "in", "10.2.0.7", "tcp", 443), Verdict(ALLOW, 5)),
        ((2, "in", "10.2.0.7", "tcp", 80), Verdict(DENY)),
    ]
    check(Policy(EPS, rows), cases)


def test_direction_and_endpoint_scope() -> None:
    rules = (rule(1, AnyPeer(), "tcp", (80, 80), direction="out", applies_to={1, 2}),)
    cases = [
        ((1, "out", "192.0.2.1", "tcp", 80), Verdict(ALLOW, 1)),
        ((2, "out", "192.0.2.1", "tcp", 80), Verdict(ALLOW, 1)),
        ((2, "in", "192.0.2.1", "tcp", 80), Verdict(DENY)),
        ((3, "out", "192.0.2.1", "tcp", 80), Verdict(ALLOW)),  # no rules: default allow
    ]
    check(Policy(EPS, rules), cases)


@pytest.mark.parametrize(
    ("lo", "hi", "cover"),
    [
        (1024, 65535, [(1024, 6), (2048, 5), (4096, 4), (8192, 3), (16384, 2), (32768, 1)]),
        (80, 80, [(80, 16)]),
        (0, 65535, [(0, 0)]),
        (1, 1, [(1, 16)]),
        (0, 0, [(0, 16)]),
        (0, 1023, [(0, 6)]),
        (32768, 65535, [(32768, 1)]),
        (8, 15, [(8, 13)]),
        (7, 8, [(7, 16), (8, 16)]),
    ],
)
def test_range_cover(lo: int, hi: int, cover: list[tuple[int, int]]) -> None:
    assert lpm.range_cover(lo, hi) == cover


def test_range_cover_worst_case_and_bad_ranges() -> None:
    assert len(lpm.range_cover(1, 65534)) == 30  # 2 * 16 - 2, the most any range needs
    for lo, hi in [(5, 4), (-1, 3), (0, 65536)]:
        with pytest.raises(ValueError):
            lpm.range_cover(lo, hi)


def test_identities_are_classes_of_addresses() -> None:
    rules = (
        rule(1, Cidr("10.0.0.0/8")),
        rule(2, Cidr("10.1.0.0/16")),
        rule(3, Cidr("10.1.2.3/32")),
        rule(4, Group("web")),
        rule(5, Cidr("192.168.0.0/16")),
        rule(6, Cidr("192.168.1.0/24")),
    )
    compiled = compile(Policy(EPS, rules))
    by_net = {str(net): compiled.identities[i] for net, i in compiled.ipcache.items()}
    cidr = lambda text: Cidr(text)  # noqa: E731
    assert by_net["10.1.2.3/32"] == {
        cidr("10.0.0.0/8"),
        cidr("10.1.0.0/16"),
        cidr("10.1.2.3/32"),
        Group("web"),
    }
    assert by_net["10.2.0.7/32"] == {cidr("10.0.0.0/8"), Group("web")}  # APP, a web member
    assert by_net["2001:db8:1::3/128"] == {Group("web")}
    assert "10.1.2.4/32" not in by_net  # DB's group "db" is in no rule: no entry of its own
    assert set(compiled.identities[0]) == set()
    assert compiled.counts() == {"ipcache": 7, "identities": 8, "policy": 7 * 5, "defaults": 6}


def test_equal_classes_share_an_identity() -> None:
    compiled = compile(Policy(EPS, (rule(1, Group("web")), rule(2, Cidr("10.1.2.3/32")))))
    assert compiled.ipcache == {
        ip_network("10.1.2.3/32"): 1,  # {10.1.2.3/32, web}
        ip_network("2001:db8:1::3/128"): 2,  # {web}
        ip_network("10.2.0.7/32"): 2,  # {web}
    }


def test_prev_keeps_identity_numbers_and_diff_refuses_unrelated_ones() -> None:
    first = compile(Policy(EPS, (rule(1, Cidr("10.0.0.0/8")), rule(2, Cidr("10.9.0.0/16")))))
    rules = (rule(1, Cidr("10.0.0.0/8")), rule(3, Cidr("10.1.0.0/16")))
    second = compile(Policy(EPS, rules), prev=first)
    number = {selset: i for i, selset in second.identities.items()}
    assert number[frozenset({Cidr("10.0.0.0/8")})] == 1
    assert number[frozenset({Cidr("10.0.0.0/8"), Cidr("10.1.0.0/16")})] == 3  # 2 was retired this update
    diff(first, second)
    with pytest.raises(ValueError, match="prev=old"):
        diff(first, compile(Policy(EPS, rules)))


def test_scale_10k_single_host_rules() -> None:
    eps = tuple(Endpoint(i, (f"10.0.{i}.1",)) for i in range(1, 101))
    rules = tuple(
        Rule(
            n + 1,
            {n % 100 + 1},
            "in",
            Cidr(f"172.{16 + n // 65536}.{n // 256 % 256}.{n % 256}/32"),
            "tcp",
            (80, 80),
        )
        for n in range(10_000)
    )
    compiled = compile(Policy(eps, rules))
    assert compiled.counts() == {"ipcache": 10_000, "identities": 10_001, "policy": 10_000, "defaults": 200}
    assert compiled.lookup(43, "in", "172.16.0.42", "tcp", 80) == Verdict(ALLOW, 43)
    assert compiled.lookup(44, "in", "172.16.0.42", "tcp", 80) == Verdict(DENY)


def test_validation_collects_every_error_with_its_path() -> None:
    bad = (
        Rule(0, {2}, "up", AnyPeer(), "sctp", None, "maybe"),
        Rule(2, {9}, "in", AnyPeer(), "tcp", (90, 80)),
        Rule(2, set(), "in", AnyPeer(), "any", (1, 2)),
        Rule(4, {2}, "in", AnyPeer(), "icmp", (0, 256)),
    )
    with pytest.raises(PolicyError) as err:
        Policy((*EPS, Endpoint(1), Endpoint(70000)), bad, default={8: {"in": "drop"}})
    assert err.value.errors == [
        "endpoints[3].id: 1 is a duplicate or not in 1..65535",
        "endpoints[4].id: 70000 is a duplicate or not in 1..65535",
        "rules[0].id: 0 is not in 1..4294967295",
        "rules[0].direction: 'up' is not 'in' or 'out'",
        "rules[0].proto: 'sctp' is not one of icmp, tcp, udp, icmpv6, any",
        "rules[0].action: 'maybe' is not 'allow' or 'deny'",
        "rules[1].applies_to: unknown endpoints [9]",
        "rules[1].ports: (90, 80) is not a range (low, high) within 0..65535",
        "rules[2].applies_to: empty",
        "rules[2].ports: need a protocol (tcp, udp, icmp or icmpv6)",
        "rules[3].ports: (0, 256) is not a range (low, high) within 0..255",
        "default[8]: unknown endpoint",
        "default[8].in: 'drop' is not a direction and an action",
    ]
    with pytest.raises(ValueError):
        Cidr("10.0.0.1/8")  # host bits set


def test_key_and_value_sizes() -> None:
    assert [ctypes.sizeof(t) for t in (IpcacheKey, IpcacheValue, PolicyKey, PolicyValue)] == [22, 4, 16, 16]


def test_policy_key_bytes() -> None:
    key = lpm.policy_key(
        endpoint=0x0102, direction=1, proto=6, identity=0x0A0B0C0D, port=443, port_bits=12, gen=1
    )
    raw = bytes(key)
    assert raw[:4] == struct.pack("=I", 80 + 12)  # prefixlen: host order
    assert raw[4:] == bytes(
        [1, 1, 6, 0, 0x01, 0x02, 0x0A, 0x0B, 0x0C, 0x0D, 0x01, 0xBB]
    )  # network order, port last
    assert (key.endpoint, key.identity, key.port) == (0x0102, 0x0A0B0C0D, 443)


def test_ipcache_key_bytes() -> None:
    v4 = bytes(lpm.ipcache_key(ip_network("10.1.0.0/16")))
    assert v4[:4] == struct.pack("=I", 16 + 16)
    assert v4[4:] == bytes([0, 4, 10, 1]) + bytes(14)
    v6 = lpm.ipcache_lookup_key(ip_network("2001:db8::1/128").network_address, gen=1)
    assert (v6.prefixlen, v6.gen, v6.family) == (16 + 128, 1, 6)
    assert bytes(v6.addr) == ip_network("2001:db8::1/128").network_address.packed
    assert lpm.ipcache_key(ip_network("0.0.0.0/0")).prefixlen == 16


def test_encode_gives_kernel_pairs() -> None:
    compiled = compile(
        Policy(EPS, (rule(1, Cidr("10.0.0.0/8"), "tcp", (80, 81)),), default={1: {"out": DENY}})
    )
    maps = encode(compiled, gen=1)
    assert {name: len(pairs) for name, pairs in maps.items()} == {"ipcache": 1, "policy": 1, "defaults": 6}
    key, value = maps["policy"][0]
    assert (key.prefixlen, key.gen, key.endpoint, key.direction, key.proto, key.port) == (95, 1, 2, 1, 6, 80)
    assert (value.rule, value.verdict) == (1, 1)
    assert (
        dict((index, byte.value) for index, byte in maps["defaults"])[1 * 2 + 0] == 0
    )  # endpoint 1, out: deny


def test_lpm_trie_semantics() -> None:
    trie = LpmTrie(IpcacheKey)
    for net, ident in [("10.0.0.0/8", 1), ("10.1.0.0/16", 2), ("10.1.2.3/32", 3)]:
        trie.update(lpm.ipcache_key(ip_network(net)), IpcacheValue(ident))
    find = lambda ip: trie.lookup(lpm.ipcache_lookup_key(ip_network(ip).network_address))  # noqa: E731
    assert [
        IpcacheValue.from_buffer_copy(find(ip)).identity for ip in ("10.1.2.3", "10.1.9.9", "10.9.9.9")
    ] == [3, 2, 1]
    assert find("11.0.0.0") is None and find("::a01:203") is None
    sloppy = lpm.ipcache_key(ip_network("10.1.0.0/16"))
    sloppy.addr[3] = 99  # bits past the prefix are ignored, as by the kernel
    trie.update(sloppy, IpcacheValue(7))
    assert len(trie) == 3
    assert IpcacheValue.from_buffer_copy(find("10.1.9.9")).identity == 7
    trie.delete(lpm.ipcache_key(ip_network("10.1.0.0/16")))
    with pytest.raises(KeyError):
        trie.delete(lpm.ipcache_key(ip_network("10.1.0.0/16")))
    assert IpcacheValue.from_buffer_copy(find("10.1.9.9")).identity == 1


def test_rules_for_any_peer_are_one_row_set_not_one_per_identity() -> None:
    """200 host identities and 3 rules for anyone: the 3 rules' rows exist once, under the
    wildcard identity; the specific rules and the wildcard ones meet by rank at lookup."""
    hosts = [f"10.9.{i // 250}.{i % 250 + 1}" for i in range(200)]
    specific = tuple(rule(100 + i, Cidr(f"{ip}/32"), "tcp", (8000, 8999)) for i, ip in enumerate(hosts))
    anyone = (
        rule(1, AnyPeer(), "tcp", (8080, 8080), action=DENY, priority=5),  # beats every host rule
        rule(2, AnyPeer(), "tcp", (1, 1023), action=ALLOW, priority=20),  # loses to none: no overlap
        rule(3, AnyPeer(), "tcp", (8000, 8999), action=ALLOW, priority=30),  # loses to the host rules
    )
    compiled = compile(Policy(EPS, specific + anyone))
    alone = compile(Policy(EPS, specific))
    wildcard_rows = [p for p in compiled.policy if p.identity == lpm.WILDCARD]
    assert len(compiled.policy) == len(alone.policy) + len(wildcard_rows)
    assert len(wildcard_rows) < 40, "3 rules' port covers, once"
    check(
        Policy(EPS, specific + anyone),
        [
            ((2, "in", hosts[7], "tcp", 8080), Verdict(DENY, 1)),
            ((2, "in", hosts[7], "tcp", 8081), Verdict(ALLOW, 107)),
            ((2, "in", hosts[7], "tcp", 443), Verdict(ALLOW, 2)),
            ((2, "in", "192.0.2.1", "tcp", 8081), Verdict(ALLOW, 3)),
            ((2, "in", "192.0.2.1", "tcp", 9000), Verdict(DENY)),
        ],
    )
