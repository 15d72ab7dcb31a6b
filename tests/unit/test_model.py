"""Pure model logic: names, derived MACs, renaming."""

from __future__ import annotations

import re
from ipaddress import ip_interface

from netns_lab import model
from netns_lab.model import Nic, Topology, Vm


def test_default_mac_is_stable_unicast_and_local() -> None:
    mac = model.default_mac("nist", "web1", 0)
    assert mac == model.default_mac("nist", "web1", 0)
    assert re.fullmatch(r"02(:[0-9a-f]{2}){5}", mac)
    assert mac != model.default_mac("nist", "web1", 1) != model.default_mac("other", "web1", 0)


def test_renamed_moves_derived_macs_and_keeps_declared_ones() -> None:
    derived = Nic(0, "vs", model.default_mac("a", "vm", 0), ip_interface("10.0.0.1/24"))
    declared = Nic(1, "vs", "02:00:00:00:00:09")
    topo = Topology(lab="a", source="f.yaml", vms=(Vm("vm", "hv", (derived, declared)),))
    renamed = topo.renamed("b")
    assert renamed.lab == "b"
    nics = renamed.vm("vm").nics
    assert nics[0].mac == model.default_mac("b", "vm", 0)
    assert nics[1].mac == "02:00:00:00:00:09"
    assert topo.vm("vm").nics[0].mac == derived.mac


def test_kernel_object_names() -> None:
    assert model.namespace("nist", "web1") == "nist-web1"
    assert model.vm_port("web1", 2) == "web1-2"
    assert model.switch_port("hv1", "eth0") == "hv1-eth0"
    assert Nic(3, "vs", "02:00:00:00:00:01").name == "eth3"


def test_node_names_in_build_order() -> None:
    topo = Topology(
        lab="a",
        source="f",
        switches=(model.Switch("sw"),),
        networks=(model.Network("net", "sw"),),
        hosts=(model.Host("hv", (), ()),),
        vms=(Vm("vm", "hv", ()),),
    )
    assert topo.node_names() == ["sw", "net", "hv", "vm"]


# -- VLANs ---------------------------------------------------------------------------------------
def test_port_profile_carries() -> None:
    access = model.PortProfile(access=10)
    assert (access.kind, access.carries(10), access.carries(20), access.carries(None)) == (
        "access",
        True,
        False,
        False,
    )
    trunk = model.PortProfile(trunk=frozenset({10, 20}), untagged=False)
    assert (trunk.kind, trunk.carries(20), trunk.carries(30), trunk.carries(None)) == (
        "trunk",
        True,
        False,
        False,
    )
    assert model.PortProfile(trunk=frozenset({10}), untagged=True).carries(None)
    plain = model.UNTAGGED
    assert (plain.kind, plain.carries(None), plain.carries(10)) == ("untagged", True, False)
    assert not model.PortProfile(untagged=False).carries(None)


def _vlan_lab(vswitch: model.VSwitch, nic_vlans: list[int | None], vmk_vlans: list[int | None]) -> Topology:
    vmknics = tuple(
        model.VmkNic(f"k{i}", vswitch.name, "02:00:00:00:01:00", vlan=v) for i, v in enumerate(vmk_vlans)
    )
    nics = tuple(Nic(i, vswitch.name, "02:00:00:00:00:00", vlan=v) for i, v in enumerate(nic_vlans))
    host = model.Host("hv", (model.PNic("eth0", "sw", "igb", "0000:01:00.0"),), (vswitch,), vmknics)
    return Topology(lab="a", source="f", hosts=(host,), vms=(Vm("vm", "hv", nics),))


def test_uplink_profile_is_derived_from_the_ports() -> None:
    vs = model.VSwitch("vs", ("eth0",))
    tagged = _vlan_lab(vs, [10, 20], [30])
    assert tagged.vswitch_ports("hv", "vs") == [("vm-0", 10), ("vm-1", 20), ("k0-br", 30)]
    assert tagged.uplink_profile("hv", "vs") == model.PortProfile(
        trunk=frozenset({10, 20, 30}), untagged=False
    )
    mixed = _vlan_lab(vs, [10, None], [])
    assert mixed.uplink_profile("hv", "vs") == model.PortProfile(trunk=frozenset({10}), untagged=True)
    assert _vlan_lab(vs, [None], [None]).uplink_profile("hv", "vs") == model.UNTAGGED
    assert _vlan_lab(vs, [], []).uplink_profile("hv", "vs") == model.UNTAGGED


def test_uplink_profile_declared_replaces_each_part() -> None:
    both = model.VSwitch("vs", ("eth0",), trunk=frozenset({40}), untagged=False)
    assert _vlan_lab(both, [10, None], []).uplink_profile("hv", "vs") == model.PortProfile(
        trunk=frozenset({40}), untagged=False
    )
    trunk_only = model.VSwitch("vs", ("eth0",), trunk=frozenset({40}))
    assert _vlan_lab(trunk_only, [None], []).uplink_profile("hv", "vs").untagged
    assert not _vlan_lab(trunk_only, [10], []).uplink_profile("hv", "vs").untagged
    untagged_only = model.VSwitch("vs", ("eth0",), untagged=True)
    assert _vlan_lab(untagged_only, [10], [20]).uplink_profile("hv", "vs") == model.PortProfile(
        trunk=frozenset({10, 20}), untagged=True
    )


def test_switch_ports_not_listed_are_plain() -> None:
    trunk = model.PortProfile(trunk=frozenset({10}), untagged=False)
    switch = model.Switch("sw", ports=(("hv-eth0", trunk),))
    assert (switch.port_profile("hv-eth0"), switch.port_profile("other")) == (trunk, model.UNTAGGED)


def test_vlan_names() -> None:
    topo = Topology(lab="a", source="f", vlans=(model.Vlan("web", 110),))
    assert (topo.vlan_name(110), topo.vlan_name(20), topo.vlan_name(None)) == ("web", "20", None)


def test_renamed_moves_derived_vmknic_macs_and_keeps_declared_ones() -> None:
    derived = model.VmkNic("mgmt0", "vs", model.vmknic_mac("a", "hv", "mgmt0"))
    declared = model.VmkNic("vmot0", "vs", "02:00:00:00:00:09")
    topo = Topology(lab="a", source="f", hosts=(model.Host("hv", (), (), (derived, declared)),))
    nics = topo.renamed("b").host("hv").vmknics
    assert nics[0].mac == model.vmknic_mac("b", "hv", "mgmt0") == model.default_mac("b", "hv.mgmt0", 0)
    assert nics[1].mac == "02:00:00:00:00:09"
    assert nics[0].port == "mgmt0-br"
