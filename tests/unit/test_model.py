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
