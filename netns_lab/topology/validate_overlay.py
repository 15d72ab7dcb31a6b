"""Semantic checks of the overlay and its underlay: segments, VTEPs, routers, machines.

VNIs are unique; a segment in evpn mode has a route reflector that is a router or a host of the
lab; every host with a VM NIC on a segment has a VTEP, which names one of its pNICs that has an
IPv4 address and is not a vSwitch uplink (an uplink is a bridge port and takes no address); a host
has one default route and a first hop towards every VTEP it shares a segment with; a routed pNIC's
switch port carries untagged frames; router NICs are cabled to switches of the lab; declared
machines are each used by a host and are the only ones hosts name. Segment references, NICs
that name a segment and a vSwitch or VLAN, and VMs on two tenants' segments are reported while
the model is built
(:mod:`netns_lab.topology.convert_overlay`); addresses are unique per address space (a segment
is one, everything outside segments another) in :mod:`netns_lab.topology.validate`, which also
checks the next hops of pNICs and routers.
"""

from __future__ import annotations

from ipaddress import ip_network

from netns_lab.topology.convert import Declared, LeftOut
from netns_lab.topology.errors import Found, did_you_mean, listing, unknown
from netns_lab.topology.model import Host, Topology
from netns_lab.topology.names import switch_port

_DEFAULT4 = ip_network("0.0.0.0/0")
ROUTED = "a VTEP's pNIC is a routed interface of the host, not a vSwitch uplink (a bridge port)"


def check(found: Found, topo: Topology, declared: Declared, left_out: LeftOut) -> None:
    """Add every overlay and underlay issue of ``topo`` to ``found``."""
    _vnis(found, topo)
    _route_reflector(found, topo, declared)
    for host in topo.hosts:
        _vtep(found, topo, host)
        _routed_pnics(found, host)
        _gateways(found, host)
    if left_out.complete("hosts") and left_out.complete("vms"):  # else a VTEP's peers are missing
        spans = topo.segment_spans()
        for host in topo.hosts:
            _vtep_peers(found, topo, host, spans)
    if left_out.complete("hosts") and left_out.complete("switches"):
        _untagged_underlay(found, topo)
    for router in topo.routers:
        for nic in (n for n in router.nics if n.link is None):
            path = f"routers.{router.name}.nics.{nic.name}.switch"
            names = declared["switches"]
            if names is not None and nic.switch not in names:
                found.add(path, unknown("switch", "switches", nic.switch, names))
    _machines(found, topo, left_out)


def _vnis(found: Found, topo: Topology) -> None:
    first: dict[int, str] = {}
    for segment in topo.segments:
        if segment.vni in first:
            found.add(
                f"segments.{segment.name}.vni", f"{segment.vni} is already the VNI of {first[segment.vni]}"
            )
        first.setdefault(segment.vni, segment.name)


def _route_reflector(found: Found, topo: Topology, declared: Declared) -> None:
    """EVPN's routes reach every VTEP through one reflector (iBGP, no full mesh)."""
    reflector = topo.overlay.route_reflector
    evpn = [s.name for s in topo.segments if s.mode == "evpn"]
    routers, hosts = declared["routers"], declared["hosts"]
    if reflector is None:
        if evpn:
            found.add(
                "overlay.route_reflector",
                f"missing: evpn, the mode of {', '.join(evpn)}, sends its routes through a route "
                "reflector (name a router or a host)",
            )
        return
    if routers is None or hosts is None or reflector in routers:
        return
    host = next((h for h in topo.hosts if h.name == reflector), None)
    if host is not None and not any(p.ip is not None for p in host.pnics):
        found.add(
            "overlay.route_reflector",
            f"host {reflector} has no underlay address (a pNIC with 'ip') for the VTEPs to reach it at",
        )
    if reflector in hosts:
        return
    found.add(
        "overlay.route_reflector",
        unknown("router or host", "routers and hosts", reflector, [*routers, *hosts]),
    )


def _vtep(found: Found, topo: Topology, host: Host) -> None:
    path = f"hosts.{host.name}.vtep"
    if host.vtep is None:
        on = [
            f"{vm.name} on {nic.segment}"
            for vm in topo.vms
            if vm.host == host.name
            for nic in vm.nics
            if nic.segment is not None
        ]
        if on:
            found.add(
                path,
                f"missing: {host.name} hosts segments ({', '.join(on)}) and reaches their other hosts "
                "through its VTEP: name the pNIC whose address it is",
            )
        return
    pnics = [p.name for p in host.pnics]
    pnic = next((p for p in host.pnics if p.name == host.vtep), None)
    uplink_of = next((vs.name for vs in host.vswitches if host.vtep in vs.uplinks), None)
    if pnic is None:
        hint = did_you_mean(host.vtep, pnics) + listing("pNICs", host.name, pnics)
        found.add(path, f"{host.vtep!r} is not a pNIC of {host.name} ({hint})")
    elif uplink_of is not None:
        found.add(path, f"pNIC {pnic.name} is the uplink of vSwitch {uplink_of}: {ROUTED}")
    elif pnic.ip is None:
        found.add(path, f"pNIC {pnic.name} has no 'ip': the VTEP's address is that of its pNIC")
    elif pnic.ip.version != 4:
        found.add(path, f"pNIC {pnic.name}'s address {pnic.ip} is IPv6: VXLAN tunnels here run over IPv4")


