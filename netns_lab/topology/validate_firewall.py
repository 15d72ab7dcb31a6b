"""Semantic checks of port security: the extra source addresses a VM NIC may send from.

An allowed address (or prefix) is one that no interface owns, like a VIP that the VMs of a
cluster share: it is neither the NIC's own address nor the ``ip`` of another interface of its
address space (a VM NIC, a VMkernel NIC, a network, a pNIC or router of the underlay; on a
segment, the segment's VM NICs), and a prefix contains none of those, since port security would
then let the VM spoof it. Each is listed once, and only on a NIC with port security (without it,
every source is allowed). Security groups and rules are checked while they are built, in
:mod:`netns_lab.topology.convert_firewall`.

The connection quotas are checked against each host's connection table: every firewalled NIC of
a host must be able to hold its whole share (quota + inbound_quota) at once, so that no VM, nor
any peer of it, can leave another VM without room for new flows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from netns_lab.topology.errors import Found
from netns_lab.topology.limits import CT_SIZE
from netns_lab.topology.model import IfAddr, Nic, Topology

Interface = tuple[str, str, IfAddr, str | None]  # path of the address, its owner, the address, its space
NO_OWNER = "allowed addresses belong to no interface, like a shared VIP"


def check(found: Found, topo: Topology, interfaces: Iterable[Interface]) -> None:
    """Add every port-security issue of ``topo`` to ``found``."""
    spaces: dict[str | None, list[tuple[str, IfAddr]]] = {}
    for _, owner, iface, space in interfaces:
        spaces.setdefault(space, []).append((owner, iface))
    for vm in topo.vms:
        for nic in vm.nics:
            owner = f"vms.{vm.name}.nics[{nic.index}]"
            if nic.dhcp_server and not nic.port_security:
                why = "dhcp_server needs port security (port_security is false: nothing is refused)"
                found.add(f"{owner}.dhcp_server", why)
            # another segment's addresses are another network's, which the VM cannot spoof
            _allowed(found, owner, nic, spaces.get(nic.segment, []))
    _shares(found, topo)


def _shares(found: Found, topo: Topology) -> None:
    share = topo.firewall.ct_quota + topo.firewall.ct_quota_in
    hosts = Counter(topo.vm(vm).host for vm, _ in topo.firewalled_nics())
    for host, nics in sorted(hosts.items()):
        if nics * share > CT_SIZE:
            found.add(
                "firewall.connections",
                f"the {nics} firewalled NICs of host {host} may hold quota + inbound_quota = {share}"
                f" connection entries each, {nics * share} in all: more than its table of {CT_SIZE}"
                f" (one VM could leave another without room); lower them to {CT_SIZE // nics} together",
            )


def _allowed(found: Found, owner: str, nic: Nic, owners: list[tuple[str, IfAddr]]) -> None:
    path = f"{owner}.allowed_addresses"
    if nic.allowed_addresses and not nic.port_security:
        found.add(
            path, "allowed addresses need port security (port_security is false: any source is allowed)"
        )
        return
    first: dict[IfAddr, int] = {}
    for index, allowed in enumerate(nic.allowed_addresses):
        where, shown = f"{path}[{index}]", _shown(allowed)
        taken = next(((o, i.ip) for o, i in owners if o != owner and i.ip in allowed.network), None)
        if allowed in first:
            found.add(where, f"{shown} is already listed at allowed_addresses[{first[allowed]}]")
        elif nic.ip is not None and allowed.network.num_addresses == 1 and nic.ip.ip == allowed.ip:
            found.add(where, f"{shown} is the NIC's own address, which it may always send from")
        elif taken is not None and allowed.network.num_addresses == 1:
            found.add(where, f"{shown} is the address of {taken[0]} ({NO_OWNER})")
        elif taken is not None:
            found.add(where, f"{shown} contains {taken[1]}, the address of {taken[0]} ({NO_OWNER})")
        first.setdefault(allowed, index)


def _shown(allowed: IfAddr) -> str:
    """An address alone as itself, a prefix with its length."""
    return str(allowed.ip) if allowed.network.num_addresses == 1 else str(allowed.network)
