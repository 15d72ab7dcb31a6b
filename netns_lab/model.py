"""The topology model: plain, frozen data with no I/O.

The loader turns a YAML file into these objects after validating it; the builder, status and
graph read them. Names of the kernel objects a lab creates are derived here, in one place, so
that the builder, teardown and status always agree on them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import Literal

IfAddr = IPv4Interface | IPv6Interface
IpAddr = IPv4Address | IPv6Address
IpNet = IPv4Network | IPv6Network
Role = Literal["none", "firewall", "router", "analyzer"]
ROLES: tuple[str, ...] = ("none", "firewall", "router", "analyzer")

IFNAMSIZ = 15  # usable bytes of a Linux interface name (IFNAMSIZ 16 minus the NUL)


@dataclass(frozen=True)
class Route:
    to: IpNet
    via: IpAddr


@dataclass(frozen=True)
class Vlan:
    """A VLAN declared once in `vlans:` and referred to by name or id."""

    name: str
    id: int


@dataclass(frozen=True)
class PortProfile:
    """What VLANs a port carries: an access VLAN, or tagged VLANs plus untagged frames or not.

    `access` set: frames leave the port untagged and enter it into that VLAN.
    Otherwise the port is a trunk for `trunk` (tagged) and passes untagged frames iff `untagged`;
    a port with no VLAN at all (`trunk` empty, `untagged` true) is a plain, VLAN-unaware port.
    """

    access: int | None = None
    trunk: frozenset[int] = frozenset()
    untagged: bool = True

    @property
    def kind(self) -> Literal["access", "trunk", "untagged"]:
        if self.access is not None:
            return "access"
        return "trunk" if self.trunk else "untagged"

    def carries(self, vlan: int | None) -> bool:
        """Does a frame of `vlan` (None: untagged) cross this port?"""
        if self.access is not None:
            return vlan == self.access
        return self.untagged if vlan is None else vlan in self.trunk


UNTAGGED = PortProfile()


@dataclass(frozen=True)
class PNic:
    """A physical NIC of a hypervisor host, cabled to a port of a physical switch."""

    name: str
    switch: str
    driver: str
    pci_bus: str


@dataclass(frozen=True)
class VSwitch:
    """A virtual switch in a host; no uplink means an internal-only switch."""

    name: str
    uplinks: tuple[str, ...] = ()
    trunk: frozenset[int] | None = None  # declared VLANs of the uplink; None: those of its ports
    untagged: bool | None = None  # declared: uplink passes untagged frames; None: derived

    @property
    def internal_only(self) -> bool:
        return not self.uplinks


@dataclass(frozen=True)
class VmkNic:
    """A hypervisor's own interface on one of its vSwitches (management, migration, storage...)."""

    name: str
    vswitch: str
    mac: str
    ip: IfAddr | None = None
    vlan: int | None = None

    @property
    def port(self) -> str:
        """The vSwitch port (bridge end of the veth) of this interface."""
        return f"{self.name}-br"


@dataclass(frozen=True)
class Host:
    name: str
    pnics: tuple[PNic, ...]
    vswitches: tuple[VSwitch, ...]
    vmknics: tuple[VmkNic, ...] = ()

    def vswitch(self, name: str) -> VSwitch:
        return next(v for v in self.vswitches if v.name == name)


@dataclass(frozen=True)
class Switch:
    """A physical (top-of-rack) switch; ports not in `ports` are plain, VLAN-unaware ports."""

    name: str
    ports: tuple[tuple[str, PortProfile], ...] = ()  # (port name, profile) as declared

    def port_profile(self, port: str) -> PortProfile:
        return dict(self.ports).get(port, UNTAGGED)


@dataclass(frozen=True)
class Network:
    """An external network (e.g. the internet, the corporate LAN) as one node on a switch."""

    name: str
    switch: str
    ip: IfAddr | None = None
    gateway: IpAddr | None = None
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class Nic:
    index: int
    vswitch: str
    mac: str
    ip: IfAddr | None = None
    vlan: int | None = None
    vni: int | None = None

    @property
    def name(self) -> str:
        """The interface name inside the VM."""
        return f"eth{self.index}"


@dataclass(frozen=True)
class Vm:
    name: str
    host: str
    nics: tuple[Nic, ...]
    role: Role = "none"
    gateway: IpAddr | None = None
    routes: tuple[Route, ...] = ()
    nftables: str | None = None  # ruleset of a firewall appliance

    @property
    def forwards(self) -> bool:
        return self.role in ("firewall", "router")


