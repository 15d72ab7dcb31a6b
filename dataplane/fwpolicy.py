"""Policy of the NIC firewall: the rules model, its reference evaluator, and the compiler to map contents.

`evaluate` is the specification: a linear scan of the rules in precedence order. `compile` turns
the same policy into the contents of the program's maps, whose lookup costs the same for 10 rules
as for 10,000 (two LPM lookups and, on a miss, one array read):

    peer IP ──ipcache (LPM)──> identity ──policy (LPM: endpoint, direction, proto, identity, port)──>
                                          (verdict, rule), or on a miss defaults[endpoint][direction]

An identity is a class of addresses matched by exactly the same peer selectors (rule CIDRs and
the groups of their endpoints' addresses); identity 0 is "world", matched by no selector, and is
what an ipcache miss gives. Rules for any peer are compiled once, under the wildcard identity,
not once per identity: a policy with a few such rules and thousands of identities stays small.
Map layouts, encoding and updates (`diff`) are in `dataplane.lpm`. Directions are seen from the
endpoint: "in" towards it, "out" from it. `port` means the destination port (for ICMP, the
message type).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from dataplane import lpm
from dataplane.lpm import (
    ACTIONS,
    DIRECTIONS,
    KEY_PROTOS,
    PROTO_OTHER,
    PROTOCOLS,
    Compiled,
    Diff,
    PolicyPrefix,
    Verdict,
    diff,
    encode,
    policy_proto,
    proto_number,
)

__all__ = [
    "AnyPeer",
    "Cidr",
    "Compiled",
    "Diff",
    "Endpoint",
    "Group",
    "Policy",
    "PolicyError",
    "Rule",
    "Verdict",
    "compile",
    "diff",
    "encode",
    "evaluate",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
MAX_ENDPOINT = 0xFFFF
MAX_RULE = 0xFFFFFFFF


class PolicyError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid firewall policy:\n  " + "\n  ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Cidr:
    network: IPNetwork

    def __post_init__(self) -> None:
        object.__setattr__(self, "network", ip_network(self.network))  # host bits set: ValueError


@dataclass(frozen=True)
class Group:
    name: str


@dataclass(frozen=True)
class AnyPeer:
    pass


Selector = Cidr | Group
Peer = Cidr | Group | AnyPeer


@dataclass(frozen=True)
class Endpoint:
    """A VM NIC with a firewall."""

    id: int
    ips: tuple[IPAddress, ...] = ()
    groups: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ips", tuple(ip_address(ip) for ip in self.ips))
        object.__setattr__(self, "groups", frozenset(self.groups))


@dataclass(frozen=True)
class Rule:
    """`ports` is an inclusive range (ICMP: of types); None means all. Lower `priority` wins."""

    id: int
    applies_to: frozenset[int]
    direction: str
    peer: Peer
    proto: str = "any"
    ports: tuple[int, int] | None = None
    action: str = "allow"
    priority: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "applies_to", frozenset(self.applies_to))

    @property
    def precedence(self) -> tuple[int, int, int]:
        """Sort key: priority, then deny before allow, then rule id (only to name one rule)."""
        return self.priority, ACTIONS[self.action], self.id

    @property
    def port_range(self) -> tuple[int, int]:
        return self.ports if self.ports is not None else (0, (1 << lpm.PORT_BITS) - 1)


@dataclass(frozen=True)
class Policy:
    """Endpoints, rules and per-endpoint defaults ({endpoint id: {"in"|"out": action}}).

    Without an explicit default an endpoint with any rule denies, one without rules allows.
    Construction validates and raises PolicyError with every problem found.
    """

    endpoints: tuple[Endpoint, ...] = ()
    rules: tuple[Rule, ...] = ()
    default: Mapping[int, Mapping[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoints", tuple(self.endpoints))
        object.__setattr__(self, "rules", tuple(self.rules))
        errors = _errors(self)
        if errors:
            raise PolicyError(errors)

    @cached_property
    def ranked_rules(self) -> tuple[Rule, ...]:
        return tuple(sorted(self.rules, key=lambda rule: rule.precedence))

    @cached_property
    def _with_rules(self) -> frozenset[int]:
        return frozenset(ep for rule in self.rules for ep in rule.applies_to)

    @cached_property
    def _groups_by_ip(self) -> dict[IPAddress, frozenset[str]]:
        groups: dict[IPAddress, frozenset[str]] = defaultdict(frozenset)
        for ep in self.endpoints:
            for ip in ep.ips:
                groups[ip] |= ep.groups
        return dict(groups)

    def groups_of(self, ip: IPAddress) -> frozenset[str]:
        """The groups whose current members include an endpoint with address `ip`."""
        return self._groups_by_ip.get(ip, frozenset())

    def default_action(self, endpoint: int, direction: str) -> str:
        explicit = self.default.get(endpoint, {}).get(direction)
        if explicit is not None:
            return explicit
        return "deny" if endpoint in self._with_rules else "allow"


def _rule_errors(rule: Rule, endpoint_ids: set[int]) -> list[str]:
    errors = []
    if not rule.applies_to:
        errors.append("applies_to: empty")
    if unknown := sorted(rule.applies_to - endpoint_ids):
        errors.append(f"applies_to: unknown endpoints {unknown}")
    if rule.direction not in DIRECTIONS:
        errors.append(f"direction: {rule.direction!r} is not 'in' or 'out'")
    if not isinstance(rule.peer, Cidr | Group | AnyPeer):
        errors.append(f"peer: {rule.peer!r} is not a Cidr, Group or AnyPeer")
    if rule.proto not in (*PROTOCOLS, "any"):
        errors.append(f"proto: {rule.proto!r} is not one of {', '.join((*PROTOCOLS, 'any'))}")
    if rule.action not in ACTIONS:
        errors.append(f"action: {rule.action!r} is not 'allow' or 'deny'")
    if not isinstance(rule.priority, int) or isinstance(rule.priority, bool):
        errors.append(f"priority: {rule.priority!r} is not an integer")
    elif not 0 <= rule.priority <= lpm.MAX_PRIORITY:
        errors.append(f"priority: {rule.priority} is not in 0..{lpm.MAX_PRIORITY}")
    if rule.ports is not None:
        top = 255 if rule.proto in ("icmp", "icmpv6") else 65535
        if rule.proto == "any":
            errors.append("ports: need a protocol (tcp, udp, icmp or icmpv6)")
        elif not (
            isinstance(rule.ports, tuple)
            and len(rule.ports) == 2
            and 0 <= rule.ports[0] <= rule.ports[1] <= top
        ):
            errors.append(f"ports: {rule.ports!r} is not a range (low, high) within 0..{top}")
    return errors


def _errors(policy: Policy) -> list[str]:
    errors, ids = [], set()
    for i, ep in enumerate(policy.endpoints):
        if not 1 <= ep.id <= MAX_ENDPOINT or ep.id in ids:
            errors.append(f"endpoints[{i}].id: {ep.id} is a duplicate or not in 1..{MAX_ENDPOINT}")
        ids.add(ep.id)
    for i, rule in enumerate(policy.rules):
        # one user rule with several peers or port ranges becomes several rows sharing its id
        if not 1 <= rule.id <= MAX_RULE:
            errors.append(f"rules[{i}].id: {rule.id} is not in 1..{MAX_RULE}")
        errors += [f"rules[{i}].{error}" for error in _rule_errors(rule, ids)]
    for ep, by_direction in policy.default.items():
        if ep not in ids:
            errors.append(f"default[{ep}]: unknown endpoint")
        for direction, action in by_direction.items():
            if direction not in DIRECTIONS or action not in ACTIONS:
                errors.append(f"default[{ep}].{direction}: {action!r} is not a direction and an action")
    return errors


def _matches(rule: Rule, ip: IPAddress, groups: frozenset[str], proto: int, port: int) -> bool:
    if rule.proto != "any" and PROTOCOLS[rule.proto] != proto:
        return False
    lo, hi = rule.port_range
    if not lo <= port <= hi:
        return False
    peer = rule.peer
    if isinstance(peer, Cidr):
        return ip.version == peer.network.version and ip in peer.network
    return isinstance(peer, AnyPeer) or peer.name in groups


def evaluate(
    policy: Policy,
    endpoint_id: int,
    direction: str,
    peer_ip: IPAddress | str,
    proto: int | str,
    port: int = 0,
) -> Verdict:
    """The verdict by the first applicable rule in precedence order: the specification.

    An endpoint the policy does not know is denied (a port without a firewall passes nothing).
    """
    ip, number = ip_address(peer_ip), proto_number(proto)
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} is not in 0..65535")
    # a named protocol is one of the packet's IP version: ICMP of the other version is "other"
    number = policy_proto(ip.version, number)
    port = 0 if number == PROTO_OTHER else port
    groups = policy.groups_of(ip)
    for rule in policy.ranked_rules:
        applies = endpoint_id in rule.applies_to and rule.direction == direction
        if applies and _matches(rule, ip, groups, number, port):
            return Verdict(rule.action, rule.id)
    if all(ep.id != endpoint_id for ep in policy.endpoints):
        return Verdict("deny")
    return Verdict(policy.default_action(endpoint_id, direction))


def compile(policy: Policy, prev: Compiled | None = None) -> Compiled:
    """The map contents for `policy`. With `prev`, identities of unchanged classes keep their numbers
    and new classes get numbers `prev` does not use, as `diff` needs."""
    selectors = {rule.peer for rule in policy.rules if not isinstance(rule.peer, AnyPeer)}
    classes = _classes(policy, selectors)
    numbers = _number(set(classes.values()), prev)
    identities = {number: selset for selset, number in numbers.items()}
    defaults = {
        (ep.id, direction): policy.default_action(ep.id, direction)
        for ep in policy.endpoints
        for direction in DIRECTIONS
    }
    return Compiled(
        ipcache={net: numbers[selset] for net, selset in classes.items()},
        identities=identities,
        policy=_policy_rows(policy, identities),
        defaults=defaults,
    )


_Key = tuple[int, int, int]  # (version, prefix length, network address as int)


def _key(net: IPNetwork) -> _Key:
    return net.version, net.prefixlen, int(net.network_address)


def _ancestors(key: _Key, present: Mapping[_Key, object], lengths: Iterable[int]) -> list[_Key]:
    """Keys in `present` covering `key` (itself included), tried at the given prefix lengths."""
    version, plen, addr = key
    width = 32 if version == 4 else 128
    found = []
    for length in lengths:
        if length <= plen:
            candidate = (version, length, addr >> (width - length) << (width - length))
            if candidate in present:
                found.append(candidate)
    return found


def _classes(policy: Policy, selectors: set[Selector]) -> dict[IPNetwork, frozenset[Selector]]:
    """The selector set of every rule CIDR and of every address of a member of a group in a rule.

    Longest-prefix semantics make each prefix stand for the addresses it covers minus its longer
    prefixes; those addresses are matched by the CIDRs that contain the prefix, and (for a
    member's address) by its groups. No entry is redundant: a CIDR's set has the CIDR, which its
    shorter prefixes lack; a member's has groups, which no CIDR's set has.
    """
    cidrs: dict[_Key, Selector] = {_key(s.network): s for s in selectors if isinstance(s, Cidr)}
    used_groups = {s.name for s in selectors if isinstance(s, Group)}
    hosts: dict[_Key, set[Selector]] = defaultdict(set)
    for ep in policy.endpoints:
        for ip in ep.ips:
            hosts[_key(ip_network(ip))] |= {Group(name) for name in ep.groups & used_groups}
    lengths = sorted({plen for _, plen, _ in cidrs})
    classes = {}
    for key in cidrs.keys() | {key for key, groups in hosts.items() if groups}:
        selset = {cidrs[k] for k in _ancestors(key, cidrs, lengths)} | hosts.get(key, set())
        version, plen, addr = key
        classes[(IPv4Network if version == 4 else IPv6Network)((addr, plen))] = frozenset(selset)
    return classes


def _canonical(selset: frozenset[Selector]) -> tuple:
    return tuple(sorted((0, *_key(s.network)) if isinstance(s, Cidr) else (1, s.name) for s in selset))


def _number(selsets: set[frozenset[Selector]], prev: Compiled | None) -> dict[frozenset[Selector], int]:
    taken = set(prev.identities) if prev else set()
    known = {selset: number for number, selset in prev.identities.items()} if prev else {}
    numbers = {frozenset(): 0}
    numbers |= {selset: known[selset] for selset in selsets if selset in known}
    candidate = 1
    for selset in sorted(selsets - numbers.keys(), key=_canonical):
        while candidate in taken:
            candidate += 1
        numbers[selset] = candidate
        candidate += 1
    return numbers


def _row_verdict(rule: Rule) -> Verdict:
    return Verdict(rule.action, rule.id, lpm.rank_of(rule.priority, rule.action, rule.id))


def _policy_rows(
    policy: Policy, identities: Mapping[int, frozenset[Selector]]
) -> dict[PolicyPrefix, Verdict]:
    """For every (endpoint, direction, proto, identity) some rule reaches, the port space
    partitioned by winning rule, each part covered by aligned port prefixes."""
    by_selector: dict[Selector, list[int]] = defaultdict(list)
    for identity, selset in sorted(identities.items()):
        for selector in selset:
            by_selector[selector].append(identity)
    buckets: dict[tuple[int, int, int, int], list[Rule]] = defaultdict(list)
    for rule in policy.ranked_rules:
        reached = [lpm.WILDCARD] if isinstance(rule.peer, AnyPeer) else by_selector.get(rule.peer, [])
        protos = KEY_PROTOS if rule.proto == "any" else (PROTOCOLS[rule.proto],)
        for ep in sorted(rule.applies_to):
            for proto in protos:
                for identity in reached:
                    buckets[ep, DIRECTIONS[rule.direction], proto, identity].append(rule)
    rows = {}
    for (ep, direction, proto, identity), rules in buckets.items():
        ranges = [(*rule.port_range, _row_verdict(rule)) for rule in rules]
        for lo, hi, verdict in lpm.paint(ranges):
            for base, bits in lpm.range_cover(lo, hi):
                rows[PolicyPrefix(ep, direction, proto, identity, base, bits)] = verdict
    return rows
