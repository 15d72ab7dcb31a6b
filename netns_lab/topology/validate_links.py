"""Semantic checks of inter-switch links (``switches.X.links``): each joins two declared,
different switches, once, and the links make no loop.

A loop among switches is refused per VLAN: frames of a VLAN (or untagged frames) go round a
cycle of links that all carry it, and the lab has no spanning tree to cut it. Links that form a
cycle but carry disjoint VLANs make no loop and are accepted. A host never closes a loop with
two plain uplinks (one vSwitch with several uplinks needs a team, whose standby member forwards
nothing: :mod:`netns_lab.topology.validate_team`), and two vSwitches of a host are two bridges
that forward nothing to each other, so the links are the only loops the topology can declare.
VLAN references in a link's profile are resolved by :mod:`netns_lab.topology.convert`.
"""

from __future__ import annotations

from netns_lab.topology.convert import Declared
from netns_lab.topology.errors import Found, unknown
from netns_lab.topology.model import SwitchLink, Topology

Carried = int | None  # a VLAN id, None for untagged frames


def check(found: Found, topo: Topology, declared: Declared) -> None:
    """Add every inter-switch link issue of ``topo`` to ``found``."""
    switches = declared["switches"]
    sound: list[SwitchLink] = []
    pairs: dict[frozenset[str], str] = {}
    for link in topo.switch_links():
        path = f"switches.{link.a}.links.{link.b}"
        if link.b == link.a:
            found.add(path, f"a link from {link.a} to itself (it would loop every frame back)")
            continue
        if switches is not None and link.b not in switches:
            found.add(path, unknown("switch", "switches", link.b, sorted(switches)))
            continue
        pair = frozenset((link.a, link.b))
        if pair in pairs:
            found.add(
                path,
                f"{link.b} and {link.a} are already linked at {pairs[pair]}: "
                "declare a link at one end only (two cables between them would be a loop)",
            )
            continue
        pairs[pair] = path
        if any(s.name == link.b for s in topo.switches):  # else left out for an error already reported
            sound.append(link)
    _loops(found, topo, sound)


def _loops(found: Found, topo: Topology, links: list[SwitchLink]) -> None:
    """Each link that closes a cycle of links carrying one VLAN, reported once with the cycle
    and every VLAN that goes round it."""
    classes = sorted({c for link in links for c in _classes(link)}, key=lambda c: -1 if c is None else c)
    cycles: dict[tuple[str, tuple[str, ...]], list[Carried]] = {}
    for vlan in classes:
        taken: list[SwitchLink] = []
        for link in (link for link in links if vlan in _classes(link)):
            route = _route(taken, link.b, link.a)
            if route is not None:
                cycles.setdefault((link.name, tuple(x.name for x in [*route, link])), []).append(vlan)
            else:
                taken.append(link)
    for (name, cycle), vlans in cycles.items():
        closing = next(link for link in links if link.name == name)
        carried = ", ".join(_label(topo, v) for v in vlans)
        found.add(
            f"switches.{closing.a}.links.{closing.b}",
            f"links {', '.join(cycle)} form a loop for {carried} and there is no spanning tree "
            "to break it: remove one of them, or the VLAN from one",
        )


def _classes(link: SwitchLink) -> set[Carried]:
    """What a link carries: an access link its VLAN, a trunk its VLANs (and untagged if it says)."""
    p = link.profile
    if p.access is not None:
        return {p.access}
    return set(p.trunk) | ({None} if p.untagged else set())


def _route(links: list[SwitchLink], start: str, goal: str) -> list[SwitchLink] | None:
    """The links of a path from ``start`` to ``goal`` over ``links``, or None."""
    via: dict[str, SwitchLink | None] = {start: None}
    todo = [start]
    while todo:
        here = todo.pop(0)
        if here == goal:
            path: list[SwitchLink] = []
            while (step := via[here]) is not None:
                path.append(step)
                here = step.a if step.b == here else step.b
            return path[::-1]
        for link in links:
            if here in (link.a, link.b):
                there = link.b if link.a == here else link.a
                if there not in via:
                    via[there] = link
                    todo.append(there)
    return None


def _label(topo: Topology, vid: Carried) -> str:
    if vid is None:
        return "untagged frames"
    name = topo.vlan_name(vid)
    return f"VLAN {name} ({vid})" if name != str(vid) else f"VLAN {vid}"
