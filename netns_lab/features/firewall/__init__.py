"""The stateful NIC-level firewall with port security (NIST 4.3, VM-FW-R2..R4): a policy per host
compiled from the lab's rules and security groups, the settings of every vNIC port, a connection
sweeper per host.

    plan.py   pure: endpoint ids, per-host policies, vNIC settings
    live.py   a running lab: install a change on a host, counters, connections, event decoding
    checks.py pure: VM-FW-R1..R4 on the topology's placements, traits and rules
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dataplane import fwpolicy
from dataplane.firewall import Settings
from netns_lab.features.base import BuildContext, Feature
from netns_lab.features.firewall import checks, live, plan
from netns_lab.lab import sweeper
from netns_lab.lab.state import pin_dir

if TYPE_CHECKING:
    from netns_lab.features.base import HostPlane, LiveContext
    from netns_lab.topology.model import Host, Topology


class FirewallFeature(Feature):
    name = "firewall"
    requires = ("vlan",)

    def host_loaded(self, b: BuildContext, host: Host) -> None:
        """Settings and the host's compiled policy before any vNIC port exists (a vNIC's first
        packet already meets the whole policy), then the host's connection sweeper."""
        dp = b.dataplane(host.name)
        if dp is None:
            return
        s = b.topo.firewall
        dp.firewall.set_settings(
            Settings(
                s.ct_quota,
                s.tcp_timeout,
                s.tcp_open_timeout,
                s.udp_timeout,
                s.icmp_timeout,
                s.frag_timeout,
                s.tcp_close_timeout,
                ct_quota_in=s.ct_quota_in,
                ct_quota_peer=s.ct_quota_peer,
            )
        )
        dp.firewall.install(fwpolicy.compile(plan.host_policy(b.topo, host.name)))
        proc = sweeper.start(
            b.topo.lab, host.name, b.ns(host.name), pin_dir(b.topo.lab) / host.name, s.sweep_interval
        )
        b.undo.callback(sweeper.stop, proc)

    def port(self, b: BuildContext, node: str, ifindex: int, ifname: str) -> None:
        """Port security and firewall settings of a VM's port."""
        owner = b.vnic(node, ifname)
        dp = b.dataplane(node)
        if owner is None or dp is None:
            return
        vm, nic = owner
        plan.install_vnic(dp.firewall, ifindex, nic, plan.vnic_settings(b.topo, vm, nic))

    def live_install(self, lab: LiveContext, host: HostPlane, old: Topology, new: Topology) -> None:
        live.install(host, old, new)

    def checks(self, topo: Topology) -> list[dict[str, Any]]:
        return checks.checks(topo)


FEATURE = FirewallFeature()
