"""Semantic checks of NIC teams: what a ``team:`` block needs from its vSwitch.

A vSwitch with several uplinks needs a team (two plain uplinks would make a loop), a team needs
uplinks, and beacon probing needs a second member to hear. That every member is a pNIC of the
host and belongs to one vSwitch only is checked with all uplinks in
:mod:`netns_lab.topology.validate`; the team's own values in :mod:`netns_lab.topology.convert_team`.
"""

from __future__ import annotations

from netns_lab.topology.errors import Found
from netns_lab.topology.model import Host

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
