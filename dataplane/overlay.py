"""The underlay guard of one VTEP host, from user space: its local addresses, the registered peer
VTEPs, the hosted VNIs, the counters.

    underlay pNIC ──TC ingress: overlay_from_underlay──> host stack ──> vxlan sockets (vx-<vni>)

Works on the maps of a loaded or reopened `SwitchDataplane` (like `Firewall` and `Mirrors`), in
addresses, VNIs and ifindexes only. A host without a VTEP leaves the maps empty (they are not
preallocated) and the program neither loaded nor attached (`SwitchDataplane.program` loads it at
the first `attach_underlay`): it pays nothing. Order of writes for a new VTEP: local addresses,
peers and VNIs first, then `attach_underlay`, so the guard never meets a half-filled table.
"""

from __future__ import annotations

import ctypes
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address

from dataplane import abi, syscalls, tc
from dataplane.abi import Direction, Reason

PROGRAM = "overlay_from_underlay"
MAPS = ("overlay_local", "vtep_peers", "overlay_vnis")

Address = IPv4Address | IPv6Address
PortCounters = Callable[[int], dict]  # SwitchDataplane.counters: ifindex -> {(dir, reason): Counts}


class OverlayError(ValueError):
    pass


@dataclass(frozen=True)
class VniCounts:
    packets: int
    bytes: int


@dataclass(frozen=True)
class GuardCounts:
    """What the guard on one underlay pNIC decided: frames by reason (PASS included), and the
    VXLAN frames accepted per hosted VNI."""

    reasons: dict[Reason, int] = field(default_factory=dict)
    vnis: dict[int, VniCounts] = field(default_factory=dict)


def addr_key(address: Address | str) -> abi.OverlayAddr:
    ip = ip_address(address) if isinstance(address, str) else address
    key = abi.OverlayAddr()
    key.family = ip.version
    ctypes.memmove(key.addr, ip.packed, len(ip.packed))
    return key


def key_address(key: abi.OverlayAddr) -> Address:
    raw = bytes(key.addr)
    return IPv4Address(raw[:4]) if key.family == 4 else IPv6Address(raw)


def check_vni(vni: int) -> int:
    if not 1 <= vni <= abi.VNI_MAX:
        raise OverlayError(f"VNI {vni} is not in 1..{abi.VNI_MAX}")
    return vni


def local_addresses(addresses: Iterable[Address | IPv4Interface | IPv6Interface | str]) -> set[Address]:
    """The addresses VXLAN may be sent to: each address, and for an IPv4 interface address
    (`10.255.1.11/24`) its subnet's broadcast too (the kernel's vxlan socket takes both)."""
    found: set[Address] = set()
    for item in addresses:
        if isinstance(item, str):
            item = IPv4Interface(item) if ":" not in item else IPv6Interface(item)
        if isinstance(item, IPv4Interface | IPv6Interface):
            found.add(item.ip)
            if item.version == 4 and item.network.prefixlen < 31:
                found.add(item.network.broadcast_address)
        else:
            found.add(item)
    return found


class Overlay:
    def __init__(self, maps: dict[str, int], program: Callable[[], int], port_counters: PortCounters) -> None:
        self._maps = maps
        self._program = program  # the guard's fd, loaded at the first call where it is not yet
        self._port_counters = port_counters
        self._ncpu = syscalls.num_possible_cpus()

    # -- this host's addresses -------------------------------------------------------------------
    def set_local(self, addresses: Iterable[Address | IPv4Interface | IPv6Interface | str]) -> None:
        """Replace the addresses this host takes VXLAN at (see `local_addresses`): new ones are
        added before old ones go, so no address the host keeps is ever missing."""
        wanted = local_addresses(addresses)
        if len(wanted) > abi.MAX_OVERLAY_LOCAL:
            raise OverlayError(f"{len(wanted)} local addresses: at most {abi.MAX_OVERLAY_LOCAL}")
        fd = self._maps["overlay_local"]
        for address in wanted:
            syscalls.map_update(fd, addr_key(address), ctypes.c_uint8(1))
        for address in self.local() - wanted:
            syscalls.map_delete(fd, addr_key(address))

    def local(self) -> set[Address]:
        return {
            key_address(k)
            for k, _ in syscalls.map_items(self._maps["overlay_local"], abi.OverlayAddr, ctypes.c_uint8)
        }

    # -- peers -----------------------------------------------------------------------------------
    def add_peer(self, address: Address | str) -> None:
        syscalls.map_update(self._maps["vtep_peers"], addr_key(address), ctypes.c_uint8(1))

    def remove_peer(self, address: Address | str) -> bool:
        """False when it was not a peer."""
        return syscalls.map_delete(self._maps["vtep_peers"], addr_key(address))

    def peers(self) -> set[Address]:
        return {
            key_address(k)
            for k, _ in syscalls.map_items(self._maps["vtep_peers"], abi.OverlayAddr, ctypes.c_uint8)
        }

    # -- VNIs ------------------------------------------------------------------------------------
    def add_vni(self, vni: int) -> None:
        """Host `vni`; one already hosted keeps its counters."""
        key = ctypes.c_uint32(check_vni(vni))
        if not syscalls.map_lookup(self._maps["overlay_vnis"], key, self._vni_value()):
            syscalls.map_update(self._maps["overlay_vnis"], key, self._vni_value())

    def remove_vni(self, vni: int) -> bool:
        return syscalls.map_delete(self._maps["overlay_vnis"], ctypes.c_uint32(check_vni(vni)))

    def vnis(self) -> dict[int, VniCounts]:
        """Hosted VNIs with the frames accepted for each, summed over CPUs."""
        items = syscalls.map_items(self._maps["overlay_vnis"], ctypes.c_uint32, abi.OverlayVni * self._ncpu)
        return {
            key.value: VniCounts(sum(v.packets for v in values), sum(v.bytes for v in values))
            for key, values in items
        }

    def _vni_value(self) -> ctypes.Array:
        return (abi.OverlayVni * self._ncpu)()

    # -- the program -----------------------------------------------------------------------------
    def attach_underlay(self, sock: socket.socket, ifindex: int) -> None:
        """The guard on TC ingress of the host's underlay pNIC (`sock`: NETLINK_ROUTE in the host's
        namespace). Fill the tables first: from here on, VXLAN not in them is dropped.

        The kernel's vxlan socket takes VXLAN arriving on any interface of the namespace: a VTEP
        host with another routed interface (an address of its own, not a bridge port) needs the
        guard there too. It takes the interface's TC ingress hook (handle 1) for itself."""
        tc.add_clsact(sock, ifindex)
        tc.attach(sock, ifindex, "ingress", self._program(), PROGRAM)

    @staticmethod
    def detach_underlay(sock: socket.socket, ifindex: int) -> None:
        tc.detach(sock, ifindex)

    def counters(self, ifindex: int) -> GuardCounts:
        """Frames the guard on pNIC `ifindex` decided, by reason, and the per-VNI counters."""
        reasons = {
            reason: counts.packets
            for (direction, reason), counts in self._port_counters(ifindex).items()
            if direction == Direction.INGRESS
        }
        return GuardCounts(reasons, self.vnis())