def _vtep_peers(found: Found, topo: Topology, host: Host, spans: dict[str, list[str]]) -> None:
    """Each VTEP a host shares a segment with is on a subnet of its pNICs, or routed to. Only the
    first hop is known here: the routers' own tables are checked as any node's."""
    own = topo.vtep_ip(host.name)
    if own is None:
        return
    subnets = [p.ip.network for p in host.pnics if p.ip is not None]
    routed = [r.to for p in host.pnics for r in p.routes] + [
        _DEFAULT4 for p in host.pnics if p.gateway is not None and p.gateway.version == 4
    ]
    for segment in topo.host_segments(host.name):
        for peer in spans[segment.name]:
            address = topo.vtep_ip(peer) if peer != host.name else None
            if address is None or any(address in net for net in (*subnets, *routed)):
                continue
            found.add(
                f"hosts.{host.name}.vtep",
                f"{address} ({peer}'s VTEP, segment {segment.name}) is on no subnet of {host.name}'s "
                "pNICs and no route or gateway leads there",
            )
            return  # one unreachable peer says what to fix


def _untagged_underlay(found: Found, topo: Topology) -> None:
    """A routed pNIC sends and expects untagged frames: its switch port must carry them."""
    for host in topo.hosts:
        uplinks = {u for vs in host.vswitches for u in vs.uplinks}  # an address there is reported
        for pnic in host.pnics:
            if pnic.name in uplinks:
                continue
            port = switch_port(host.name, pnic.name)
            switch = next((s for s in topo.switches if s.name == pnic.switch), None)
            if pnic.ip is None or switch is None or switch.port_profile(port).kind != "trunk":
                continue
            if not switch.port_profile(port).untagged:
                found.add(
                    f"switches.{switch.name}.ports.{port}",
                    f"{host.name}'s pNIC {pnic.name} is routed (it has an 'ip') and sends untagged "
                    "frames, which this trunk does not carry (add 'untagged: true' or make it plain)",
                )


def _routed_pnics(found: Found, host: Host) -> None:
    """An address on a vSwitch uplink would belong to a bridge port, where the kernel ignores it."""
    for vs in host.vswitches:
        for pnic in host.pnics:
            if pnic.name in vs.uplinks and pnic.ip is not None:
                found.add(
                    f"hosts.{host.name}.pnics.{pnic.name}.ip",
                    f"pNIC {pnic.name} is the uplink of vSwitch {vs.name}, a bridge port, which takes "
                    "no address (give the address to a pNIC that no vSwitch uses)",
                )


def _gateways(found: Found, host: Host) -> None:
    """A host has one routing table: one default route per IP version."""
    first: dict[int, str] = {}
    for pnic in host.pnics:
        if pnic.gateway is None:
            continue
        version = pnic.gateway.version
        if version in first:
            found.add(
                f"hosts.{host.name}.pnics.{pnic.name}.gateway",
                f"{host.name} already has its IPv{version} default route through pNIC {first[version]}",
            )
        first.setdefault(version, pnic.name)


def _machines(found: Found, topo: Topology, left_out: LeftOut) -> None:
    """Once machines are declared, hosts name only them and each of them builds a host."""
    if not topo.machines:
        return
    first: dict[str, int] = {}
    for index, name in enumerate(topo.machines):
        if name in first:
            found.add(f"machines[{index}]", f"{name!r} is already listed at machines[{first[name]}]")
        first.setdefault(name, index)
    for host in topo.hosts:
        if host.machine is not None and host.machine not in first:
            found.add(f"hosts.{host.name}.machine", unknown("machine", "machines", host.machine, list(first)))
    if not left_out.complete("hosts"):  # a host left out may be on the machine that looks empty
        return
    for name, index in first.items():
        if not topo.machine_hosts(name):
            found.add(
                f"machines[{index}]",
                f"machine {name!r} has no hosts: 'nlab up --machine {name}' would build nothing "
                f"(place a host on it with 'machine: {name}', or leave it out)",
            )
