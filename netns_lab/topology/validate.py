"""Semantic checks of a topology: what its schema cannot say.

References between names, one namespace per node, interface names that fit the kernel's limit and
do not collide inside a namespace, unique addresses, next hops that are on a subnet of the node,
roles that make sense; VLANs and port profiles are checked in :mod:`netns_lab.topology.validate_vlans`,
port security's allowed addresses in :mod:`netns_lab.topology.validate_firewall`, segments, VTEPs
and the underlay in :mod:`netns_lab.topology.validate_overlay`. Addresses are unique per address
space: each overlay segment is one (tenants may reuse each other's subnets), the rest of the lab
(VLANs, plain vSwitches, networks, the underlay) is another.
The checks read the model built from the nodes whose structure was valid; ``declared`` holds
every name the file declares per section (``None`` for a section that is not a mapping), so that
a reference to a node left out for another error is not reported as dangling, and a check that
reads such a node does not run (:class:`~netns_lab.topology.convert.LeftOut`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from ipaddress import IPv4Interface

from netns_lab.topology import (
    validate_firewall,
    validate_links,
    validate_mirror,
    validate_overlay,
    validate_placement,
    validate_team,
    validate_vlans,
)
from netns_lab.topology.convert import SECTIONS, Declared, LeftOut
from netns_lab.topology.errors import Found, Issue, did_you_mean, listing
from netns_lab.topology.model import Host, IfAddr, IpAddr, Route, Router, Topology, Vm
from netns_lab.topology.names import (
    IFNAMSIZ,
    MIRROR_PORT,
    SWITCH_BRIDGE,
    appliance_port,
    default_mac,
    network_port,
    router_port,
    switch_port,
    vm_port,
    vmknic_mac,
    vxlan_dev,
)

IfEntry = tuple[str, str | None, str]  # interface name, where it is declared (None: built in), label
Space = str | None  # an address space: a segment's name, None for everything outside segments


def check(topo: Topology, declared: Declared) -> list[Issue]:
    """Every semantic issue of ``topo``, in a stable order."""
    found = Found(topo.source)
    left_out = LeftOut(topo, declared)
    _unique_nodes(found, declared)
    _references(found, topo, declared, left_out)
    validate_links.check(found, topo, declared)
    validate_team.beacons(found, topo)
    for host in topo.hosts:
        if not _uplinks(found, topo, host):
            left_out.mark("hosts", host.name)
        _pci_buses(found, host)
        validate_team.check(found, host)
        _ifnames(found, f"host {host.name}", _host_ifnames(topo, host))
    for router in topo.routers:
        _ifnames(found, f"router {router.name}", _router_ifnames(router))
    for switch, entries in _switch_ifnames(topo).items():
        _ifnames(found, f"switch {switch}", entries)
    _addresses(found, topo)
    _macs(found, topo)
    _all_routes(found, topo)
    for vm in topo.vms:
        _role(found, vm)
    validate_vlans.check(found, topo, left_out)
    validate_firewall.check(found, topo, _interfaces(topo))
    validate_mirror.check(found, topo, left_out)
    validate_overlay.check(found, topo, declared, left_out)
    validate_placement.check(found, topo, declared["switches"], left_out)
    return found.issues


# -- names and references ------------------------------------------------------------------------
def _unique_nodes(found: Found, declared: Declared) -> None:
    """Each node becomes namespace ``<lab>-<node>``, so names are unique across sections."""
    first: dict[str, str] = {}
    for section in SECTIONS:
        for name in declared[section] or ():
            if name in first:
                found.add(
                    f"{section}.{name}",
                    f"{name!r} is already the name of {first[name]}.{name} "
                    "(switches, routers, networks, appliances, hosts and vms share one set of names)",
                )
            first.setdefault(name, section)


def _references(found: Found, topo: Topology, declared: Declared, left_out: LeftOut) -> None:
    """Names of switches, hosts and vSwitches resolve; a node with one that does not is marked
    left out for the checks that follow (its VLANs, its mirror sessions' paths)."""
    for network in topo.networks:
        path = f"networks.{network.name}.switch"
        if not _resolve(found, path, "switch", network.switch, declared["switches"]):
            left_out.mark("networks", network.name)
    for host in topo.hosts:
        ok = True
        for pnic in host.pnics:
            path = f"hosts.{host.name}.pnics.{pnic.name}.switch"
            ok &= _resolve(found, path, "switch", pnic.switch, declared["switches"])
        for nic in host.vmknics:
            ok &= _vswitch_of(found, topo, host, nic.vswitch, f"hosts.{host.name}.vmknics.{nic.name}.vswitch")
        if not ok:
            left_out.mark("hosts", host.name)
    for vm in topo.vms:
        host = next((h for h in topo.hosts if h.name == vm.host), None)
        ok = _resolve(found, f"vms.{vm.name}.host", "host", vm.host, declared["hosts"])
        if ok and host is not None:  # else declared, but left out for an error already reported
            for nic in vm.nics:
                ok &= _vswitch_of(found, topo, host, nic.vswitch, f"vms.{vm.name}.nics[{nic.index}].vswitch")
        if not ok:
            left_out.mark("vms", vm.name)


def _resolve(found: Found, path: str, kind: str, name: str, names: tuple[str, ...] | None) -> bool:
    """False (and reported) when ``name`` is not declared; a malformed section resolves all."""
    if names is None or name in names:
        return True
    plural = _PLURALS[kind]
    listing = f"{plural}: {', '.join(names)}" if names else f"no {plural} are declared"
    found.add(path, f"unknown {kind} {name!r} ({listing})")
    return False


_PLURALS = {"switch": "switches", "host": "hosts"}


def _vswitch_of(found: Found, topo: Topology, host: Host, vswitch: str, path: str) -> bool:
    """A VM NIC or a VMkernel NIC plugs into a vSwitch of its own host."""
    names = [vs.name for vs in host.vswitches]
    if vswitch in names:
        return True
    elsewhere = [h.name for h in topo.hosts if any(vs.name == vswitch for vs in h.vswitches)]
    hint = f"it is on {', '.join(elsewhere)}" if elsewhere else listing("vSwitches", host.name, names)
    found.add(path, f"{vswitch!r} is not a vSwitch of {host.name} ({hint})")
    return False


def _uplinks(found: Found, topo: Topology, host: Host) -> bool:
    """One vSwitch per pNIC (several pNICs per vSwitch form a team: validate_team).
    False when an uplink names no pNIC of the host."""
    pnics = [pnic.name for pnic in host.pnics]
    resolved = True
    owner: dict[str, str] = {}
    for vs in host.vswitches:
        path = f"hosts.{host.name}.vswitches.{vs.name}.uplinks"
        for index, pnic in enumerate(vs.uplinks):
            if pnic not in pnics:
                elsewhere = [h.name for h in topo.hosts if any(p.name == pnic for p in h.pnics)]
                hint = (
                    f"it belongs to {', '.join(elsewhere)}"
                    if elsewhere
                    else did_you_mean(pnic, pnics) + listing("pNICs", host.name, pnics)
                )
                found.add(f"{path}[{index}]", f"{pnic!r} is not a pNIC of {host.name} ({hint})")
                resolved = False
            elif pnic in owner:
                found.add(f"{path}[{index}]", f"{pnic!r} is already the uplink of {owner[pnic]}")
            else:
                owner[pnic] = vs.name
    return resolved


def _pci_buses(found: Found, host: Host) -> None:
    first: dict[str, str] = {}
    for pnic in host.pnics:
        if pnic.pci_bus in first:
            path = f"hosts.{host.name}.pnics.{pnic.name}.pci_bus"
            found.add(path, f"{pnic.pci_bus} is already the PCI address of {first[pnic.pci_bus]}")
        first.setdefault(pnic.pci_bus, pnic.name)


# -- interface names -----------------------------------------------------------------------------
def _host_ifnames(topo: Topology, host: Host) -> Iterator[IfEntry]:
    yield "lo", None, "the loopback"
    for end in MIRROR_PORT:
        yield end, None, f"the host's mirror port {end!r}"
    for pnic in host.pnics:
        yield pnic.name, f"hosts.{host.name}.pnics.{pnic.name}", f"pNIC {pnic.name!r}"
    for vs in host.vswitches:
        if vs.segment is None:
            yield vs.name, f"hosts.{host.name}.vswitches.{vs.name}", f"vSwitch {vs.name!r}"
    for segment in topo.host_segments(host.name):  # names no declared interface can take (a dash)
        yield segment.bridge, None, f"the bridge of segment {segment.name}"
        yield vxlan_dev(segment.vni), None, f"the VXLAN device of segment {segment.name}"
    for nic in host.vmknics:
        path = f"hosts.{host.name}.vmknics.{nic.name}"
        yield nic.name, path, f"VMkernel NIC {nic.name!r}"
        yield nic.port, path, f"vSwitch port {nic.port!r}"
    for vm in topo.vms:
        if vm.host == host.name:
            for nic in vm.nics:
                port = vm_port(vm.name, nic.index)
                yield port, f"vms.{vm.name}.nics[{nic.index}]", f"vSwitch port {port!r}"


def _router_ifnames(router: Router) -> Iterator[IfEntry]:
    yield "lo", None, "the loopback"
    for nic in router.nics:
        yield nic.name, f"routers.{router.name}.nics.{nic.name}", f"NIC {nic.name!r}"


def _switch_ifnames(topo: Topology) -> dict[str, list[IfEntry]]:
    """The interfaces in each physical switch's namespace, by switch."""
    entries: dict[str, list[IfEntry]] = {}

    def add(switch: str, entry: IfEntry) -> None:
        entries.setdefault(switch, [("lo", None, "the loopback"), (SWITCH_BRIDGE, None, "the bridge")])
        entries[switch].append(entry)

    for host in topo.hosts:
        for pnic in host.pnics:
            port = switch_port(host.name, pnic.name)
            add(pnic.switch, (port, f"hosts.{host.name}.pnics.{pnic.name}", f"switch port {port!r}"))
    for network in topo.networks:
        port = network_port(network.name)
        add(network.switch, (port, f"networks.{network.name}", f"switch port {port!r}"))
    for router in topo.routers:
        for nic in (n for n in router.nics if n.link is None):
            port = router_port(router.name, nic.name)
            add(nic.switch, (port, f"routers.{router.name}.nics.{nic.name}", f"switch port {port!r}"))
    for appliance in topo.appliances:
        for nic in appliance.nics:
            port = appliance_port(appliance.name, nic.name)
            add(appliance.switch, (port, f"appliances.{appliance.name}", f"switch port {port!r}"))
    pairs = set()  # a pair linked twice is reported once, by validate_links
    for link in (link for link in topo.switch_links() if link.a != link.b):
        if frozenset((link.a, link.b)) in pairs:
            continue
        pairs.add(frozenset((link.a, link.b)))
        for switch, port in link.ends():
            add(switch, (port, f"switches.{link.a}.links.{link.b}", f"the port of link {link.name} {port!r}"))
    return entries


def _ifnames(found: Found, where: str, entries: Iterable[IfEntry]) -> None:
    """Interface names fit IFNAMSIZ and are unique in their namespace."""
    taken: dict[str, str] = {}
    for name, path, label in entries:
        size = len(name.encode())
        if path and size > IFNAMSIZ:
            found.add(
                path, f"{label} is {size} bytes long, over the {IFNAMSIZ}-byte limit of interface names"
            )
        elif path and name in taken:
            found.add(path, f"{label} has the same interface name as {taken[name]} in {where}")
        taken.setdefault(name, label)


# -- addresses -----------------------------------------------------------------------------------
def _interfaces(topo: Topology) -> Iterator[tuple[str, str, IfAddr, Space]]:
    """(path of the address, owner, address, its space) of every addressed interface, in build order."""
    for router in topo.routers:
        for rnic in router.nics:
            owner = f"routers.{router.name}.nics.{rnic.name}"
            yield f"{owner}.ip", owner, rnic.ip, None
    for network in topo.networks:
        if network.ip is not None:
            yield f"networks.{network.name}.ip", f"networks.{network.name}", network.ip, None
    for host in topo.hosts:
        for pnic in host.pnics:
            owner = f"hosts.{host.name}.pnics.{pnic.name}"
            if pnic.ip is not None:
                yield f"{owner}.ip", owner, pnic.ip, None
        for kernel_nic in host.vmknics:
            owner = f"hosts.{host.name}.vmknics.{kernel_nic.name}"
            if kernel_nic.ip is not None:
                yield f"{owner}.ip", owner, kernel_nic.ip, None
    for vm in topo.vms:
        for nic in vm.nics:
            if nic.ip is not None:
                owner = f"vms.{vm.name}.nics[{nic.index}]"
                yield f"{owner}.ip", owner, nic.ip, nic.segment


def _addresses(found: Found, topo: Topology) -> None:
    owners: dict[tuple[Space, IpAddr], str] = {}
    for path, owner, iface, space in _interfaces(topo):
        if isinstance(iface, IPv4Interface) and iface.network.prefixlen < 31:
            if iface.ip == iface.network.network_address:
                found.add(path, f"{iface} is the network address of {iface.network}, not a host address")
            elif iface.ip == iface.network.broadcast_address:
                found.add(path, f"{iface} is the broadcast address of {iface.network}, not a host address")
        if (space, iface.ip) in owners:
            found.add(path, f"{iface.ip} is already used by {owners[space, iface.ip]}")
        owners.setdefault((space, iface.ip), owner)


def _mac_owners(topo: Topology) -> Iterator[tuple[str, str, str]]:
    """(owner, path of the MAC, MAC) of every interface, in build order; a derived MAC is
    reported at its owner, as the file does not write it."""
    for host in topo.hosts:
        for kernel_nic in host.vmknics:
            owner = f"hosts.{host.name}.vmknics.{kernel_nic.name}"
            derived = kernel_nic.mac == vmknic_mac(topo.lab, host.name, kernel_nic.name)
            yield owner, owner if derived else f"{owner}.mac", kernel_nic.mac
    for vm in topo.vms:
        for nic in vm.nics:
            owner = f"vms.{vm.name}.nics[{nic.index}]"
            derived = nic.mac == default_mac(topo.lab, vm.name, nic.index)
            yield owner, owner if derived else f"{owner}.mac", nic.mac


def _macs(found: Found, topo: Topology) -> None:
    owners: dict[str, str] = {}
    for owner, path, mac in _mac_owners(topo):
        if int(mac[:2], 16) & 1:
            found.add(path, f"{mac} is a multicast MAC (the first byte must be even)")
        elif mac == "00:00:00:00:00:00":
            found.add(path, f"{mac} is not a usable MAC")
        elif mac in owners:
            found.add(path, f"{mac} is already used by {owners[mac]}")
        owners.setdefault(mac, owner)


# -- routes --------------------------------------------------------------------------------------
def _all_routes(found: Found, topo: Topology) -> None:
    for network in topo.networks:
        addrs = [network.ip] if network.ip else []
        node = _Node(found, f"networks.{network.name}", network.name, "interface", addrs)
        node.check(network.gateway, network.routes)
    for vm in topo.vms:
        addrs = [nic.ip for nic in vm.nics if nic.ip]
        _Node(found, f"vms.{vm.name}", vm.name, "NICs", addrs).check(vm.gateway, vm.routes)
    for router in topo.routers:
        addrs = [nic.ip for nic in router.nics]
        _Node(found, f"routers.{router.name}", router.name, "NICs", addrs).check(None, router.routes)
    for host in topo.hosts:
        for pnic in host.pnics:
            name, addrs = f"{host.name}.{pnic.name}", [pnic.ip] if pnic.ip else []
            node = _Node(found, f"hosts.{host.name}.pnics.{pnic.name}", name, "address", addrs)
            node.check(pnic.gateway, pnic.routes)


class _Node:
    """The routing table of one node: every next hop must be on one of its subnets."""

    def __init__(self, found: Found, path: str, name: str, noun: str, addrs: list[IfAddr]) -> None:
        self.found, self.path, self.name, self.noun, self.addrs = found, path, name, noun, addrs

    def check(self, gateway: IpAddr | None, routes: tuple[Route, ...]) -> None:
        if gateway is not None:
            self.on_link(f"{self.path}.gateway", gateway)
        first: dict[object, int] = {}
        for index, route in enumerate(routes):
            path = f"{self.path}.routes[{index}]"
            if route.to.version != route.via.version:
                self.found.add(
                    path, f"{route.via} is IPv{route.via.version} but {route.to} is IPv{route.to.version}"
                )
            else:
                self.on_link(f"{path}.via", route.via)
            if route.to in first:
                self.found.add(f"{path}.to", f"{route.to} is already routed by routes[{first[route.to]}]")
            elif route.to.prefixlen == 0 and gateway is not None and gateway.version == route.to.version:
                self.found.add(f"{path}.to", f"{route.to} is the default route, which gateway already sets")
            first.setdefault(route.to, index)

    def on_link(self, path: str, hop: IpAddr) -> None:
        if any(hop == addr.ip for addr in self.addrs):
            self.found.add(path, f"{hop} is {self.name}'s own address")
        elif not any(hop in addr.network for addr in self.addrs):
            subnets = ", ".join(dict.fromkeys(str(addr.network) for addr in self.addrs))
            where = subnets or f"{self.name} has no IP address"
            self.found.add(path, f"{hop} is not on any subnet of {self.name}'s {self.noun} ({where})")


# -- roles ---------------------------------------------------------------------------------------
def _role(found: Found, vm: Vm) -> None:
    path = f"vms.{vm.name}"
    if vm.role != "firewall" and vm.nftables is not None:
        found.add(
            f"{path}.nftables", f"only a firewall takes an nftables ruleset ({vm.name} has role {vm.role})"
        )
    if vm.forwards and len(vm.nics) < 2:
        found.add(f"{path}.nics", f"a {vm.role} forwards between NICs and needs at least 2, {vm.name} has 1")
