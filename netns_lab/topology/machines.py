"""One machine's part of a lab that spans machines (`nlab up --machine NAME`).

Every node belongs to exactly one machine, so no part builds a node another part builds:

- a host names its machine (`machine:`); its VMs are on it;
- a switch, router or network has no field of its own: it is on the machine of the hosts its
  cables reach (pNIC, router NIC and network cables, followed through switches and the links
  between them). A cable group that reaches hosts of two machines is refused (the parts would
  both build it, or one part would bridge the other's underlay); one that reaches no host
  belongs to no part (refused).
- The parts meet only through routed links: a router NIC with `link: NAME` instead of `switch:`,
  one on a router of each of two machines. A part plugs its end into a namespace it is given
  (`--link NAME=NETNS`): on one machine a "wire" namespace made by whoever stands for the
  network between the machines, on a real machine the namespace that holds the real NIC.
- Across machines the VXLAN tables are BGP's (evpn mode): a controller would have to reach
  other machines' tables, and flood mode's head-end entries are written by the builder of a
  part, which knows the other part's VTEPs but cannot write into them either.

The part is a Topology of its own nodes only; `whole` keeps the lab's, for what must know the
other machines (the other VTEPs of a segment, the reflector's clients).
"""

from __future__ import annotations

import dataclasses

from netns_lab.topology.errors import Issue, TopologyError
from netns_lab.topology.model import Topology


class MachineError(TopologyError):
    """The lab cannot be split as asked: exit 2, nothing built."""


def placement(topo: Topology) -> dict[str, str]:
    """Node name -> its machine, for hosts, VMs, switches, routers and networks; MachineError
    (every problem, by field) when a node has none or two."""
    issues: list[Issue] = []
    place: dict[str, str] = {}
    for host in topo.hosts:
        if host.machine is None:
            issues.append(Issue(topo.source, f"hosts.{host.name}.machine", _NO_MACHINE))
        else:
            place[host.name] = host.machine
    # cables: node -> the switches it is cabled to (links are not cables of the lab)
    cabled: dict[str, set[str]] = {h.name: {p.switch for p in h.pnics} for h in topo.hosts}
    cabled |= {r.name: {n.switch for n in r.nics if n.link is None} for r in topo.routers}
    cabled |= {n.name: {n.switch} for n in topo.networks}
    links = tuple((link.a, link.b) for link in topo.switch_links())
    groups = _cable_groups(cabled, [s.name for s in topo.switches], links)
    for group in groups:
        machines = sorted({place[n] for n in group if n in place})
        members = sorted(n for n in group if n not in place)
        if len(machines) == 1:
            place |= dict.fromkeys(members, machines[0])
            continue
        hosts = sorted(n for n in group if n in place)
        for node in members:
            path = _path(topo, node)
            if machines:
                reason = (
                    f"is cabled to hosts of machines {', '.join(machines)} ({', '.join(hosts)}): "
                    "machines meet only through a routed link (a router NIC with 'link:'), "
                    "not through a switch"
                )
            else:
                reason = "is cabled to no host, so no machine builds it"
            issues.append(Issue(topo.source, path, reason))
    for vm in topo.vms:
        if vm.host in place:
            place[vm.name] = place[vm.host]
    if issues:
        raise MachineError(issues)
    return place


