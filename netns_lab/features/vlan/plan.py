"""Which switch ports each switching node has, and the VLAN policy of each (pure, no I/O).

A hypervisor's ports: every VM NIC and VMkernel NIC port (edge ports: access or plain,
guarded against switch-control frames), every vSwitch uplink (a trunk with the vSwitch's
profile) and the VXLAN device of each segment's vSwitch (its uplink: plain, segments carry no
VLAN). A physical switch's ports: one per cabled pNIC, underlay router NIC and external network,
with the profile declared in `switches.<name>.ports` (plain when not declared), and one per
inter-switch link with the link's profile, all guarded: no host, router or network may speak
STP/DTP to the fabric.
"""

from __future__ import annotations

from dataclasses import dataclass

from dataplane.switch import PortVlans
from netns_lab.topology import names
from netns_lab.topology.model import PortProfile, SwitchLink, Topology


@dataclass(frozen=True)
class SwitchPort:
    name: str  # interface name in the switching node's namespace
    role: str  # "vm", "vmknic", "uplink", "vxlan", "host", "router", "network", "link"
    owner: str  # the VM, VMkernel NIC, vSwitch, segment, pNIC, router NIC or network on the other side
    vlans: PortVlans


def _edge(vlan: int | None) -> PortVlans:
    if vlan is None:
        return PortVlans(untagged=True, guard=True)
    return PortVlans(access=vlan, guard=True)


def _from_profile(profile: PortProfile, guard: bool) -> PortVlans:
    if profile.access is not None:
        return PortVlans(access=profile.access, guard=guard)
    return PortVlans(allowed=profile.trunk, untagged=profile.untagged, guard=guard)


def host_ports(topo: Topology, host: str) -> list[SwitchPort]:
    ports = [
        SwitchPort(names.vm_port(vm.name, nic.index), "vm", f"{vm.name}.{nic.name}", _edge(nic.vlan))
        for vm in topo.vms
        if vm.host == host
        for nic in vm.nics
    ]
    h = topo.host(host)
    ports += [SwitchPort(k.port, "vmknic", k.name, _edge(k.vlan)) for k in h.vmknics]
    for vs in h.vswitches:
        profile = topo.uplink_profile(host, vs.name)
        ports += [
            SwitchPort(up, "uplink", f"{vs.name}", _from_profile(profile, guard=False)) for up in vs.uplinks
        ]
    ports += [
        SwitchPort(names.vxlan_dev(s.vni), "vxlan", s.name, PortVlans(untagged=True))
        for s in topo.host_segments(host)
    ]
    return ports


def switch_ports(topo: Topology, switch: str) -> list[SwitchPort]:
    sw = topo.switch(switch)
    ports = [
        SwitchPort(name, "host", f"{h.name}.{p.name}", _from_profile(sw.port_profile(name), guard=True))
        for h in topo.hosts
        for p in h.pnics
        if p.switch == switch
        for name in (names.switch_port(h.name, p.name),)
    ]
    ports += [
        SwitchPort(name, "router", f"{r.name}.{n.name}", _from_profile(sw.port_profile(name), guard=True))
        for r in topo.routers
        for n in r.nics
        if n.switch == switch
        for name in (names.router_port(r.name, n.name),)
    ]
    ports += [
        SwitchPort(
            names.network_port(n.name),
            "network",
            n.name,
            _from_profile(sw.port_profile(names.network_port(n.name)), guard=True),
        )
        for n in topo.networks
        if n.switch == switch
    ]
    ports += [
        SwitchPort(names.appliance_port(a.name, n.name), "appliance", f"{a.name}.{n.name}", _edge(n.vlan))
        for a in topo.appliances
        if a.switch == switch
        for n in a.nics
    ]
    # an inter-switch link: both ends carry what the link declares; guarded too, the lab's
    # physical network has no spanning tree for a control frame to speak to
    ports += [SwitchPort(port, "link", link.name, link_vlans(link)) for port, link in topo.links_of(switch)]
    return ports


def link_vlans(link: SwitchLink) -> PortVlans:
    """The VLAN policy of both ends of an inter-switch link."""
    return _from_profile(link.profile, guard=True)


def port_vlans(topo: Topology) -> dict[str, dict[str, PortVlans]]:
    """Switching node -> its ports by interface name -> their VLAN policy."""
    return {
        **{h.name: {p.name: p.vlans for p in host_ports(topo, h.name)} for h in topo.hosts},
        **{s.name: {p.name: p.vlans for p in switch_ports(topo, s.name)} for s in topo.switches},
    }
