"""The overlay in the topology: segments become one vSwitch ``sg-<vni>`` per hosting host with
untagged NICs on it, tenants may reuse addresses, and every bad overlay input is refused with its
field named (exit 2 through the CLI). Each bad case is one edit of the shipped overlay lab, which
loads cleanly as it is: that is the positive control of every row of the table.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import yaml

from netns_lab.features.overlay import checks
from netns_lab.topology import names
from netns_lab.topology.errors import TopologyError
from netns_lab.topology.loader import SCHEMA_PATH, load, load_text, parse_yaml
from netns_lab.topology.model import OVERLAY_MODES, SEGMENT_MTU, OverlaySettings, Segment, VSwitch

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "labs" / "overlay.yaml"
REFERENCE = ROOT / "labs" / "nist-800-125b.yaml"
SCHEMA = json.loads(SCHEMA_PATH.read_text())


def _data() -> dict[str, Any]:
    data, _ = parse_yaml(OVERLAY.read_text(), str(OVERLAY))
    return data


def _errors(data: dict[str, Any]) -> set[str]:
    with pytest.raises(TopologyError) as caught:
        load_text(yaml.safe_dump(data, sort_keys=False), "lab.yaml")
    return {str(issue) for issue in caught.value.errors}


# -- the good lab --------------------------------------------------------------------------------
def test_the_overlay_lab_converts_to_segment_vswitches_and_untagged_nics() -> None:
    topo = load(OVERLAY)
    assert topo.segments == (
        Segment("blue-web", 10010, "blue", "controller"),
        Segment("blue-db", 10020, "blue", "controller"),
        Segment("red-web", 20010, "red", "controller"),
    )
    assert topo.overlay == OverlaySettings("controller", 65000, "spine")
    # one sg-<vni> per segment a host's VMs use, by VNI, after the declared vSwitches
    assert [[vs.name for vs in h.vswitches] for h in topo.hosts] == [
        ["vs1", "sg-10010", "sg-20010"],
        ["vs1", "sg-10010", "sg-10020"],
        ["sg-10010", "sg-20010"],
    ]
    assert topo.host("hv2").vswitch("sg-10020") == VSwitch("sg-10020", segment="blue-db")
    bgw = topo.vm("bgw")
    assert [(n.vswitch, n.vlan, n.vni, n.segment) for n in bgw.nics] == [
        ("sg-10010", None, 10010, "blue-web"),
        ("sg-10020", None, 10020, "blue-db"),
    ]
    assert [(n.vswitch, n.vlan, n.vni, n.segment) for n in topo.vm("leg1").nics] == [("vs1", 100, None, None)]
    assert (bgw.tenant, topo.vm("rweb1").tenant, topo.vm("leg1").tenant) == ("blue", "red", None)
    assert [topo.nic_tenant(n) for n in (*bgw.nics, *topo.vm("leg1").nics)] == ["blue", "blue", None]


def test_overlay_queries() -> None:
    topo = load(OVERLAY)
    assert [topo.vtep_ip(h) for h in ("hv1", "hv2", "hv3")] == [
        IPv4Address("10.255.1.11"),
        IPv4Address("10.255.1.12"),
        IPv4Address("10.255.2.13"),
    ]
    assert topo.segment("red-web").vni == 20010
    assert topo.segment_hosts("blue-web") == ["hv1", "hv2", "hv3"]
    assert topo.segment_hosts("red-web") == ["hv1", "hv3"]
    assert [s.name for s in topo.host_segments("hv2")] == ["blue-web", "blue-db"]
    assert [r.name for r in topo.routers] == ["spine"]
    assert topo.node_names()[:3] == ["tor1", "tor2", "spine"]  # routers are nodes, after switches
    assert SEGMENT_MTU == 1450


def test_segment_vswitches_are_neither_internal_only_nor_vlan_trunks() -> None:
    """A segment's way out is its VXLAN device: not isolated, and no uplink VLAN profile."""
    topo = load(OVERLAY)
    sg = topo.host("hv1").vswitch("sg-10010")
    assert (sg.uplinks, sg.internal_only, sg.trunk, sg.untagged) == ((), False, None, None)
    assert VSwitch("vs9").internal_only  # the control: a declared vSwitch without uplinks is
    assert all(vlan is None for _, vlan in topo.vswitch_ports("hv1", "sg-10010"))


