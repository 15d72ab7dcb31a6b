"""Random small firewall policies (hypothesis) and the address pools they draw from, shared by the
property tests of the compiler (tests/unit) and of the real program (tests/bpf). Pure: no kernel.

The pools are small on purpose: CIDRs that nest and border each other, hosts inside and outside
them, ports and ICMP types at the edges of ranges, so random rules overlap often.
"""

from __future__ import annotations

import random
from ipaddress import ip_address

from hypothesis import strategies as st

from dataplane.fwpolicy import AnyPeer, Cidr, Endpoint, Group, Policy, Rule

CIDRS = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.0/25",
    "10.1.2.4/31",
    "10.1.2.3/32",
    "10.2.0.0/16",
    "192.168.0.0/24",
    "::/0",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "2001:db8:1::5/128",
]
HOSTS = [
    "10.1.2.3",
    "10.1.2.4",
    "10.1.2.5",
    "10.1.2.200",
    "10.2.3.4",
    "192.168.0.7",
    "2001:db8:1::5",
    "2001:db8:2::9",
]
OTHER_IPS = [
    "10.0.0.0",
    "10.255.255.255",
    "10.1.2.127",
    "10.1.2.128",
    "11.0.0.1",
    "192.168.0.255",
    "2001:db9::1",
    "::1",
    "2001:db8:1:ffff:ffff:ffff:ffff:ffff",
]
GROUPS = ["web", "app", "db"]
PORTS = [0, 1, 22, 79, 80, 81, 443, 1023, 1024, 5000, 65534, 65535]
ICMP_TYPES = [0, 3, 8, 9, 11, 13, 14, 15, 128, 129, 130, 135, 143, 200, 255]
DIRECTIONS = ["in", "out"]


@st.composite
def port_ranges(draw: st.DrawFn, proto: str) -> tuple[int, int] | None:
    if proto == "any" or draw(st.booleans()):
        return None
    icmp = proto.startswith("icmp")
    values, top = (ICMP_TYPES, 255) if icmp else (PORTS, 65535)
    a, b = (draw(st.sampled_from(values) | st.integers(0, top)) for _ in range(2))
    return min(a, b), max(a, b)


@st.composite
def rules(draw: st.DrawFn, rid: int, endpoint_ids: list[int]) -> Rule:
    proto = draw(st.sampled_from(["tcp", "udp", "icmp", "icmpv6", "any"]))
    return Rule(
        id=rid,
        applies_to=draw(st.sets(st.sampled_from(endpoint_ids), min_size=1, max_size=2)),
        direction=draw(st.sampled_from(DIRECTIONS)),
        peer=draw(
            st.sampled_from(CIDRS).map(Cidr)
            | st.sampled_from([*GROUPS, "nobody"]).map(Group)
            | st.just(AnyPeer())
        ),
        proto=proto,
        ports=draw(port_ranges(proto)),
        action=draw(st.sampled_from(["allow", "deny"])),
        priority=draw(st.integers(0, 3)),
    )


@st.composite
def endpoints(draw: st.DrawFn, ids: list[int]) -> tuple[Endpoint, ...]:
    return tuple(
        Endpoint(
            i,
            tuple(draw(st.lists(st.sampled_from(HOSTS), max_size=2, unique=True))),
            draw(st.frozensets(st.sampled_from(GROUPS), max_size=2)),
        )
        for i in ids
    )


@st.composite
def policies(draw: st.DrawFn, ids: list[int] | None = None) -> Policy:
    ids = ids or draw(st.lists(st.integers(1, 6), min_size=1, max_size=4, unique=True))
    rule_ids = draw(st.lists(st.integers(1, 40), max_size=12))  # repeats: one user rule, several rows
    default = draw(
        st.dictionaries(
            st.sampled_from(ids),
            st.dictionaries(st.sampled_from(DIRECTIONS), st.sampled_from(["allow", "deny"])),
        )
    )
    return Policy(draw(endpoints(ids)), tuple(draw(rules(rid, ids)) for rid in rule_ids), default)


def peer_address(policy: Policy, peer: object, rnd: random.Random) -> str:
    """An address `peer` matches (or, for an empty group, any address of the pool)."""
    if isinstance(peer, Cidr):
        net = peer.network
        inside = [ip for ip in HOSTS + OTHER_IPS if ip_address(ip) in net]
        offset = rnd.getrandbits(net.max_prefixlen - net.prefixlen)
        return rnd.choice([*inside, str(net.network_address), str(net.broadcast_address), str(net[offset])])
    if isinstance(peer, Group):
        members = [str(ip) for ep in policy.endpoints if peer.name in ep.groups for ip in ep.ips]
        return rnd.choice(members or HOSTS)
    return rnd.choice(HOSTS + OTHER_IPS)
