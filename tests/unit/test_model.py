"""Pure model logic: names, derived MACs, renaming, VLAN profiles, firewall helpers."""

from __future__ import annotations

import re
from ipaddress import ip_interface, ip_network

import pytest

from netns_lab.topology import model, names
from netns_lab.topology.model import Nic, Topology, Vm


def test_default_mac_is_stable_unicast_and_local() -> None:
    mac = names.default_mac("nist", "web1", 0)
    assert mac == names.default_mac("nist", "web1", 0)
    assert re.fullmatch(r"02(:[0-9a-f]{2}){5}", mac)
    assert mac != names.default_mac("nist", "web1", 1) != names.default_mac("other", "web1", 0)


def test_renamed_moves_derived_macs_and_keeps_declared_ones() -> None:
    derived = Nic(0, "vs", names.default_mac("a", "vm", 0), ip_interface("10.0.0.1/24"))
    declared = Nic(1, "vs", "02:00:00:00:00:09")
    topo = Topology(lab="a", source="f.yaml", vms=(Vm("vm", "hv", (derived, declared)),))
    renamed = topo.renamed("b")
    assert renamed.lab == "b"
    nics = renamed.vm("vm").nics
    assert nics[0].mac == names.default_mac("b", "vm", 0)
    assert nics[1].mac == "02:00:00:00:00:09"
    assert topo.vm("vm").nics[0].mac == derived.mac


def test_kernel_object_names() -> None:
    assert names.namespace("nist", "web1") == "nist-web1"
    assert names.vm_port("web1", 2) == "web1-2"
    assert names.switch_port("hv1", "eth0") == "hv1-eth0"
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
    derived = model.VmkNic("mgmt0", "vs", names.vmknic_mac("a", "hv", "mgmt0"))
    declared = model.VmkNic("vmot0", "vs", "02:00:00:00:00:09")
    topo = Topology(lab="a", source="f", hosts=(model.Host("hv", (), (), (derived, declared)),))
    nics = topo.renamed("b").host("hv").vmknics
    assert nics[0].mac == names.vmknic_mac("b", "hv", "mgmt0") == names.default_mac("b", "hv.mgmt0", 0)
    assert nics[1].mac == "02:00:00:00:00:09"
    assert nics[0].port == "mgmt0-br"


# -- the NIC firewall ----------------------------------------------------------------------------
def _rule(
    rule_id: int, *apply: model.PeerSpec, action: model.Action = "allow", priority: int = 100
) -> model.FwRule:
    any_peer = (model.PeerSpec("any"),)
    return model.FwRule(rule_id, apply, "in", any_peer, "any", (), action, priority)


GROUP_A = model.PeerSpec("group", "a")
GROUP_B = model.PeerSpec("group", "b")


def _fw_lab(*rules: model.FwRule) -> Topology:
    """VMs x (3 NICs), y (1 NIC), z (1 NIC); groups a = {x, y.eth0}, b = {x.eth1, x}, empty."""
    x = Vm("x", "hv", tuple(Nic(i, "vs", f"02:00:00:00:00:0{i}") for i in range(3)))
    y = Vm("y", "hv", (Nic(0, "vs", "02:00:00:00:01:00", ip_interface("10.0.0.2/24")),))
    z = Vm("z", "hv", (Nic(0, "vs", "02:00:00:00:02:00"),))
    groups = (
        model.SecurityGroup("a", (("x", None), ("y", 0))),
        model.SecurityGroup("b", (("x", 1), ("x", None))),
        model.SecurityGroup("empty"),
    )
    return Topology(
        lab="l", source="f", vms=(x, y, z), security_groups=groups, firewall=model.FirewallSettings(rules)
    )


def _names(pairs: list[tuple[Vm, Nic]]) -> list[str]:
    return [f"{vm.name}.{nic.name}" for vm, nic in pairs]


