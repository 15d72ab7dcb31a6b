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

    @property
    def internal_only(self) -> bool:
        return not self.uplinks


@dataclass(frozen=True)
class Host:
    name: str
    pnics: tuple[PNic, ...]
    vswitches: tuple[VSwitch, ...]

    def vswitch(self, name: str) -> VSwitch:
        return next(v for v in self.vswitches if v.name == name)


@dataclass(frozen=True)
class Switch:
    """A physical (top-of-rack) switch."""

    name: str


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
    description: str = ""

    def renamed(self, lab: str) -> Topology:
        """The same topology under another prefix (``nlab up --name``)."""
        return dataclasses.replace(self, lab=lab, vms=tuple(_remac(vm, self.lab, lab) for vm in self.vms))

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def vm(self, name: str) -> Vm:
        return next(v for v in self.vms if v.name == name)

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


def default_mac(lab: str, vm: str, index: int) -> str:
    """A stable, locally administered unicast MAC for a NIC declared without one."""
    digest = hashlib.sha256(f"{lab}/{vm}/{index}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


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
