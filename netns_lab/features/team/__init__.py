"""NIC teaming (NIST SP 800-125B section 3): the plan of each host's teams, failure detection,
the monitor process that fails over, and the VM-MP-R1..R3 checks.

    plan.py      pure: each host's teams, their members in active-standby order, the MACs behind them
    detect.py    pure: the failure detector (carrier, beacons, ARP target) of one team
    monitor.py   the per-host lab process that feeds the detectors and fails over
    frames.py    beacons, RARP announcements, ARP probes
    checks.py    VM-MP-R1..R3 on the topology
    faults.py    injected faults of a running lab (`nlab fail`, `nlab heal`)

At build time every member is a port like a single uplink; its state in the dataplane's team map
(first member active, the others standby) is written by the `port` hook, before the port's
programs attach and before it comes up: a standby is standby from its first frame, so the
physical loop a team spanning two switches makes is never open. A lab without teams meets none
of it: the hooks return at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netns_lab.features.base import BuildContext, Feature

if TYPE_CHECKING:
    from netns_lab.topology.model import Topology


class TeamFeature(Feature):
    name = "team"
    requires = ("vlan",)

    def port(self, b: BuildContext, node: str, ifindex: int, ifname: str) -> None:
        roles = b.memo("team.members", lambda: _member_roles(b.topo))
        active = roles.get((node, ifname))
        if active is None and (node, ifname) not in b.memo("team.edges", lambda: _edges(b.topo)):
            return
        dp = b.dataplane(node)
        if dp is None:
            return
        if active is None:
            dp.team.set_edge(ifindex)
        else:
            dp.team.set_member(ifindex, active)

    def lab_built(self, b: BuildContext) -> None:
        """One monitor per host with teams, in the host's namespace (teardown ends it there)."""
        hosts = sorted({h for h, _ in b.memo("team.members", lambda: _member_roles(b.topo))})
        if not hosts or b.dataplane(hosts[0]) is None:  # no teams, or built without dataplanes
            return
        from netns_lab.features.team import monitor

        for host in hosts:
            proc = monitor.start(b.topo.lab, host, b.ns(host))
            b.undo.callback(monitor.stop, proc)

    def checks(self, topo: Topology) -> list[dict[str, Any]]:
        from netns_lab.features.team import checks

        return checks.check(topo)


def _member_roles(topo: Topology) -> dict[tuple[str, str], bool]:
    """(host, pNIC) of every team member -> True for the first (active) member."""
    return {
        (h.name, uplink): i == 0
        for h in topo.hosts
        for vs in h.vswitches
        if vs.team is not None
        for i, uplink in enumerate(vs.uplinks)
    }


def _edges(topo: Topology) -> set[tuple[str, str]]:
    """(host, pNIC) of every uplink in no team, in a lab that has teams (beacons to end)."""
    if not any(vs.team for h in topo.hosts for vs in h.vswitches):
        return set()
    return {
        (h.name, uplink) for h in topo.hosts for vs in h.vswitches if vs.team is None for uplink in vs.uplinks
    }


FEATURE = TeamFeature()
