"""Build the NIC firewall's part of the model: security groups, rules, connection tracking.

Run by :class:`~netns_lab.topology.convert.Converter` on data whose structure the schema has accepted; a
group or a rule with a structural error is skipped. References are resolved here, against the
raw data, as VLAN references are: only the raw data has their exact place (``peer[2]``) and the
NICs of a VM that the model leaves out for another error. A group or a rule with a reference that
does not resolve or a value that does not parse is reported and left out of the model; what the
model can still hold (a rule id used twice, a member listed twice, a rule that applies to no NIC,
an ICMP rule for the other IP version) is reported and kept.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from ipaddress import ip_interface, ip_network
from typing import Any

from netns_lab.topology.errors import Issue, listing, unknown
from netns_lab.topology.limits import CT_SIZE
from netns_lab.topology.model import FirewallSettings, FwRule, IpNet, PeerSpec, SecurityGroup, Topology

Broken = set[tuple[str, str]]
RULES = "firewall.rules"  # the key of a broken rule in ``Broken`` is (RULES, its index)
CONNECTIONS = {  # YAML key -> FirewallSettings field
    "quota": "ct_quota",
    "inbound_quota": "ct_quota_in",
    "peer_quota": "ct_quota_peer",
    "tcp_timeout": "tcp_timeout",
    "tcp_open_timeout": "tcp_open_timeout",
    "tcp_close_timeout": "tcp_close_timeout",
    "sweep_interval": "sweep_interval",
    "udp_timeout": "udp_timeout",
    "icmp_timeout": "icmp_timeout",
    "frag_timeout": "frag_timeout",
}
_NIC_REF = re.compile(r"([a-z][a-z0-9]*)(?:\.eth([0-9]+))?")
_LIMITS = {
    "tcp": (65535, ""),
    "udp": (65535, ""),
    "icmp": (255, "ICMP type "),
    "icmpv6": (255, "ICMPv6 type "),
}
_FAMILY = {"icmp": (4, "icmpv6"), "icmpv6": (6, "icmp")}  # proto -> (its IP version, the other proto)


def parse_prefix(text: str) -> IpNet | str:
    """A prefix without host bits (an address alone: /32 or /128), or why ``text`` is not one."""
    try:
        network = ip_network(text, strict=False)
    except ValueError:
        return f"{text!r} is not an IP address or prefix, like 10.30.0.0/24 or 2001:db8::/64"
    if network.network_address != ip_interface(text).ip:
        return f"{text} has host bits set (the prefix is {network})"
    return network


class FirewallConverter:
    """Turns ``security_groups`` and ``firewall`` into the model, collecting what is wrong."""

    def __init__(self, source: str, data: dict[str, Any], broken: Broken) -> None:
        self.source = source
        self.broken = broken
        self.issues: list[Issue] = []
        self._failures = 0
        self.given_limits: frozenset[str] = frozenset()  # connection settings the file gives
        groups, vms = data.get("security_groups"), data.get("vms")
        self.raw_groups: dict[str, Any] = groups if isinstance(groups, dict) else {}
        # Declared names (VMs with their NIC counts); None for a malformed section, which may
        # declare any name.
        self.groups: tuple[str, ...] | None = tuple(self.raw_groups) if _mapping(groups) else None
        self.vm_nics: dict[str, int | None] | None = None
        if _mapping(vms):
            self.vm_nics = {name: _nic_count(raw) for name, raw in (vms or {}).items()}

    # -- security groups -------------------------------------------------------------------------
    def security_groups(self) -> tuple[SecurityGroup, ...]:
        built = []
        for name, members in self.raw_groups.items():
            if ("security_groups", name) not in self.broken:
                before = self._failures
                group = self.group(name, members or [])
                if self._failures == before:
                    built.append(group)
        return tuple(built)

    def group(self, name: str, raw: list[str]) -> SecurityGroup:
        members: dict[int, tuple[str, int | None]] = {}  # by index in the list
        for index, text in enumerate(raw):
            vm, nic = _member(text)
            if self.vm_ref(f"security_groups.{name}[{index}]", vm, nic):
                self._duplicate_member(name, raw, index, members)
                members[index] = (vm, nic)
        return SecurityGroup(name, tuple(members.values()))

    def _duplicate_member(
        self, group: str, raw: list[str], index: int, members: dict[int, tuple[str, int | None]]
    ) -> None:
        """``web1`` twice, or ``web1`` and ``web1.eth0``: the NIC is listed twice."""
        path, text = f"security_groups.{group}[{index}]", raw[index]
        vm, nic = _member(text)
        for first, (other_vm, other_nic) in members.items():
            if other_vm != vm or (nic is not None and other_nic is not None and nic != other_nic):
                continue
            if other_nic == nic:
                self._report(path, f"{text!r} is already listed at {group}[{first}]")
            elif other_nic is None:
                self._report(path, f"{text!r} is already a member through {vm!r} at {group}[{first}]")
            else:
                self._report(path, f"{text!r} includes {raw[first]!r}, already listed at {group}[{first}]")
            return

    # -- rules -----------------------------------------------------------------------------------
    def settings(self, raw: Any) -> FirewallSettings:
        raw = raw if isinstance(raw, dict) else {}
        connections = raw.get("connections")
        connections = connections if isinstance(connections, dict) else {}
        limits = {
            field: int(value) for key, field in CONNECTIONS.items() if _whole(value := connections.get(key))
        }
        if "ct_quota" in limits:  # a peer may hold what a VM may open, unless it is given
            limits.setdefault("ct_quota_peer", limits["ct_quota"])
        self.given_limits = frozenset(limits)
        return FirewallSettings(rules=self.rules(raw.get("rules")), **limits)

    def rules(self, raw: Any) -> tuple[FwRule, ...]:
        raw = raw if isinstance(raw, list) else []
        built: list[FwRule] = []
        first: dict[int, int] = {}
        for index, item in enumerate(raw):
            if not isinstance(item, dict) or (RULES, str(index)) in self.broken:
                continue
            rule_id = int(item["id"])
            if rule_id in first:
                self._report(
                    f"{RULES}[{index}].id", f"{rule_id} is already the id of rules[{first[rule_id]}]"
                )
            first.setdefault(rule_id, index)
            before = self._failures
            rule = self.rule(f"{RULES}[{index}]", item)
            if self._failures == before:
                built.append(rule)
        return tuple(built)

    def rule(self, path: str, raw: dict[str, Any]) -> FwRule:
        before = self._failures
        proto = raw.get("proto", "any")
        apply = self.specs(f"{path}.apply", raw["apply"], proto, target=True)
        rule = FwRule(
            id=int(raw["id"]),
            apply=apply,
            direction=raw["direction"],
            peers=self.specs(f"{path}.peer", raw["peer"], proto, target=False),
            proto=proto,
            ports=self.ports(f"{path}.ports", raw.get("ports"), proto),
            action=raw["action"],
            priority=int(raw.get("priority", 100)),
            description=raw.get("description", ""),
        )
        empty = self._empty_groups(apply) if self._failures == before else []
        if empty:
            have = "has" if len(empty) == 1 else "have"
            where = f"group{'s' if len(empty) > 1 else ''} {', '.join(map(repr, empty))}"
            self._report(f"{path}.apply", f"rule {rule.id} applies to no NIC ({where} {have} no members)")
        return rule

    def _empty_groups(self, apply: tuple[PeerSpec, ...]) -> list[str]:
        """The groups of a rule that applies only to groups without members, else nothing."""
        names = list(dict.fromkeys(str(spec.value) for spec in apply if spec.kind == "group"))
        if any(spec.kind != "group" for spec in apply) or not set(names) <= set(self.raw_groups):
            return []  # a VM has NICs; a malformed section may hold anything
        if any(("security_groups", name) in self.broken or self.raw_groups[name] for name in names):
            return []  # a broken group may have members
        return names

    def specs(self, path: str, raw: str | list[str], proto: str, target: bool) -> tuple[PeerSpec, ...]:
        """The targets of ``apply`` or the peers of ``peer``: one, or a list of them."""
        items = [(path, raw)] if isinstance(raw, str) else [(f"{path}[{i}]", t) for i, t in enumerate(raw)]
        specs = [self.spec(where, text, proto, target) for where, text in items]
        return tuple(spec for spec in specs if spec is not None)

    def spec(self, path: str, text: str, proto: str, target: bool) -> PeerSpec | None:
        if text.startswith("vm:"):
            vm, nic = _member(text[3:])
            return PeerSpec("vm", vm, nic) if self.vm_ref(path, vm, nic) else None
        if text.startswith("group:") or target:
            name = text.removeprefix("group:")
            return PeerSpec("group", name) if self.group_ref(path, name) else None
        if text == "any":
            return PeerSpec("any")
        network = parse_prefix(text)
        if isinstance(network, str):
            return self._fail(path, network)
        if proto in _FAMILY and network.version != _FAMILY[proto][0]:
            kind = "address" if network.num_addresses == 1 else "prefix"
            self._report(
                path,
                f"{text} is an IPv{network.version} {kind}, which proto {proto} never matches "
                f"(use {_FAMILY[proto][1]})",
            )
        return PeerSpec("cidr", network)

    def group_ref(self, path: str, name: str) -> bool:
        if self.groups is None or name in self.groups:
            return True
        hint = f"vm:{name}" if self.vm_nics and name in self.vm_nics else None
        self._fail(path, unknown("security group", "security groups", name, self.groups, hint))
        return False

    def vm_ref(self, path: str, vm: str, nic: int | None) -> bool:
        """Is ``vm`` declared, and ``nic`` one of its NICs? A VM whose NICs are unknown has them all."""
        if self.vm_nics is None:
            return True
        if vm not in self.vm_nics:
            self._fail(path, unknown("VM", "VMs", vm, self.vm_nics))
            return False
        count = self.vm_nics[vm]
        if nic is not None and count is not None and nic >= count:
            nics = listing("NICs", vm, [f"eth{i}" for i in range(count)])
            self._fail(path, f"{vm} has no NIC eth{nic} ({nics})")
            return False
        return True

    # -- ports -----------------------------------------------------------------------------------
    def ports(self, path: str, raw: Any, proto: str) -> tuple[tuple[int, int], ...]:
        if raw is None:
            return ()
        if proto == "any":
            self._fail(path, "ports need proto tcp, udp, icmp or icmpv6 (proto is any)")
            return ()
        items = [(f"{path}[{i}]", r) for i, r in enumerate(raw)] if isinstance(raw, list) else [(path, raw)]
        ranges = [self.port_range(where, item, proto) for where, item in items]
        return tuple(r for r in ranges if r is not None)

    def port_range(self, path: str, raw: int | float | str, proto: str) -> tuple[int, int] | None:
        low, _, high = str(raw).partition("-") if isinstance(raw, str) else (str(int(raw)), "", "")
        first, last = int(low), int(high or low)
        limit, noun = _LIMITS[proto]
        for value in (first, last):
            if value > limit:
                return self._fail(path, f"{noun}{value} is not in 0..{limit}")
        if first > last:
            return self._fail(path, f"{raw} is backwards: write {last}-{first}")
        return first, last

    def _fail(self, path: str, reason: str) -> None:
        """A value that does not parse or a reference that does not resolve: the object is left out."""
        self._failures += 1
        self.issues.append(Issue(self.source, path, reason))

    def _report(self, path: str, reason: str) -> None:
        self.issues.append(Issue(self.source, path, reason))


def _member(text: str) -> tuple[str, int | None]:
    """``web1`` -> ("web1", None), ``app1.eth0`` -> ("app1", 0); the schema has checked the form."""
    match = _NIC_REF.fullmatch(text)
    if match is None:  # pragma: no cover - the schema's pattern is the same
        raise ValueError(text)
    return match[1], None if match[2] is None else int(match[2])


def _whole(value: Any) -> bool:
    """An integer, or a float the schema's ``integer`` admits (10.0); not a boolean, inf or NaN."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def _mapping(section: Any) -> bool:
    """A section that is a mapping or absent (no names), not a malformed one."""
    return section is None or isinstance(section, dict)