@dataclass(frozen=True)
class Topology:
    lab: str
    source: str
    hosts: tuple[Host, ...] = ()
    switches: tuple[Switch, ...] = ()
    networks: tuple[Network, ...] = ()
    vms: tuple[Vm, ...] = ()
    vlans: tuple[Vlan, ...] = ()
    description: str = ""

    def renamed(self, lab: str) -> Topology:
        """The same topology under another prefix (``nlab up --name``)."""
        hosts = tuple(_remac_host(host, self.lab, lab) for host in self.hosts)
        return dataclasses.replace(
            self, lab=lab, hosts=hosts, vms=tuple(_remac(vm, self.lab, lab) for vm in self.vms)
        )

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def vm(self, name: str) -> Vm:
        return next(v for v in self.vms if v.name == name)

    def switch(self, name: str) -> Switch:
        return next(s for s in self.switches if s.name == name)

    def vlan_name(self, vid: int | None) -> str | None:
        return None if vid is None else next((v.name for v in self.vlans if v.id == vid), str(vid))

    def vswitch_ports(self, host: str, vswitch: str) -> list[tuple[str, int | None]]:
        """(port name, access VLAN or None) of every VM NIC and VMkernel NIC on a vSwitch."""
        ports = [
            (vm_port(vm.name, nic.index), nic.vlan)
            for vm in self.vms
            if vm.host == host
            for nic in vm.nics
            if nic.vswitch == vswitch
        ]
        ports += [(k.port, k.vlan) for k in self.host(host).vmknics if k.vswitch == vswitch]
        return ports

    def uplink_profile(self, host: str, vswitch: str) -> PortProfile:
        """The VLAN profile of a vSwitch's uplink: as declared, else what its ports need."""
        vs = self.host(host).vswitch(vswitch)
        vlans = [vlan for _, vlan in self.vswitch_ports(host, vswitch)]
        trunk = vs.trunk if vs.trunk is not None else frozenset(v for v in vlans if v is not None)
        untagged = vs.untagged if vs.untagged is not None else (None in vlans or not trunk)
        return PortProfile(trunk=trunk, untagged=untagged)

    def node_names(self) -> list[str]:
        """Every node that becomes a namespace, in build order."""
        groups = (self.switches, self.networks, self.hosts, self.vms)
        return [node.name for group in groups for node in group]


def _remac(vm: Vm, old_lab: str, new_lab: str) -> Vm:
    """Derived MACs follow the lab name so that copies of a lab never share MACs."""
    nics = tuple(
        dataclasses.replace(nic, mac=default_mac(new_lab, vm.name, nic.index))
        if nic.mac == default_mac(old_lab, vm.name, nic.index)
        else nic
        for nic in vm.nics
    )
    return dataclasses.replace(vm, nics=nics)


def _remac_host(host: Host, old_lab: str, new_lab: str) -> Host:
    vmknics = tuple(
        dataclasses.replace(nic, mac=vmknic_mac(new_lab, host.name, nic.name))
        if nic.mac == vmknic_mac(old_lab, host.name, nic.name)
        else nic
        for nic in host.vmknics
    )
    return dataclasses.replace(host, vmknics=vmknics)


def default_mac(lab: str, vm: str, index: int) -> str:
    """A stable, locally administered unicast MAC for a NIC declared without one."""
    digest = hashlib.sha256(f"{lab}/{vm}/{index}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def vmknic_mac(lab: str, host: str, vmknic: str) -> str:
    """The derived MAC of a VMkernel NIC (a VM name has no dot, so it never shares one)."""
    return default_mac(lab, f"{host}.{vmknic}", 0)


# Names of kernel objects. Interfaces never need the lab prefix: every one of them lives inside
# a namespace that carries it, so the root namespace never sees a lab interface.
def namespace(lab: str, node: str) -> str:
    return f"{lab}-{node}"


def vm_port(vm: str, index: int) -> str:
    """The vSwitch port (host end of the veth) of a VM NIC."""
    return f"{vm}-{index}"


def switch_port(host: str, pnic: str) -> str:
    """The physical-switch port a host pNIC is cabled to."""
    return f"{host}-{pnic}"


def network_port(network: str) -> str:
    """The physical-switch port an external network is cabled to."""
    return network


SWITCH_BRIDGE = "fabric"  # the bridge inside a physical switch's namespace
NETWORK_IFNAME = "eth0"  # the interface inside an external network's namespace
