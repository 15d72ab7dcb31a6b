"""Port mirroring (NIST 5, VM-TM-R1..R3): sessions from VM ports to an analyzer VM or, in the
mirror encapsulation, to an uplink; promiscuous NICs as implicit sessions over their port group.

    plan.py   pure: sessions per host, in port names; the mirror encapsulation's format
    live.py   in the dataplanes: install, session ids, counters, where copies can be captured
    checks.py pure: VM-TM-R1..R3 on the topology (`nlab audit`)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netns_lab.features.base import BuildContext, Feature
from netns_lab.features.mirror import live, plan
from netns_lab.topology.names import MIRROR_PORT

if TYPE_CHECKING:
    from netns_lab.features.base import HostPlane, LiveContext
    from netns_lab.topology.model import Host, Topology


class MirrorFeature(Feature):
    name = "mirror"
    requires = ("vlan", "firewall")  # taps sit before and after the firewall of a port

    def _ids(self, b: BuildContext) -> dict[str, int]:
        return b.memo("mirror.ids", lambda: plan.assign_ids((s.name for s in plan.sessions(b.topo)), {}))

    def host_wired(self, b: BuildContext, host: Host) -> None:
        """The veth pair inside the host through which copies to be truncated cross
        (see ebpf/include/mirror.h)."""
        nl = b.sock(host.name)
        nl.veth(MIRROR_PORT[0], MIRROR_PORT[1], b.ns(host.name), up=True)
        nl.up(MIRROR_PORT[1])
        dp = b.dataplane(host.name)
        if dp is not None:
            dp.attach_mirror_port(nl.tc_socket(), nl.index(MIRROR_PORT[1]))

    def port(self, b: BuildContext, node: str, ifindex: int, ifname: str) -> None:
        """An analyzer's port is receive-only from its first frame on."""
        owner = b.vnic(node, ifname)
        dp = b.dataplane(node)
        if owner is not None and dp is not None and owner[0].role == "analyzer":
            dp.mirrors.set_port(ifindex, (), analyzer=True)

    def host_built(self, b: BuildContext, host: Host) -> None:
        """The host's sessions, once every VM port of the host exists."""
        dp = b.dataplane(host.name)
        if dp is None:
            return
        ids = self._ids(b)
        live.install(
            dp.mirrors,
            b.memo("mirror.plan", lambda: plan.plan(b.topo))[host.name],
            ids,
            b.sock(host.name).index,
        )
        live.write_ids(b.topo.lab, ids)

    def live_install(self, lab: LiveContext, host: HostPlane, old: Topology, new: Topology) -> None:
        old_ids = lab.memo("mirror.old_ids", lambda: live.read_ids(lab.lab))
        new_ids = lab.memo(
            "mirror.new_ids", lambda: plan.assign_ids((s.name for s in plan.sessions(new)), old_ids)
        )
        live.install(
            host.dataplane.mirrors,
            lab.memo("mirror.new_plan", lambda: plan.plan(new))[host.host],
            new_ids,
            lambda name: host.ifindexes[name],
            old=lab.memo("mirror.old_plan", lambda: plan.plan(old))[host.host],
            old_ids=old_ids,
        )

    def live_commit(self, lab: LiveContext, new: Topology) -> None:
        live.write_ids(lab.lab, lab.memo("mirror.new_ids", dict))

    def checks(self, topo: Topology) -> list[dict[str, Any]]:
        from netns_lab.features.mirror import checks

        return checks.check(topo)


FEATURE = MirrorFeature()