def test_tenants_reuse_addresses_on_their_segments() -> None:
    topo = load(OVERLAY)
    assert topo.vm("bweb1").nics[0].ip == topo.vm("rweb1").nics[0].ip


def test_kernel_object_names_of_the_overlay() -> None:
    assert (names.segment_bridge(10010), names.vxlan_dev(10010)) == ("sg-10010", "vx-10010")
    assert len(names.vxlan_dev(16777215)) <= names.IFNAMSIZ
    assert names.namespace("ovl", "spine") == "ovl-spine"
    assert names.router_port("spine", "eth0") == "spine-eth0"


def test_schema_defaults_are_the_models() -> None:
    overlay = SCHEMA["properties"]["overlay"]["properties"]
    assert tuple(SCHEMA["$defs"]["overlayMode"]["enum"]) == OVERLAY_MODES
    assert (overlay["mode"]["default"], overlay["asn"]["default"]) == (
        OverlaySettings().mode,
        OverlaySettings().asn,
    )


def test_segment_mode_defaults_to_the_lab_mode() -> None:
    data = _data()
    data["overlay"]["mode"] = "evpn"
    data["segments"]["red-web"]["mode"] = "flood"
    topo = load_text(yaml.safe_dump(data), "lab.yaml")
    assert [s.mode for s in topo.segments] == ["evpn", "evpn", "flood"]


def test_a_lab_without_overlay_sections_converts_as_before() -> None:
    topo = load(REFERENCE)
    assert (topo.segments, topo.routers, topo.machines, topo.overlay) == ((), (), (), OverlaySettings())
    assert all(vs.segment is None for h in topo.hosts for vs in h.vswitches)
    assert all(n.segment is None and n.vni is None for vm in topo.vms for n in vm.nics)
    assert topo.host("hv1").vswitch("vs2").internal_only


# -- bad input: one edit of the good lab, its exact messages -------------------------------------
Edit = Callable[[dict[str, Any]], None]