def part(topo: Topology, machine: str, wires: dict[str, str] | None = None) -> Topology:
    """The nodes `machine` builds, as a topology of its own (`whole` is `topo`); `wires`: link
    name -> the namespace this part plugs its end of the link into."""
    if not topo.machines:
        raise MachineError(
            [
                Issue(
                    topo.source,
                    "--machine",
                    "the topology declares no machines (add 'machines:' and "
                    "'machine:' on each host, or leave --machine out)",
                )
            ]
        )
    if machine not in topo.machines:
        raise MachineError(
            [
                Issue(
                    topo.source,
                    "--machine",
                    f"no machine {machine!r} in the topology (machines: {', '.join(topo.machines)})",
                )
            ]
        )
    place = placement(topo)
    issues = _across(topo, place)
    wires = dict(wires or {})
    links = {n.link for r in topo.routers if place[r.name] == machine for n in r.nics if n.link}
    for name in sorted(set(wires) - links):
        issues.append(
            Issue(
                topo.source,
                "--link",
                f"machine {machine!r} has no link {name!r} (its links: {', '.join(sorted(links)) or 'none'})",
            )
        )
    for name in sorted(links - set(wires)):
        issues.append(
            Issue(
                topo.source,
                "--link",
                f"link {name!r} of machine {machine!r}: give "
                f"--link {name}=NETNS, the namespace its end is plugged into",
            )
        )
    if issues:
        raise MachineError(issues)

    def mine(nodes: tuple, key=lambda n: n.name) -> tuple:  # type: ignore[no-untyped-def]
        return tuple(n for n in nodes if place[key(n)] == machine)

    routers = tuple(
        dataclasses.replace(
            r, nics=tuple(dataclasses.replace(n, wire=wires[n.link]) if n.link else n for n in r.nics)
        )
        for r in mine(topo.routers)
    )
    return dataclasses.replace(
        topo,
        hosts=mine(topo.hosts),
        vms=mine(topo.vms),
        switches=mine(topo.switches),
        networks=mine(topo.networks),
        routers=routers,
        machine=machine,
        whole=topo,
    )


def like(topo: Topology, running: Topology) -> Topology:
    """`topo` (a change of a running lab's file) as the same part as `running` is."""
    if running.machine is None:
        return topo
    wires = {n.link: n.wire for r in running.routers for n in r.nics if n.link and n.wire}
    return part(topo, running.machine, wires)


def _across(topo: Topology, place: dict[str, str]) -> list[Issue]:
    """What cannot span machines: a segment outside evpn mode, a link not on two machines."""
    issues = []
    for name, hosts in topo.segment_spans().items():
        segment = topo.segment(name)
        machines = sorted({place[h] for h in hosts})
        if len(machines) > 1 and segment.mode != "evpn":
            issues.append(
                Issue(
                    topo.source,
                    f"segments.{name}.mode",
                    f"{segment.mode!r} across machines ({', '.join(machines)}): only 'evpn' spans machines "
                    "(a controller or the builder of one part cannot reach another machine's tables)",
                )
            )
    ends: dict[str, list[tuple[str, str]]] = {}
    for router in topo.routers:
        for nic in router.nics:
            if nic.link is not None:
                ends.setdefault(nic.link, []).append((router.name, nic.name))
    for link, at in sorted(ends.items()):
        machines = {place[r] for r, _ in at}
        if len(at) != 2 or len(machines) != 2:
            where = ", ".join(f"routers.{r}.nics.{n}" for r, n in at)
            issues.append(
                Issue(
                    topo.source,
                    f"routers.{at[0][0]}.nics.{at[0][1]}.link",
                    f"link {link!r} needs one end on each of two machines (ends: {where})",
                )
            )
    if topo.mirrors:  # a session's sources and analyzer may be on different machines
        issues.append(Issue(topo.source, "mirrors", "mirror sessions are not built one machine at a time"))
    return issues


def _path(topo: Topology, node: str) -> str:
    for section, nodes in (
        ("switches", topo.switches),
        ("routers", topo.routers),
        ("networks", topo.networks),
    ):
        if any(n.name == node for n in nodes):
            return f"{section}.{node}"
    return f"hosts.{node}"


def _cable_groups(
    cabled: dict[str, set[str]], switches: list[str], links: tuple[tuple[str, str], ...] = ()
) -> list[set[str]]:
    """Nodes joined by cables (through switches and the inter-switch links between them), each
    group with its switches."""
    groups: list[set[str]] = []
    seen: set[str] = set()
    by_switch: dict[str, set[str]] = {s: set() for s in switches}
    for node, on in cabled.items():
        for s in on:
            by_switch.setdefault(s, set()).add(node)
    for a, b in links:  # a linked switch is reached like a cabled node, both ways
        by_switch.setdefault(a, set()).add(b)
        by_switch.setdefault(b, set()).add(a)
    for start in [*cabled, *switches]:
        if start in seen:
            continue
        group, todo = set(), [start]
        while todo:
            n = todo.pop()
            if n in group:
                continue
            group.add(n)
            todo += cabled.get(n, ()) if n in cabled else by_switch.get(n, ())
        seen |= group
        groups.append(group)
    return groups


_NO_MACHINE = "every host names its machine when the lab is built one machine at a time"
