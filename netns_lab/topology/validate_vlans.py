"""Semantic checks of VLANs and port profiles.

VLAN ids are declared once, switch ports named in ``ports`` exist on their switch, only a
vSwitch with an uplink has a trunk, and an uplink carries something. References to VLANs are
resolved (and reported) by :mod:`netns_lab.topology.convert`, which also checks what only the raw data
shows: a VLAN listed twice in a trunk, an access port with trunk keys, a port carrying nothing.
"""

from __future__ import annotations

from netns_lab.topology.convert import LeftOut
from netns_lab.topology.errors import Found, did_you_mean, listing
from netns_lab.topology.model import Host, Switch, Topology
from netns_lab.topology.names import network_port, router_port, switch_port

INTERNAL_TRUNK = "an internal-only vSwitch (no uplinks) has no trunk"


def check(found: Found, topo: Topology, left_out: LeftOut) -> None:
    """Add every VLAN and port-profile issue of ``topo`` to ``found``."""
    _vlan_ids(found, topo)
    for host in topo.hosts:
        _vswitch_trunks(found, topo, host, left_out.complete("vms"))
    # A host, router or network left out for another error takes its switch ports with it.
    if left_out.complete("hosts") and left_out.complete("networks") and left_out.complete("routers"):
        cabling = _cabling(topo)
        for switch in topo.switches:
            links = {port for port, _ in topo.links_of(switch.name)}
            _switch_ports(found, switch, cabling, links)


def _vlan_ids(found: Found, topo: Topology) -> None:
    first: dict[int, str] = {}
    for vlan in topo.vlans:
        if vlan.id in first:
            found.add(f"vlans.{vlan.name}", f"{vlan.id} is already the id of {first[vlan.id]}")
        first.setdefault(vlan.id, vlan.name)


def _vswitch_trunks(found: Found, topo: Topology, host: Host, vms_complete: bool) -> None:
    """A trunk needs an uplink, and an uplink that passes no frame at all is a mistake."""
    for vs in host.vswitches:
        path = f"hosts.{host.name}.vswitches.{vs.name}"
        if vs.segment is not None:  # made by the loader, untagged: it has no uplink to carry anything
            continue
        if vs.internal_only:
            for key, value in (("trunk", vs.trunk), ("untagged", vs.untagged)):
                if value is not None:
                    found.add(f"{path}.{key}", INTERNAL_TRUNK)
        elif vs.trunk is not None or vms_complete:  # else the VLANs of a VM left out are missing
            profile = topo.uplink_profile(host.name, vs.name)
            if not profile.trunk and not profile.untagged:
                source = "'trunk' VLANs" if vs.trunk is not None else "VLANs on its ports"
                found.add(path, f"the uplink carries nothing (no {source} and 'untagged' is false)")


def _cabling(topo: Topology) -> dict[str, str]:
    """Switch port -> the switch it is on. Port names are unique across switches: a host's or a
    router's port has a dash (node names are unique), a network's port (its name) has none."""
    cabling = {switch_port(h.name, p.name): p.switch for h in topo.hosts for p in h.pnics}
    cabling |= {
        router_port(r.name, nic.name): nic.switch for r in topo.routers for nic in r.nics if nic.link is None
    }
    return cabling | {network_port(n.name): n.switch for n in topo.networks}


def _switch_ports(found: Found, switch: Switch, cabling: dict[str, str], links: set[str]) -> None:
    ports = [port for port, on in cabling.items() if on == switch.name]
    for port, _ in switch.ports:
        if port in ports:
            continue
        if port in links:
            hint = f"it is the link to {port}: its VLANs are declared once, in links"
        elif port in cabling:
            hint = f"it is on {cabling[port]}"
        else:
            hint = did_you_mean(port, ports) + listing("ports", switch.name, ports)
        found.add(f"switches.{switch.name}.ports.{port}", f"{port!r} is not a port of {switch.name} ({hint})")
