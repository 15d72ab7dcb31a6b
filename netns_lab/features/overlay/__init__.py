"""The VXLAN overlay (NIST 2.5, VM-VN-R2/R3): segments across hosts, their tables, and who fills them.

    plan.py        pure: each VTEP's FDB and neighbour entries (flood and controller modes)
    reconcile.py   the difference between the plan and a kernel's tables, and its repair
    controller.py  the lab's controller process; `check` and `show` for `nlab overlay`
    install.py     the kernel side at build time and on a running lab
    checks.py      VM-VN-R2/R3 on the topology

A lab without segments meets none of it: every hook returns at once. The kernel side is
imported by the hooks that need it, so the checks stay as light as the topology package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netns_lab.features.base import BuildContext, Feature
from netns_lab.topology import names

if TYPE_CHECKING:
    from netns_lab.features.base import HostPlane, LiveContext
    from netns_lab.topology.model import Host, Topology


class OverlayFeature(Feature):
    name = "overlay"
    requires = ("vlan",)  # a VXLAN device is a port: its VLAN policy before its programs

    def host_wired(self, b: BuildContext, host: Host) -> None:
        """Each hosted segment's VXLAN device, a port of the segment's bridge, before any VM."""
        segments = b.topo.host_segments(host.name)
        if not segments:
            return
        from netns_lab.features.overlay import install
        from netns_lab.kernel import fdb

        refusal = b.memo("overlay.refusal", lambda: install.evpn_refusal(b.topo))
        if refusal is not None:
            from netns_lab.topology.errors import Issue, TopologyError

            raise TopologyError([Issue(b.topo.source, *refusal)])
        dp = b.dataplane(host.name)
        if dp is not None:  # before the first VXLAN device: nothing unguarded is ever decapsulated
            install.guard(dp, b.sock(host.name), b.topo, host.name)
        local = str(b.topo.vtep_ip(host.name))
        with fdb.Tables(b.ns(host.name)) as tables:
            for segment in segments:
                install.make_device(tables, segment, local)
                b.attach(host.name, names.vxlan_dev(segment.vni))
                install.join_bridge(tables, segment)

    def lab_built(self, b: BuildContext) -> None:
        """Fill the tables: the controller when a segment wants one (it keeps flood segments'
        replication entries too), else the flood segments' entries written once; FRR where
        segments are evpn's."""
        if not b.topo.segments:
            return
        from netns_lab.features.overlay import install

        plan = install.plan_of(b.topo)
        if install.needs_controller(b.topo):
            from netns_lab.features.overlay import controller

            proc = install.start_controller(b.topo.lab, plan)
            b.undo.callback(controller.stop, proc)
        elif plan.hosts:
            install.program(b.topo.lab, plan)
        if install.evpn_hosts(b.topo):
            from netns_lab.features.overlay import frr

            install.start_evpn(b.topo.lab, b.topo, lambda node: b.undo.callback(frr.stop, node))

    def live_install(self, lab: LiveContext, host: HostPlane, old: Topology, new: Topology) -> None:
        """A change may move MACs and addresses inside the segments a host has; devices are made
        only at build time, so a change of which segments a host has (or of their modes) or of its
        VTEP is refused."""
        if not (old.segments or new.segments):
            return
        before = [(s.vni, s.mode) for s in old.host_segments(host.host)], old.vtep_ip(host.host)
        after = [(s.vni, s.mode) for s in new.host_segments(host.host)], new.vtep_ip(host.host)
        if before != after:
            raise RuntimeError(
                f"{host.host}: the overlay segments or VTEP of a running host cannot change"
                " (build the lab again)"
            )

    def live_commit(self, lab: LiveContext, new: Topology) -> None:
        """The controller enforces the new plan at once; flood mode's entries are written."""
        if not new.segments:
            return
        from netns_lab.features.overlay import install

        plan = install.plan_of(new)
        if plan == install.plan_of(lab.topo):
            return
        if install.needs_controller(new):
            install.reload_controller(lab.lab, plan)
        else:
            install.program(lab.lab, plan)

    def checks(self, topo: Topology) -> list[dict[str, Any]]:
        from netns_lab.features.overlay import checks

        return [dict(r) for r in checks.check(topo)]


FEATURE = OverlayFeature()
