"""The NIC firewall of a topology in dataplane terms (pure): endpoint ids, per-host policies,
port-security settings of each vNIC.

Every hypervisor gets the policy of its own vNICs only, but peers are resolved lab-wide: a rule
naming group `app` matches the addresses of every `app` member on every host. One policy for
the whole lab, compiled per host: that is how one command provisions all hosts (VM-FW-R3).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import TYPE_CHECKING

from dataplane import fwpolicy
from netns_lab.topology.model import FwRule, Nic, PeerSpec, Topology, Vm

if TYPE_CHECKING:
    from dataplane.firewall import Firewall

MAX_EXPANDED = 256  # addresses an allowed prefix may stand for in the exact-match address map


@dataclass(frozen=True)
class VnicSettings:
    endpoint: int  # 0: no policy on this vNIC
    port_security: bool
    any_source: bool  # a forwarding appliance: MAC and ARP checked, IP source not
    addresses: tuple[IPv4Address | IPv6Address, ...]
    dhcp_server: bool = False  # may send DHCP and DHCPv6 server messages


def install_vnic(fw: Firewall, ifindex: int, nic: Nic, v: VnicSettings) -> None:
    """Tell a host's firewall about the VM port `ifindex`: its MAC, endpoint, checks and sources."""
    fw.set_vnic(
        ifindex,
        nic.mac,
        v.endpoint,
        v.port_security,
        v.any_source,
        v.endpoint != 0,
        v.addresses,
        dhcp_server=v.dhcp_server,
    )


def endpoint_ids(topo: Topology) -> dict[tuple[str, int], int]:
    """A stable id per VM NIC, lab-wide, in file order (1-based)."""
    return {
        (vm.name, nic.index): i
        for i, (vm, nic) in enumerate(((vm, nic) for vm in topo.vms for nic in vm.nics), start=1)
    }


def _expand(nic: Nic) -> tuple[IPv4Address | IPv6Address, ...]:
    """Exact source addresses of a vNIC: its own, then each allowed address or prefix's addresses."""
    found: list[IPv4Address | IPv6Address] = [nic.ip.ip] if nic.ip is not None else []
    for allowed in nic.allowed_addresses:
        net = allowed.network
        if net.num_addresses > MAX_EXPANDED:
            raise ValueError(f"allowed prefix {net} has more than {MAX_EXPANDED} addresses")
        found.extend(net)
    return tuple(dict.fromkeys(found))


def _nic_networks(nic: Nic) -> list:
    """What a peer naming this NIC matches: its address, and its allowed addresses or prefixes."""
    own = [ip_network(nic.ip.ip)] if nic.ip is not None else []
    return own + [a.network for a in nic.allowed_addresses]


def kernel_nics(topo: Topology) -> set[tuple[str, int]]:
    """The firewalled NICs whose rules the vNIC ports enforce: those of VMs placed in the kernel
    (the others' rules are compiled to nftables for their firewall VM or appliance)."""
    where = topo.placements()
    return {(vm, index) for vm, index in topo.firewalled_nics() if where[vm] == "kernel"}


def vnic_settings(topo: Topology, vm: Vm, nic: Nic) -> VnicSettings:
    firewalled = (vm.name, nic.index) in kernel_nics(topo)
    endpoint = endpoint_ids(topo)[(vm.name, nic.index)] if firewalled else 0
    addresses = _expand(nic) if nic.port_security else ()
    return VnicSettings(endpoint, nic.port_security, vm.forwards, addresses, nic.dhcp_server)


def _peer_addresses(topo: Topology, spec: PeerSpec) -> list[fwpolicy.Peer]:
    if spec.kind == "any":
        return [fwpolicy.AnyPeer()]
    if spec.kind == "cidr":
        return [fwpolicy.Cidr(ip_network(spec.value))]  # type: ignore[arg-type]
    nets = [fwpolicy.Cidr(net) for _, nic in topo.nics_of(spec) for net in _nic_networks(nic)]
    return list(dict.fromkeys(nets))


def _rows(topo: Topology, rule: FwRule, applies: frozenset[int]) -> list[fwpolicy.Rule]:
    """One user rule as dataplane rows: one per peer address and port range, all with its id."""
    peers = [p for spec in rule.peers for p in _peer_addresses(topo, spec)]
    ranges: list[tuple[int, int] | None] = list(rule.ports) or [None]
    return [
        fwpolicy.Rule(rule.id, applies, rule.direction, peer, rule.proto, ports, rule.action, rule.priority)
        for peer in peers
        for ports in ranges
    ]


def host_policy(topo: Topology, host: str) -> fwpolicy.Policy:
    """The policy of the firewalled vNICs on `host`."""
    nics = {(vm.name, nic.index) for vm in topo.vms if vm.host == host for nic in vm.nics}
    return policy(topo, kernel_nics(topo) & nics)


def policy(topo: Topology, nics: set[tuple[str, int]]) -> fwpolicy.Policy:
    """The policy of the firewalled NICs in `nics` ((vm, nic index)), with the lab-wide endpoint
    ids: each host's kernel firewall, each nftables instance, and the whole lab's truth table."""
    ids = endpoint_ids(topo)
    firewalled = topo.firewalled_nics() & nics
    endpoints = [
        fwpolicy.Endpoint(ids[(vm.name, nic.index)], _expand(nic))
        for vm in topo.vms
        for nic in vm.nics
        if (vm.name, nic.index) in firewalled
    ]
    local = {ep.id for ep in endpoints}
    rows: list[fwpolicy.Rule] = []
    for rule in topo.firewall.rules:
        applies = (
            frozenset(ids[(vm.name, nic.index)] for spec in rule.apply for vm, nic in topo.nics_of(spec))
            & local
        )
        if applies:
            rows += _rows(topo, rule, applies)
    return fwpolicy.Policy(tuple(endpoints), tuple(rows))
