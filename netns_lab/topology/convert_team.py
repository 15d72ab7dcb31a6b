"""Build a vSwitch's ``team:`` block (NIC teaming) from data the schema has accepted.

The schema checks the shape, the ranges of the counts and that ``beacon_interval`` is a number
with a unit; here the interval is parsed and bounded, the policy and detection names resolved
(with a did-you-mean hint) and the ARP target parsed. A team with a value that does not parse
leaves its host out, like any node with such a value (:mod:`netns_lab.topology.convert`). What
needs the host (members are pNICs, several uplinks need a team) is checked in
:mod:`netns_lab.topology.validate_team`.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, ip_address
from typing import Any

from netns_lab.topology.errors import unknown
from netns_lab.topology.model import Team

POLICIES = ("active-standby",)
DETECTIONS = ("link", "beacon")
MIN_INTERVAL_MS = 10  # finer than a few kernel ticks (HZ=250) would only measure the scheduler
MAX_INTERVAL_MS = 60_000
_INTERVAL = re.compile(r"^([0-9]+)(ms|s)$")

Problem = tuple[str, str]  # (path, reason)


def team(path: str, raw: dict[str, Any] | None) -> tuple[Team | None, list[Problem]]:
    """The team at ``path`` (None when there is no ``team:``), and why its values do not parse."""
    if raw is None:
        return None, []
    problems: list[Problem] = []
    policy = raw.get("policy", Team.policy)
    if policy not in POLICIES:
        problems.append((f"{path}.policy", unknown("policy", "policies", policy, POLICIES)))
    detection = tuple(raw.get("detection", Team.detection))
    first: dict[str, int] = {}
    for index, name in enumerate(detection):
        where = f"{path}.detection[{index}]"
        if name not in DETECTIONS:
            problems.append((where, unknown("detection", "detections", name, DETECTIONS)))
        elif name in first:
            problems.append((where, f"{name!r} is already listed at detection[{first[name]}]"))
        first.setdefault(name, index)
    interval = Team.beacon_interval_ms
    if "beacon_interval" in raw:
        interval = _interval_ms(raw["beacon_interval"])
        if not MIN_INTERVAL_MS <= interval <= MAX_INTERVAL_MS:
            reason = f"{raw['beacon_interval']} is not in {MIN_INTERVAL_MS}ms..{MAX_INTERVAL_MS // 1000}s"
            problems.append((f"{path}.beacon_interval", reason))
    target = _arp_target(raw.get("arp_target"))
    if isinstance(target, str):
        problems.append((f"{path}.arp_target", target))
    built = Team(
        policy=policy,
        failback=raw.get("failback", Team.failback),
        detection=detection,
        beacon_interval_ms=interval,
        beacon_miss=int(raw.get("beacon_miss", Team.beacon_miss)),
        arp_target=target if isinstance(target, IPv4Address) else None,
        announce=int(raw.get("announce", Team.announce)),
    )
    return (None if problems else built), problems


def _interval_ms(text: str) -> int:
    """``100ms`` -> 100, ``1s`` -> 1000 (the schema's pattern has checked the form)."""
    match = _INTERVAL.match(text)
    assert match is not None
    value, unit = int(match.group(1)), match.group(2)
    return value * 1000 if unit == "s" else value


def _arp_target(text: str | None) -> IPv4Address | str | None:
    """The target's address, or why it cannot be one (ARP is IPv4 only)."""
    if text is None:
        return None
    try:
        address = ip_address(text)
    except ValueError:
        return f"{text!r} is not an IP address"
    if not isinstance(address, IPv4Address):
        return f"{text} is IPv6: ARP probes need an IPv4 address"
    return address
