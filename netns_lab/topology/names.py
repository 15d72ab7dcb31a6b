"""Names of the kernel objects a lab creates, derived in one place so that the builder,
teardown and status always agree on them."""

from __future__ import annotations

import hashlib

IFNAMSIZ = 15  # usable bytes of a Linux interface name (IFNAMSIZ 16 minus the NUL)


def default_mac(lab: str, vm: str, index: int) -> str:
    """A stable, locally administered unicast MAC for a NIC declared without one."""
    # surrogatepass: a name that is not valid text (a lone surrogate from YAML) is still hashed; the
    # validator reports the name, this must not crash before it can
    digest = hashlib.sha256(f"{lab}/{vm}/{index}".encode("utf-8", "surrogatepass")).digest()
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


def appliance_port(appliance: str, nic: str) -> str:
    """The physical-switch port a firewall appliance's NIC is cabled to (as a host pNIC's)."""
    return switch_port(appliance, nic)


def link_port(peer: str) -> str:
    """The port of an inter-switch link in a switch: named after the switch at the other end, as
    a network's port is after the network (node names are unique, so it is unique in the switch)."""
    return peer


SWITCH_BRIDGE = "fabric"  # the bridge inside a physical switch's namespace
NETWORK_IFNAME = "eth0"  # the interface inside an external network's namespace
MIRROR_PORT = ("mirror0", "mirror1")  # a hypervisor's mirror port: copies to truncate go in, out


def segment_bridge(vni: int) -> str:
    """The bridge (vSwitch) of an overlay segment in each host that hosts it: at most 11 bytes."""
    return f"sg-{vni}"


def vxlan_dev(vni: int) -> str:
    """The VXLAN device of a segment in each host that hosts it, a port of its bridge."""
    return f"vx-{vni}"


def router_port(router: str, nic: str) -> str:
    """The physical-switch port an underlay router's NIC is cabled to (as a host pNIC's)."""
    return switch_port(router, nic)
