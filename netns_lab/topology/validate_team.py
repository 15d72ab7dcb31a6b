"""Semantic checks of NIC teams: what a ``team:`` block needs from its vSwitch.

A vSwitch with several uplinks needs a team (two plain uplinks would make a loop), a team needs
uplinks, and beacon probing needs a second member to hear. That every member is a pNIC of the
host and belongs to one vSwitch only is checked with all uplinks in
:mod:`netns_lab.topology.validate`; the team's own values in :mod:`netns_lab.topology.convert_team`.
"""

from __future__ import annotations

from netns_lab.topology.errors import Found
from netns_lab.topology.model import Host, Topology
from netns_lab.topology.names import switch_port

NEEDS_TEAM = (
    "{n} uplinks need a 'team:' (NIC teaming keeps one member active; plain uplinks would make a loop)"
)


def check(found: Found, host: Host) -> None:
    """Add every team issue of ``host``'s vSwitches to ``found``."""
    for vs in host.vswitches:
        path = f"hosts.{host.name}.vswitches.{vs.name}"
        if vs.team is None:
            if len(vs.uplinks) > 1:
                found.add(f"{path}.uplinks", NEEDS_TEAM.format(n=len(vs.uplinks)))
            continue
        if not vs.uplinks:
            found.add(f"{path}.team", "an internal-only vSwitch (no uplinks) has no team")
        elif "beacon" in vs.team.detection and len(vs.uplinks) < 2:
            found.add(
                f"{path}.team.detection",
                f"beacon probing needs at least 2 members to hear each other ({vs.name} has 1 uplink)",
            )


def beacons(found: Found, topo: Topology) -> None:
    """Beacons are untagged frames (a tagged one is an ordinary frame): beacon probing needs the
    switch port of every member to pass untagged frames, or each member's beacons are dropped
    there and the members never hear each other."""
    switches = {s.name: s for s in topo.switches}
    for host in topo.hosts:
        pnics = {p.name: p for p in host.pnics}
        for vs in host.vswitches:
            if vs.team is None or "beacon" not in vs.team.detection:
                continue
            for member in (pnics[u] for u in vs.uplinks if u in pnics):
                port = switch_port(host.name, member.name)
                switch = switches.get(member.switch)
                if switch is not None and not switch.port_profile(port).carries(None):
                    found.add(
                        f"hosts.{host.name}.vswitches.{vs.name}.team.detection",
                        f"beacons are untagged but {member.switch} port {port} carries no untagged "
                        f"frames: add 'untagged: true' to switches.{member.switch}.ports.{port}, "
                        "or detect by link only",
                    )