def test_nics_of_groups_and_vms() -> None:
    topo = _fw_lab()
    assert topo.group("b").members == (("x", 1), ("x", None))
    assert _names(topo.nics_of(GROUP_A)) == ["x.eth0", "x.eth1", "x.eth2", "y.eth0"]
    assert _names(topo.nics_of(GROUP_B)) == ["x.eth1", "x.eth0", "x.eth2"]  # each NIC once
    assert topo.nics_of(model.PeerSpec("group", "empty")) == []
    assert _names(topo.nics_of(model.PeerSpec("vm", "x"))) == ["x.eth0", "x.eth1", "x.eth2"]
    assert _names(topo.nics_of(model.PeerSpec("vm", "x", 2))) == ["x.eth2"]


def test_nics_of_names_the_model_lacks_is_empty_and_addresses_have_no_nics() -> None:
    topo = _fw_lab()
    assert topo.nics_of(model.PeerSpec("group", "nope")) == []
    assert topo.nics_of(model.PeerSpec("vm", "nope")) == []
    assert topo.nics_of(model.PeerSpec("vm", "y", 5)) == []
    for spec in (model.PeerSpec("any"), model.PeerSpec("cidr", ip_network("10.0.0.0/8"))):
        with pytest.raises(ValueError):
            topo.nics_of(spec)


def test_firewalled_nics_are_those_some_rule_applies_to() -> None:
    assert _fw_lab().firewalled_nics() == set()
    topo = _fw_lab(_rule(1, GROUP_B), _rule(2, model.PeerSpec("vm", "y", 0)))
    assert topo.firewalled_nics() == {("x", 0), ("x", 1), ("x", 2), ("y", 0)}
    assert ("z", 0) not in topo.firewalled_nics()


def test_rules_for_a_nic_in_precedence_order() -> None:
    deny = _rule(9, GROUP_A, action="deny")
    low = _rule(30, model.PeerSpec("vm", "x", 1), priority=10)
    allow = _rule(5, GROUP_B)
    other = _rule(7, model.PeerSpec("vm", "y"))
    topo = _fw_lab(allow, deny, other, low)
    assert [r.id for r in topo.rules_for("x", 1)] == [30, 9, 5]  # priority, then deny, then id
    assert [r.id for r in topo.rules_for("x", 0)] == [9, 5]
    assert [r.id for r in topo.rules_for("y", 0)] == [9, 7]
    assert topo.rules_for("z", 0) == []
    assert (low.precedence, deny.precedence, allow.precedence) == ((10, 1, 30), (100, 0, 9), (100, 1, 5))


def test_groups_of_a_nic() -> None:
    topo = _fw_lab()
    assert (topo.groups_of("x", 0), topo.groups_of("x", 1), topo.groups_of("y", 0)) == (
        ["a", "b"],
        ["a", "b"],
        ["a"],
    )
    assert topo.groups_of("z", 0) == []


def test_nic_addresses_and_firewall_defaults() -> None:
    vip = ip_interface("10.0.0.100/32")
    nic = Nic(0, "vs", "02:00:00:00:00:01", ip_interface("10.0.0.2/24"), allowed_addresses=(vip,))
    assert nic.addresses == (ip_interface("10.0.0.2/24"), vip)
    assert Nic(0, "vs", "02:00:00:00:00:01", allowed_addresses=(vip,)).addresses == (vip,)
    assert (nic.port_security, Nic(1, "vs", "02:00:00:00:00:02").allowed_addresses) == (True, ())
    topo = Topology(lab="a", source="f")
    assert (topo.security_groups, topo.firewall) == ((), model.FirewallSettings())
    settings = topo.firewall
    assert (settings.ct_quota, settings.ct_quota_in, settings.ct_quota_peer) == (4096, 4096, 4096)
    assert (settings.tcp_timeout, settings.tcp_open_timeout) == (3600, 60)
    assert (settings.udp_timeout, settings.icmp_timeout, settings.frag_timeout) == (60, 30, 10)


def test_renamed_keeps_the_firewall() -> None:
    topo = _fw_lab(_rule(1, GROUP_A))
    renamed = topo.renamed("m")
    assert (renamed.security_groups, renamed.firewall) == (topo.security_groups, topo.firewall)