def _nic_count(raw: Any) -> int | None:
    """How many NICs a VM declares; None when that is not known (its ``nics`` is broken)."""
    nics = raw.get("nics") if isinstance(raw, dict) else None
    return len(nics) if isinstance(nics, list) else None


QUOTAS = ("ct_quota", "ct_quota_in")


def fit_quotas(topo: Topology, given: frozenset[str]) -> Topology:
    """The topology with the quotas the file leaves to their defaults lowered, where needed, so
    that the shares of the busiest host's firewalled NICs fit its connection table: a lab with
    many firewalled VMs on a host works without tuning, and one VM still cannot leave another
    without room. Quotas the file gives are kept (the validator reports them if they do not fit)."""
    fw = topo.firewall
    hosts = Counter(topo.vm(vm).host for vm, _ in topo.firewalled_nics())
    most = max(hosts.values(), default=0)
    free = [q for q in QUOTAS if q not in given]
    if not most or not free or most * (fw.ct_quota + fw.ct_quota_in) <= CT_SIZE:
        return topo
    each = (CT_SIZE // most - sum(getattr(fw, q) for q in QUOTAS if q in given)) // len(free)
    if each < 1:
        return topo
    fitted = {q: min(getattr(fw, q), each) for q in free}
    if "ct_quota_peer" not in given:
        fitted["ct_quota_peer"] = fitted.get("ct_quota", fw.ct_quota)
    return replace(topo, firewall=replace(fw, **fitted))