def _set(*path: Any, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        node[path[-1]] = value

    return edit


def _delete(*path: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


def _both(*edits: Edit) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        for one in edits:
            one(data)

    return edit


HV1_ETH0 = ("hosts", "hv1", "pnics", "eth0")
BWEB1_NIC = ("vms", "bweb1", "nics", 0)
OVERLAY_ROOT = "lab.yaml: "
PLAIN_PNIC = {"switch": "tor1", "driver": "ixgbe", "pci_bus": "0000:03:00.0"}
SECOND_ROUTED_PNIC = {
    "switch": "tor2",
    "driver": "ixgbe",
    "pci_bus": "0000:04:00.0",
    "ip": "10.255.2.11/24",
    "gateway": "10.255.2.1",
}
BAD: list[tuple[str, Edit, set[str]]] = [
    (
        "vni-0",
        _set("segments", "blue-web", "vni", value=0),
        {"segments.blue-web.vni: 0 is not in 1..16777215"},
    ),
    (
        "vni-too-big",
        _set("segments", "blue-web", "vni", value=16777216),
        {"segments.blue-web.vni: 16777216 is not in 1..16777215"},
    ),
    (
        "duplicate-vni",
        _set("segments", "red-web", "vni", value=10010),
        {"segments.red-web.vni: 10010 is already the VNI of blue-web"},
    ),
    (
        "mode",
        _both(_set("overlay", "mode", value="mesh"), _set("segments", "blue-db", "mode", value="learn")),
        {
            "overlay.mode: 'mesh' is not one of: flood, controller, evpn",
            "segments.blue-db.mode: 'learn' is not one of: flood, controller, evpn",
        },
    ),
    (
        "segment-without-tenant",
        _delete("segments", "red-web", "tenant"),
        {"segments.red-web: missing required key 'tenant'"},
    ),
    (
        "segment-bad-name",
        _set("segments", "Blue", value={"vni": 7, "tenant": "blue"}),
        {
            "segments.Blue: 'Blue' is not a valid segment name: lowercase letters, digits and dashes, "
            "starting with a letter, at most 32 characters"
        },
    ),
    (
        "host-without-vtep",
        _delete("hosts", "hv3", "vtep"),
        {
            "hosts.hv3.vtep: missing: hv3 hosts segments (bweb3 on blue-web, rweb3 on red-web) and "
            "reaches their other hosts through its VTEP: name the pNIC whose address it is"
        },
    ),
    (
        "vtep-unknown-pnic",
        _set("hosts", "hv1", "vtep", value="eth00"),
        {"hosts.hv1.vtep: 'eth00' is not a pNIC of hv1 (did you mean 'eth0'? pNICs of hv1: eth0, eth1)"},
    ),
    (
        "vtep-without-ip",
        _both(_delete(*HV1_ETH0, "ip"), _delete(*HV1_ETH0, "gateway")),
        {"hosts.hv1.vtep: pNIC eth0 has no 'ip': the VTEP's address is that of its pNIC"},
    ),
    (
        "vtep-ipv6",
        _both(_set(*HV1_ETH0, "ip", value="2001:db8::11/64"), _delete(*HV1_ETH0, "gateway")),
        {"hosts.hv1.vtep: pNIC eth0's address 2001:db8::11/64 is IPv6: VXLAN tunnels here run over IPv4"},
    ),
    (
        "vtep-is-an-uplink",
        _set("hosts", "hv1", "vtep", value="eth1"),
        {
            "hosts.hv1.vtep: pNIC eth1 is the uplink of vSwitch vs1: a VTEP's pNIC is a routed "
            "interface of the host, not a vSwitch uplink (a bridge port)"
        },
    ),
    (
        "address-on-an-uplink",
        _set("hosts", "hv1", "pnics", "eth1", "ip", value="10.255.1.21/24"),
        {
            "hosts.hv1.pnics.eth1.ip: pNIC eth1 is the uplink of vSwitch vs1, a bridge port, which "
            "takes no address (give the address to a pNIC that no vSwitch uses)"
        },
    ),
    (
        "two-tenants",
        _set("vms", "bgw", "nics", 1, "segment", value="red-web"),
        {
            "vms.bgw.nics[1].segment: segment 'red-web' is of tenant red, but nics[0] is on 'blue-web' "
            "of tenant blue: a VM belongs to one tenant"
        },
    ),
    (
        "tenant-of-the-vm",
        _set("vms", "rweb1", "tenant", value="blue"),
        {"vms.rweb1.nics[0].segment: segment 'red-web' is of tenant red, not of rweb1's tenant blue"},
    ),
    (
        "segment-and-vswitch-and-vlan",
        _both(_set(*BWEB1_NIC, "vswitch", value="vs1"), _set(*BWEB1_NIC, "vlan", value="legacy")),
        {
            "vms.bweb1.nics[0].vswitch: a NIC on a segment plugs into the segment's own vSwitch "
            "(sg-10010): give 'segment' or 'vswitch', not both",
            "vms.bweb1.nics[0].vlan: a NIC on a segment is untagged: its segment is its layer-2 network",
        },
    ),
    (
        "segment-and-vni",
        _set(*BWEB1_NIC, "vni", value=10010),
        {"vms.bweb1.nics[0].vni: the segment gives the NIC its VNI (10010): leave 'vni' out"},
    ),
    (
        "neither-segment-nor-vswitch",
        _delete(*BWEB1_NIC, "segment"),
        {"vms.bweb1.nics[0]: missing required key 'vswitch'"},
    ),
    (
        "unknown-segment",
        _set(*BWEB1_NIC, "segment", value="blue-wev"),
        {
            "vms.bweb1.nics[0].segment: unknown segment 'blue-wev' (did you mean 'blue-web'? "
            "segments: blue-web, blue-db, red-web)"
        },
    ),
    (
        "evpn-without-reflector",
        _both(_set("overlay", "mode", value="evpn"), _delete("overlay", "route_reflector")),
        {
            "overlay.route_reflector: missing: evpn, the mode of blue-web, blue-db, red-web, sends its "
            "routes through a route reflector (name a router or a host)"
        },
    ),
    (
        "unknown-reflector",
        _set("overlay", "route_reflector", value="spin"),
        {
            "overlay.route_reflector: unknown router or host 'spin' (did you mean 'spine'? "
            "routers and hosts: spine, hv1, hv2, hv3)"
        },
    ),
    (
        "router-unknown-switch",
        _set("routers", "spine", "nics", "eth1", "switch", value="tor3"),
        {"routers.spine.nics.eth1.switch: unknown switch 'tor3' (did you mean 'tor2'? switches: tor1, tor2)"},
    ),
    (
        "router-without-nics",
        _set("routers", "spine", "nics", value={}),
        {"routers.spine.nics: must not be empty"},
    ),
    (
        "router-named-like-a-host",
        _set("routers", "hv3", value={"nics": {"eth9": {"switch": "tor2", "ip": "10.255.2.2/24"}}}),
        {
            "hosts.hv3: 'hv3' is already the name of routers.hv3 "
            "(switches, routers, networks, appliances, hosts and vms share one set of names)"
        },
    ),
    (
        "router-port-too-long",
        _set("routers", "spine", "nics", "uplinkwest", value={"switch": "tor2", "ip": "10.255.2.3/24"}),
        {
            "routers.spine.nics.uplinkwest: switch port 'spine-uplinkwest' is 16 bytes long, "
            "over the 15-byte limit of interface names"
        },
    ),
    (
        "same-address-in-one-segment",
        _set("vms", "bweb2", "nics", 0, "ip", value="10.0.0.11/24"),
        {"vms.bweb2.nics[0].ip: 10.0.0.11 is already used by vms.bweb1.nics[0]"},
    ),
    (
        "same-address-in-the-underlay",
        _set("routers", "spine", "nics", "eth0", "ip", value="10.255.1.11/24"),
        {"hosts.hv1.pnics.eth0.ip: 10.255.1.11 is already used by routers.spine.nics.eth0"},
    ),
    (
        "gateway-off-the-pnic",
        _set(*HV1_ETH0, "gateway", value="10.255.2.1"),
        {
            "hosts.hv1.pnics.eth0.gateway: 10.255.2.1 is not on any subnet of hv1.eth0's address "
            "(10.255.1.0/24)"
        },
    ),
    (
        "two-default-routes",
        _set("hosts", "hv1", "pnics", "eth2", value=SECOND_ROUTED_PNIC),
        {"hosts.hv1.pnics.eth2.gateway: hv1 already has its IPv4 default route through pNIC eth0"},
    ),
    (
        "router-route-off-link",
        _set("routers", "spine", "routes", value=[{"to": "10.9.0.0/16", "via": "10.254.0.1"}]),
        {
            "routers.spine.routes[0].via: 10.254.0.1 is not on any subnet of spine's NICs "
            "(10.255.1.0/24, 10.255.2.0/24)"
        },
    ),
    (
        "reflector-host-without-address",
        _both(
            _set("hosts", "hv4", value={"pnics": {"eth0": {**PLAIN_PNIC, "switch": "tor2"}}}),
            _set("overlay", "route_reflector", value="hv4"),
        ),
        {
            "overlay.route_reflector: host hv4 has no underlay address (a pNIC with 'ip') for the "
            "VTEPs to reach it at"
        },
    ),
    (
        "vtep-peer-unreachable",
        _delete(*HV1_ETH0, "gateway"),
        {
            "hosts.hv1.vtep: 10.255.2.13 (hv3's VTEP, segment blue-web) is on no subnet of hv1's "
            "pNICs and no route or gateway leads there"
        },
    ),
    (
        "vtep-peer-routed",
        _both(
            _delete(*HV1_ETH0, "gateway"),
            _set(*HV1_ETH0, "routes", value=[{"to": "10.255.2.0/24", "via": "10.255.1.1"}]),
        ),
        set(),
    ),
    (
        "routed-pnic-on-a-tagged-trunk",
        _set("switches", "tor2", "ports", value={"hv3-eth0": {"trunk": ["legacy"]}}),
        {
            "switches.tor2.ports.hv3-eth0: hv3's pNIC eth0 is routed (it has an 'ip') and sends "
            "untagged frames, which this trunk does not carry (add 'untagged: true' or make it plain)"
        },
    ),
    (
        "machine-unknown",
        _both(
            _set("machines", value=["m1", "m2"]),
            *(_set("hosts", h, "machine", value=m) for h, m in (("hv1", "m1"), ("hv2", "m1"), ("hv3", "m3"))),
        ),
        {
            "hosts.hv3.machine: unknown machine 'm3' (machines: m1, m2)",
            "machines[1]: machine 'm2' has no hosts: 'nlab up --machine m2' would build nothing "
            "(place a host on it with 'machine: m2', or leave it out)",
        },
    ),
    (
        "machine-twice",
        _both(_set("machines", value=["m1", "m1"]), _set("hosts", "hv1", "machine", value="m1")),
        {"machines[1]: 'm1' is already listed at machines[0]"},
    ),
]


@pytest.mark.parametrize(("edit", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_overlay_input_names_its_field(edit: Edit, expected: set[str]) -> None:
    """An empty set is a positive control: the edit is allowed."""
    data = copy.deepcopy(_data())
    edit(data)
    if not expected:
        load_text(yaml.safe_dump(data, sort_keys=False), "lab.yaml")
        return
    assert _errors(data) == {OVERLAY_ROOT + message for message in expected}


def test_hosts_on_declared_machines_load() -> None:
    data = _data()
    data["machines"] = ["m1", "m2"]
    for host, machine in (("hv1", "m1"), ("hv2", "m1"), ("hv3", "m2")):
        data["hosts"][host]["machine"] = machine
    topo = load_text(yaml.safe_dump(data), "lab.yaml")
    assert (topo.machines, topo.machine_hosts("m1"), topo.machine_hosts("m2")) == (
        ("m1", "m2"),
        ["hv1", "hv2"],
        ["hv3"],
    )


def test_a_segment_left_out_leaves_its_vms_out_silently() -> None:
    """One structural error in a segment is one message: its VMs wait, they are not dangling."""
    data = _data()
    data["segments"]["blue-db"]["colour"] = "blue"
    assert _errors(data) == {
        "lab.yaml: segments.blue-db.colour: unknown key (allowed: vni, tenant, mode)",
    }


def test_nlab_validate_exits_2_naming_the_field(tmp_path: Path) -> None:
    data = _data()
    data["segments"]["blue-web"]["vni"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    cli = [sys.executable, "-m", "netns_lab", "validate"]
    good = subprocess.run([*cli, str(OVERLAY)], capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stderr  # the control
    proc = subprocess.run([*cli, str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert f"{bad}: segments.blue-web.vni: 0 is not in 1..16777215" in proc.stderr


# -- VM-VN-R2 and VM-VN-R3 -----------------------------------------------------------------------
def test_r2_flags_vlans_that_sprawl_over_more_than_two_hosts() -> None:
    r2 = checks.vm_vn_r2(load(REFERENCE))
    assert r2["status"] == "not met"
    assert r2["objects"] == [
        "VLAN management (10) on hv1, hv2, hv3",
        "VLAN migration (20) on hv1, hv2, hv3",
        "VLAN logging (30) on hv1, hv2, hv3",
        "VLAN app (120) on hv1, hv2, hv3",
    ]
    # the threshold is the rule: with a limit of 3 hosts nothing sprawls, and no segment is overlay
    assert checks.vm_vn_r2(load(REFERENCE), span_limit=3)["status"] == "not applicable"


def test_r2_is_met_by_the_overlay_lab_and_broken_by_one_vlan_more() -> None:
    topo = load(OVERLAY)
    r2 = checks.vm_vn_r2(topo)
    assert (r2["status"], r2["objects"]) == ("met", [])
    assert "blue-web, red-web" in r2["reason"]  # blue-db is on hv2 only: it spans nothing
    data = _data()
    data["hosts"]["hv3"]["pnics"]["eth1"] = {"switch": "tor1", "driver": "i40e", "pci_bus": "0000:5e:00.1"}
    data["hosts"]["hv3"]["vswitches"] = {"vs1": {"uplinks": ["eth1"]}}
    data["switches"]["tor1"]["ports"]["hv3-eth1"] = {"trunk": ["legacy"]}
    data["vms"]["leg3"] = {
        "host": "hv3",
        "nics": [{"vswitch": "vs1", "vlan": "legacy", "ip": "10.100.0.13/24"}],
    }
    sprawl = checks.vm_vn_r2(load_text(yaml.safe_dump(data), "lab.yaml"))
    assert (sprawl["status"], sprawl["objects"]) == ("not met", ["VLAN legacy (100) on hv1, hv2, hv3"])


def test_r3_wants_a_controller_or_evpn() -> None:
    assert checks.vm_vn_r3(load(REFERENCE))["status"] == "not applicable"
    r3 = checks.vm_vn_r3(load(OVERLAY))
    assert (r3["status"], r3["objects"]) == ("met", [])
    data = _data()
    data["segments"]["red-web"]["mode"] = "flood"
    data["segments"]["blue-db"]["mode"] = "evpn"
    r3 = checks.vm_vn_r3(load_text(yaml.safe_dump(data), "lab.yaml"))
    assert (r3["status"], r3["objects"]) == ("not met", ["segment red-web (VNI 20010, tenant red)"])
    data["segments"]["red-web"]["mode"] = "evpn"
    r3 = checks.vm_vn_r3(load_text(yaml.safe_dump(data), "lab.yaml"))
    assert r3["status"] == "met"
    assert r3["reason"] == (
        "every segment's VTEP tables are programmed by the lab's controller (blue-web) "
        "and by BGP EVPN (blue-db, red-web)"
    )


def test_checks_have_the_audit_shape() -> None:
    for rec in checks.check(load(OVERLAY)) + checks.check(load(REFERENCE)):
        assert set(rec) == {"id", "status", "reason", "objects"}
        assert rec["status"] in ("met", "not met", "not applicable") and rec["reason"]
    assert [rec["id"] for rec in checks.check(load(OVERLAY))] == ["VM-VN-R2", "VM-VN-R3"]


# -- the status document -------------------------------------------------------------------------
def test_status_shows_vni_tenant_and_vtep_from_the_model() -> None:
    from netns_lab.lab import status  # the kernel side is read for presence only: no lab of this name runs

    topo = load(OVERLAY, lab="ovtopoq")
    nics = {vm.name: status._vm(topo, vm)["nics"] for vm in topo.vms}
    picked = [(n["vswitch"], n["vni"], n["segment"], n["tenant"]) for n in nics["bgw"] + nics["leg1"]]
    assert picked == [
        ("sg-10010", 10010, "blue-web", "blue"),
        ("sg-10020", 10020, "blue-db", "blue"),
        ("vs1", None, None, None),
    ]
    assert not any(n["present"] for nic_list in nics.values() for n in nic_list)
    hv3 = status._host(topo, topo.host("hv3"))
    assert hv3["vtep"] == "10.255.2.13"
    assert [(v["name"], v["segment"], v["internal_only"]) for v in hv3["vswitches"]] == [
        ("sg-10010", "blue-web", False),
        ("sg-20010", "red-web", False),
    ]
    reference = load(REFERENCE, lab="ovtopoq")
    assert status._host(reference, reference.host("hv1"))["vtep"] is None
    assert status.segments_doc(topo)[2] == {
        "name": "red-web",
        "vni": 20010,
        "tenant": "red",
        "mode": "controller",
        "bridge": "sg-20010",
        "vxlan": "vx-20010",
        "hosts": ["hv1", "hv3"],
    }


def test_loading_and_checking_the_overlay_lab_leaves_the_kernel_side_out() -> None:
    code = (
        "import sys\n"
        "from netns_lab.topology import loader\n"
        "from netns_lab.features.overlay import checks\n"
        f"checks.check(loader.load({str(OVERLAY)!r}))\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = set(proc.stdout.split())
    assert {"netns_lab.topology.validate_overlay", "netns_lab.features.overlay.checks"} <= loaded
    assert not loaded & {"bcc", "pyroute2", "scapy", "dataplane", "netns_lab.lab.status"}


def test_the_drawing_shows_routers_segments_and_vteps() -> None:
    from netns_lab.observe import graph

    text = graph.dot(load(OVERLAY))
    assert '"router/spine" -- "switch/tor2" [label="eth1 10.255.2.1/24", fontsize=8];' in text
    assert '"hv3/eth0" -- "switch/tor2" [label="10.255.2.13/24 VTEP", fontsize=8];' in text
    assert '"bgw" -- "hv2/sg-10020" [label="eth1 vni 10020", fontsize=8];' in text
    assert "sg-20010\\n(segment red-web, VNI 20010, red)" in text
    assert "router" not in graph.dot(load(REFERENCE)).replace("[router]", "")  # the control
