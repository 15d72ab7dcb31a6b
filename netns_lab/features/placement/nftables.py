"""The lab's firewall policy as an nftables ruleset (pure): what a subnet-level firewall VM or a
physical appliance enforces for the VMs placed behind it.

The input is the same `dataplane.fwpolicy.Policy` the NIC firewall compiles (built by
`features.firewall.plan.policy` from the rules and security groups), so both read one policy with
one meaning: per endpoint and direction, the first rule in precedence order decides, and an
endpoint with rules denies everything else, both ways; replies of an allowed flow pass.

A forwarded packet meets the source's "out" chain, then the destination's "in" chain, each
ending in a counted default deny; an allowing rule `return`s to the next check, a denying one
drops. Traffic of VMs that are not placed here passes (their own placement filters it):

    forward: established/related accept, invalid drop,
             saddr of endpoint E -> jump E_out, daddr of endpoint E -> jump E_in, accept
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from ipaddress import IPv4Address, IPv4Network

from dataplane import fwpolicy

TABLE = "nlab"  # the one table of an instance: replaced as a whole, atomically, by every change
ICMP = {
    "icmp": ("meta nfproto ipv4 meta l4proto icmp", "icmp type"),
    "icmpv6": ("meta l4proto ipv6-icmp", "icmpv6 type"),
}


def ruleset(policy: fwpolicy.Policy, labels: Mapping[int, str], instance: str) -> str:
    """`nft -f` input that replaces table `inet nlab` with `policy`; `labels`: endpoint id ->
    name (vm.ethN) for the comments; `instance`: the node, named in the deny counters."""
    lines = [
        f"table inet {TABLE}",  # declared first so that the delete never fails: one transaction
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        "    ct state established,related accept",
        '    ct state invalid counter drop comment "invalid"',
        *(f"    {line}" for line in _dispatch(policy)),
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        '    iif "lo" accept',
        "    ct state established,related accept",
        "    meta l4proto { icmp, ipv6-icmp } accept",
        f'    counter comment "denied to {instance}"',
        "  }",
    ]
    for ep in policy.endpoints:
        for direction in ("out", "in"):
            lines += [f"  chain {_chain(ep.id, direction)} {{"]
            lines += [f"    {line}" for line in _chain_rules(policy, ep.id, direction)]
            label = labels.get(ep.id, str(ep.id))
            lines += [f'    counter drop comment "default deny {label} {direction} by {instance}"', "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _chain(endpoint: int, direction: str) -> str:
    return f"ep{endpoint}_{direction}"


def _family(addr: object) -> str:
    return "ip" if isinstance(addr, IPv4Address | IPv4Network) else "ip6"


def _dispatch(policy: fwpolicy.Policy) -> Iterator[str]:
    for ep in policy.endpoints:
        for side, direction in (("saddr", "out"), ("daddr", "in")):
            for family in ("ip", "ip6"):
                addrs = [str(a) for a in ep.ips if _family(a) == family]
                if addrs:
                    yield f"{family} {side} {_set(addrs)} jump {_chain(ep.id, direction)}"


def _chain_rules(policy: fwpolicy.Policy, endpoint: int, direction: str) -> Iterator[str]:
    side = "daddr" if direction == "out" else "saddr"
    for rule in policy.ranked_rules:
        if endpoint not in rule.applies_to or rule.direction != direction:
            continue
        match = []
        if isinstance(rule.peer, fwpolicy.Cidr):
            match.append(f"{_family(rule.peer.network)} {side} {rule.peer.network}")
        elif not isinstance(rule.peer, fwpolicy.AnyPeer):
            raise ValueError(f"rule {rule.id}: peer {rule.peer!r} is not an address (compile groups first)")
        match += _proto(rule)
        verdict = "return" if rule.action == "allow" else "drop"
        yield " ".join([*match, "counter", verdict, f'comment "rule {rule.id}"'])


def _proto(rule: fwpolicy.Rule) -> list[str]:
    if rule.proto == "any":
        return []
    ports = _range(rule.ports)
    if rule.proto in ICMP:
        proto, field = ICMP[rule.proto]
        return [proto, *([f"{field} {ports}"] if ports else [])]
    return [f"meta l4proto {rule.proto}", *([f"th dport {ports}"] if ports else [])]


def _range(ports: tuple[int, int] | None) -> str:
    if ports is None:
        return ""
    lo, hi = ports
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _set(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"
