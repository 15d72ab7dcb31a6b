"""The topology loader: bad files fail with exactly their expected messages, good files load to
their golden models, ``--name`` renames a lab and re-runs every check, and no input crashes it.

Each ``bad/*.yaml`` begins with ``# expect: <file>: path: reason`` lines, ``<file>`` standing for
the file's path; the set of messages must be exactly that set. Golden models are
``good/<name>.expected.json`` for ``good/*.yaml`` and ``labs/*.yaml``; regenerate them with
``UPDATE_GOLDEN=1 pytest tests/unit/test_loader.py`` and review the diff.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netns_lab.topology.errors import Issue, TopologyError
from netns_lab.topology.loader import load, load_text, parse_yaml
from netns_lab.topology.model import (
    UNTAGGED,
    FirewallSettings,
    PeerSpec,
    PortProfile,
    SecurityGroup,
    Topology,
    Vlan,
)
from netns_lab.topology.names import default_mac, vmknic_mac

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
REFERENCE = ROOT / "labs" / "nist-800-125b.yaml"
BAD = sorted((HERE / "bad").glob("*.yaml"))
GOOD = sorted((HERE / "good").glob("*.yaml")) + sorted((ROOT / "labs").glob("*.yaml"))
EXPECT = "# expect: "
LAB_HINT = "lowercase letters and digits, starting with a letter, at most 8 characters"
MINIMAL = (HERE / "good" / "minimal.yaml").read_text()
VLANS = HERE / "good" / "vlans.yaml"
FIREWALL = HERE / "good" / "firewall.yaml"


def expected_messages(path: Path) -> set[str]:
    lines = path.read_text().splitlines()
    return {line[len(EXPECT) :].replace("<file>", str(path)) for line in lines if line.startswith(EXPECT)}


def messages(err: TopologyError) -> set[str]:
    return {str(issue) for issue in err.errors}


def errors_of(text: str, lab: str | None = None, source: str = "lab.yaml") -> set[str]:
    with pytest.raises(TopologyError) as caught:
        load_text(text, source, lab=lab)
    return messages(caught.value)


def as_json(topo: Topology) -> str:
    """The model as JSON, without its source path (which depends on where tests run)."""
    data = dataclasses.asdict(topo, dict_factory=_without_absent_blocks)
    del data["source"]
    return json.dumps(data, indent=2, default=_json_value) + "\n"


OPTIONAL_BLOCKS = {"team"}  # a file without such a block keeps its golden as it was


def _without_absent_blocks(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {key: value for key, value in pairs if not (key in OPTIONAL_BLOCKS and value is None)}


def _json_value(value: Any) -> Any:
    """Sets (VLAN trunks) sorted, so that a golden file does not depend on set order."""
    return sorted(value) if isinstance(value, frozenset) else str(value)


# -- bad files -----------------------------------------------------------------------------------
def test_there_are_enough_bad_files() -> None:
    assert len(BAD) >= 30


@pytest.mark.parametrize("path", BAD, ids=lambda path: path.stem)
def test_bad_file_fails_with_exactly_its_messages(path: Path) -> None:
    expected = expected_messages(path)
    assert expected, f"{path.name} has no '{EXPECT}' line"
    with pytest.raises(TopologyError) as caught:
        load(path)
    assert messages(caught.value) == expected
    assert set(str(caught.value).splitlines()) == expected
    assert len(caught.value.errors) == len(expected), "an issue is reported twice"


# -- good files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", GOOD, ids=lambda path: path.stem)
def test_good_file_matches_its_golden_model(path: Path) -> None:
    golden = HERE / "good" / f"{path.stem}.expected.json"
    actual = as_json(load(path))
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(actual)
    assert golden.exists(), f"no {golden.name}: run with UPDATE_GOLDEN=1 and review it"
    assert actual == golden.read_text()


def test_reference_lab_loads() -> None:
    topo = load(REFERENCE)
    assert (topo.lab, topo.source) == ("nist", str(REFERENCE))
    assert (len(topo.hosts), len(topo.switches), len(topo.vms), len(topo.networks)) == (3, 2, 14, 3)
    assert sorted(vm.name for vm in topo.vms if vm.role == "firewall") == ["vm1", "vm4"]
    assert topo.vm("analyzer").role == "analyzer"
    assert all(vm.nftables for vm in topo.vms if vm.role == "firewall")
    assert all(vm.nftables is None for vm in topo.vms if vm.role != "firewall")
    assert topo.host("hv1").vswitch("vs2").internal_only
    assert topo.node_names()[:4] == ["tor1", "tor2", "internet", "internal"]


def test_model_mapping() -> None:
    topo = load(REFERENCE)
    vm1 = topo.vm("vm1")
    assert [(nic.index, nic.name, nic.vswitch) for nic in vm1.nics] == [
        (0, "eth0", "vs1"),
        (1, "eth1", "vs2"),
    ]
    assert vm1.nics[0].ip == IPv4Interface("198.51.100.1/24")
    assert vm1.routes[0].to == IPv4Network("10.30.0.0/24")
    assert vm1.routes[0].via == IPv4Address("10.20.0.254")
    assert topo.vm("web1").gateway == IPv4Address("10.20.0.1")
    assert topo.vm("web1").nics[0].mac == default_mac("nist", "web1", 0)
    assert topo.host("hv1").pnics[1].pci_bus == "0000:81:00.0"
    assert topo.host("hv2").vswitch("prod").uplinks == ("eth1", "eth0")
    assert topo.host("hv2").vswitch("prod").team is not None
    [link] = topo.switch_links()
    assert (link.a, link.b, link.profile.untagged) == ("tor1", "tor2", False)
    assert {topo.vlan_name(v) for v in link.profile.trunk} == {
        "app",
        "db",
        "desktop",
        "management",
        "migration",
        "logging",
        "storage",
    }
    assert topo.description == "NIST SP 800-125B reference data center"


def test_missing_sections_are_empty() -> None:
    topo = load_text("lab: empty\n", "lab.yaml")
    assert (topo.switches, topo.networks, topo.hosts, topo.vms, topo.description) == ((), (), (), (), "")


def test_yaml_scalars_are_read_as_yaml_1_2() -> None:
    topo = load(HERE / "good" / "yaml-features.yaml")
    assert [pnic.pci_bus for pnic in topo.hosts[0].pnics] == ["0000:03:00.0", "0000:03:00.1"]
    assert topo.vm("no").nics[0].mac == "12:34:56:00:00:01"
    assert [vm.name for vm in topo.vms] == ["no", "yes"]


def test_ipv6_and_tags() -> None:
    topo = load(HERE / "good" / "ipv6-vlan.yaml")
    web1 = topo.vm("web1")
    assert web1.nics[0].ip == IPv6Interface("2001:db8:ff::11/64")
    assert (web1.nics[0].vlan, web1.nics[1].vlan, topo.vm("app1").nics[0].vni) == (10, 4094, 16777215)


def test_vlans_are_stored_as_ids() -> None:
    topo = load(VLANS)
    assert topo.vlans == (Vlan("management", 10), Vlan("migration", 20), Vlan("app", 100), Vlan("web", 110))
    assert [nic.vlan for vm in ("app1", "web1", "app2", "db1") for nic in topo.vm(vm).nics] == [
        100,
        110,
        100,
        None,
    ]
    hv1 = topo.host("hv1")
    assert [(k.name, k.vswitch, k.vlan, k.port) for k in hv1.vmknics] == [
        ("mgmt0", "vs3", 10, "mgmt0-br"),
        ("vmotion0", "vs3", 20, "vmotion0-br"),
    ]
    assert hv1.vmknics[0].mac == vmknic_mac("vl", "hv1", "mgmt0") != topo.host("hv2").vmknics[0].mac
    assert hv1.vmknics[1].mac == "02:00:00:00:0a:01"
    assert (hv1.vswitch("vs3").trunk, hv1.vswitch("vs3").untagged) == (frozenset({10, 20, 100}), False)
    assert (hv1.vswitch("front").trunk, hv1.vswitch("front").untagged) == (None, None)


def test_switch_ports_keep_file_order_and_profiles() -> None:
    topo = load(VLANS)
    assert topo.switch("tor1").ports == (("hv2-eth0", UNTAGGED), ("internet", UNTAGGED))
    assert topo.switch("tor2").ports == (
        ("hv1-eth1", PortProfile(trunk=frozenset({10, 20, 100}), untagged=False)),
        ("hv2-eth1", PortProfile(trunk=frozenset({10, 100, 110}), untagged=True)),
        ("internal", PortProfile(access=100)),
    )
    assert topo.switch("tor1").port_profile("hv1-eth0") == UNTAGGED


def test_uplink_profiles_of_the_vlans_lab() -> None:
    topo = load(VLANS)
    assert topo.uplink_profile("hv1", "front") == UNTAGGED  # fw1's NIC is untagged
    assert topo.uplink_profile("hv1", "vs3") == PortProfile(trunk=frozenset({10, 20, 100}), untagged=False)
    assert topo.uplink_profile("hv2", "prod") == PortProfile(trunk=frozenset({10, 100, 110}), untagged=True)
    assert topo.uplink_profile("hv2", "spare") == UNTAGGED


@pytest.mark.parametrize("section", ["", "vlans:\n", "vlans: {}\n"])
def test_without_declared_vlans_any_id_is_accepted(section: str) -> None:
    text = section + MINIMAL.replace("ip: 10.0.0.11/24}", "ip: 10.0.0.11/24, vlan: 3000}")
    assert load_text(text, "lab.yaml").vm("web1").nics[0].vlan == 3000


def test_a_whole_float_is_a_vlan_id() -> None:
    text = "vlans: {web: 110.0}\n" + MINIMAL.replace("ip: 10.0.0.11/24}", "ip: 10.0.0.11/24, vlan: 110.0}")
    topo = load_text(text, "lab.yaml")
    assert (topo.vlans, topo.vm("web1").nics[0].vlan) == ((Vlan("web", 110),), 110)


def test_a_bad_vlan_leaves_the_other_checks_of_its_node_running() -> None:
    """A trunk listing a VLAN twice is reported, and the host's other problems too."""
    text = MINIMAL.replace("vs1: {uplinks: [eth0]}", "vs1: {uplinks: [eth0], trunk: [7, 7]}\n      eth0: {}")
    assert errors_of(text) == {
        "lab.yaml: hosts.hv1.vswitches.vs1.trunk[1]: VLAN 7 is already listed at trunk[0]",
        "lab.yaml: hosts.hv1.vswitches.eth0: "
        "vSwitch 'eth0' has the same interface name as pNIC 'eth0' in host hv1",
    }


def test_a_port_check_waits_for_the_hosts_left_out() -> None:
    """hv1-eth0 exists, but hv1 is left out for a structural error: no dangling-port report."""
    text = MINIMAL.replace("  tor1: {}", "  tor1: {ports: {hv1-eth0: {untagged: true}}}")
    text = text.replace("driver: ixgbe, ", "")
    assert errors_of(text) == {"lab.yaml: hosts.hv1.pnics.eth0: missing required key 'driver'"}


def _one_entry_broken(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every declared entry (node, VLAN, group, session, rule) of a topology, made structurally
    wrong one at a time: (where the one expected problem is, the broken data)."""
    sections = ("switches", "routers", "networks", "hosts", "vms", "vlans", "security_groups", "mirrors")
    for section in (*sections, "segments"):
        for name in data.get(section) or {}:
            broken = copy.deepcopy(data)
            entry = broken[section][name]
            if isinstance(entry, dict):
                entry["colour"] = "red"
            else:
                broken[section][name] = {"colour": "red"}
            yield f"{section}.{name}", broken
    for index, _ in enumerate((data.get("firewall") or {}).get("rules") or []):
        broken = copy.deepcopy(data)
        broken["firewall"]["rules"][index]["colour"] = "red"
        yield f"firewall.rules[{index}]", broken


def _one_reference_broken(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every reference to a switch, host, vSwitch, segment, VTEP pNIC or route reflector of a
    topology, made dangling one at a time."""
    for name, vm in (data.get("vms") or {}).items():
        broken = copy.deepcopy(data)
        broken["vms"][name]["host"] = "nosuchhost"
        yield f"vms.{name}.host", broken
        for index, nic in enumerate(vm.get("nics") or []):
            broken = copy.deepcopy(data)
            broken["vms"][name]["nics"][index]["vswitch"] = "nosuchvs"
            yield f"vms.{name}.nics[{index}].vswitch", broken
            if "segment" in nic:
                broken = copy.deepcopy(data)
                broken["vms"][name]["nics"][index]["segment"] = "nosuchseg"
                yield f"vms.{name}.nics[{index}].segment", broken
    for name, host in (data.get("hosts") or {}).items():
        if "vtep" in host:
            broken = copy.deepcopy(data)
            broken["hosts"][name]["vtep"] = "nosuchpnic"
            yield f"hosts.{name}.vtep", broken
        for pnic in host.get("pnics") or {}:
            broken = copy.deepcopy(data)
            broken["hosts"][name]["pnics"][pnic]["switch"] = "nosuchsw"
            yield f"hosts.{name}.pnics.{pnic}.switch", broken
        for vswitch, vs in (host.get("vswitches") or {}).items():
            if (vs or {}).get("uplinks"):
                broken = copy.deepcopy(data)
                broken["hosts"][name]["vswitches"][vswitch]["uplinks"][0] = "nosuchpnic"
                yield f"hosts.{name}.vswitches.{vswitch}.uplinks[0]", broken
    for name in data.get("networks") or {}:
        broken = copy.deepcopy(data)
        broken["networks"][name]["switch"] = "nosuchsw"
        yield f"networks.{name}.switch", broken
    for name, router in (data.get("routers") or {}).items():
        for nic in router["nics"]:
            broken = copy.deepcopy(data)
            broken["routers"][name]["nics"][nic]["switch"] = "nosuchsw"
            yield f"routers.{name}.nics.{nic}.switch", broken
    if (data.get("overlay") or {}).get("route_reflector"):
        broken = copy.deepcopy(data)
        broken["overlay"]["route_reflector"] = "nosuchnode"
        yield "overlay.route_reflector", broken


@pytest.mark.parametrize("path", GOOD, ids=lambda path: path.stem)
def test_one_broken_entry_is_one_problem_and_nothing_else(path: Path) -> None:
    """A typo in one entry never reports anything elsewhere: the checks that read an entry left
    out of the model (a session mirroring a VM, a path through a host) wait until it is fixed."""
    data, _ = parse_yaml(path.read_text(), str(path))
    for where, broken in _one_entry_broken(data):
        problems = errors_of(yaml.safe_dump(broken, sort_keys=False))
        elsewhere = {p for p in problems if not p.startswith(f"lab.yaml: {where}")}
        assert len(problems) == 1 and not elsewhere, (where, problems)


@pytest.mark.parametrize("path", GOOD, ids=lambda path: path.stem)
def test_one_dangling_reference_is_one_problem_and_nothing_else(path: Path) -> None:
    """A node whose switch, host or vSwitch does not exist is reported there, and nowhere else."""
    data, _ = parse_yaml(path.read_text(), str(path))
    for where, broken in _one_reference_broken(data):
        problems = errors_of(yaml.safe_dump(broken, sort_keys=False))
        assert [p.split(": ")[1] for p in problems] == [where], (where, problems)


# -- the NIC firewall ----------------------------------------------------------------------------
def test_security_groups_keep_their_members_in_file_order() -> None:
    topo = load(FIREWALL)
    assert topo.security_groups[:3] == (
        SecurityGroup("web", (("web1", None), ("web2", None))),
        SecurityGroup("app", (("app1", 0), ("app2", 0))),
        SecurityGroup("dbclients", (("app1", 1), ("app2", 1))),
    )
    assert topo.group("quarantine").members == ()


def test_rules_are_parsed() -> None:
    rules = {rule.id: rule for rule in load(FIREWALL).firewall.rules}
    assert [rule.id for rule in load(FIREWALL).firewall.rules] == [
        10,
        11,
        20,
        21,
        30,
        31,
        40,
        41,
        42,
        50,
        51,
        60,
        70,
    ]
    r40, r41, r42 = rules[40], rules[41], rules[42]
    assert r40.apply == (
        PeerSpec("group", "web"),
        PeerSpec("group", "app"),
        PeerSpec("group", "db"),
        PeerSpec("vm", "gw1"),
    )
    assert (r40.peers, r40.proto, r40.ports, r40.priority) == (
        (PeerSpec("vm", "admin1"),),
        "tcp",
        ((22, 22),),
        100,
    )
    assert r40.description == "SSH from the admin station"
    assert r41.apply == (PeerSpec("vm", "web1"), PeerSpec("vm", "app1", 0))
    assert r41.peers == (
        PeerSpec("cidr", IPv4Network("10.10.0.0/24")),
        PeerSpec("cidr", IPv4Network("10.20.0.1/32")),
    )
    assert (r42.proto, r42.ports, r42.peers[0].value) == (
        "icmpv6",
        ((128, 128), (133, 136)),
        IPv6Network("2001:db8:10::/64"),
    )
    assert rules[21].apply == (PeerSpec("group", "app"),) and rules[21].ports == ((8080, 8080),)
    assert (rules[60].proto, rules[60].ports, rules[60].action, rules[60].priority) == ("any", (), "deny", 10)


def test_connection_settings() -> None:
    assert load(FIREWALL).firewall == FirewallSettings(
        load(FIREWALL).firewall.rules,
        *(2048, 7200, 30, 120, 20, 5),
        tcp_close_timeout=5,
        ct_quota_in=1024,
        ct_quota_peer=512,
    )
    quota = "firewall:\n  connections: {quota: 4}\n" + MINIMAL  # a peer's bound follows the quota
    assert load_text(quota, "lab.yaml").firewall == FirewallSettings(ct_quota=4, ct_quota_peer=4)
    every = "firewall:\n  connections: {quota: 4, inbound_quota: 64, peer_quota: 8}\n" + MINIMAL
    want = FirewallSettings(ct_quota=4, ct_quota_in=64, ct_quota_peer=8)
    assert load_text(every, "lab.yaml").firewall == want
    partial = "firewall:\n  connections: {udp_timeout: 90}\n" + MINIMAL
    assert load_text(partial, "lab.yaml").firewall == FirewallSettings(udp_timeout=90)
    for empty in ("firewall:\n", "firewall: {}\n", "firewall: {rules: []}\n"):
        assert load_text(empty + MINIMAL, "lab.yaml").firewall == FirewallSettings()


def test_port_security_and_allowed_addresses() -> None:
    topo = load(FIREWALL)
    web1, app2, db1, ids1 = (topo.vm(name).nics for name in ("web1", "app2", "db1", "ids1"))
    assert web1[0].allowed_addresses == (IPv4Interface("10.20.0.100/32"),)
    assert app2[0].allowed_addresses[0].network == IPv4Network("10.30.0.96/28")
    assert db1[1].allowed_addresses == (IPv6Interface("2001:db8:130::100/128"),)
    assert (web1[0].port_security, ids1[0].port_security) == (True, False)
    assert topo.vm("app1").nics[0].allowed_addresses == ()


def test_firewalled_nics_and_rules_of_the_firewall_lab() -> None:
    topo = load(FIREWALL)
    firewalled = topo.firewalled_nics()
    assert {("web1", 0), ("app1", 0), ("app1", 1), ("db1", 1), ("gw1", 4)} <= firewalled
    assert not {vm for vm, _ in firewalled} & {"admin1", "ids1"}
    assert [rule.id for rule in topo.rules_for("db1", 0)] == [70, 60, 31, 40]
    assert [rule.id for rule in topo.rules_for("db1", 1)] == [70, 60, 31, 40, 42]
    assert [rule.id for rule in topo.rules_for("web1", 0)] == [70, 11, 10, 20, 40, 41]
    assert topo.rules_for("admin1", 0) == []
    assert topo.groups_of("app1", 1) == ["dbclients"]


def test_a_broken_group_is_declared_but_left_out() -> None:
    """A member that does not resolve leaves its group out; rules naming it are not reported."""
    text = MINIMAL + "security_groups:\n  web: [web9]\nfirewall:\n  rules:\n"
    text += "    - {id: 1, apply: web, direction: in, peer: group:web, action: allow}\n"
    assert errors_of(text) == {
        "lab.yaml: security_groups.web[0]: unknown VM 'web9' (did you mean 'web1'? VMs: web1)"
    }


def test_a_malformed_groups_section_declares_every_name() -> None:
    text = MINIMAL + "security_groups: [web]\nfirewall:\n  rules:\n"
    text += "    - {id: 1, apply: web, direction: in, peer: group:app, action: allow}\n"
    assert errors_of(text) == {"lab.yaml: security_groups: expected a mapping, got a list"}


def test_the_firewall_example_in_the_docs_loads() -> None:
    docs = (ROOT / "docs" / "topology.md").read_text()
    blocks = [block.split("```", 1)[0] for block in docs.split("```yaml\n")[1:]]
    example = next(block for block in blocks if "\nfirewall:" in block)
    topo = load_text(example, "docs/topology.md")
    assert [rule.id for rule in topo.rules_for("web1", 0)] == [41, 10, 20, 40]
    assert topo.firewalled_nics() == {("web1", 0), ("web2", 0), ("app1", 0), ("db1", 0)}


# -- --name --------------------------------------------------------------------------------------
def test_name_override_renames_the_lab_and_its_derived_macs() -> None:
    topo = load(REFERENCE, lab="copy")
    assert topo.lab == "copy"
    assert topo == load(REFERENCE).renamed("copy")
    assert topo.vm("web1").nics[0].mac == default_mac("copy", "web1", 0)
    assert topo.vm("web1").nics[0].mac != load(REFERENCE).vm("web1").nics[0].mac


def test_name_override_renames_vmknic_macs() -> None:
    topo = load(VLANS, lab="copy")
    assert topo == load(VLANS).renamed("copy")
    assert topo.host("hv1").vmknics[0].mac == vmknic_mac("copy", "hv1", "mgmt0")
    assert topo.host("hv1").vmknics[1].mac == "02:00:00:00:0a:01"


def test_renamed_keeps_explicit_macs() -> None:
    original = load(HERE / "good" / "ipv6-vlan.yaml")
    renamed = original.renamed("other")
    web1, before = renamed.vm("web1"), original.vm("web1")
    assert web1.nics[0].mac == before.nics[0].mac == "02:00:00:00:00:11"
    assert web1.nics[1].mac == default_mac("other", "web1", 1) != before.nics[1].mac


@pytest.mark.parametrize("name", ["Bad-Name", "ninechars", "1lab", ""])
def test_bad_name_override_is_reported_as_name(name: str) -> None:
    assert errors_of(MINIMAL, lab=name) == {f"lab.yaml: --name: {name!r} is not a valid lab name: {LAB_HINT}"}


def test_name_override_does_not_excuse_a_bad_lab_key() -> None:
    text = MINIMAL.replace("lab: mini", "lab: Mini")
    assert errors_of(text, lab="ok") == {f"lab.yaml: lab: 'Mini' is not a valid lab name: {LAB_HINT}"}


def test_name_override_reruns_the_checks() -> None:
    """An explicit MAC can collide with a MAC derived from the new name only."""
    clash = default_mac("zz", "web2", 0)
    text = MINIMAL.replace("ip: 10.0.0.11/24}", f"ip: 10.0.0.11/24, mac: '{clash}'}}")
    text += "  web2:\n    host: hv1\n    nics: [{vswitch: vs1}]\n"
    load_text(text, "lab.yaml")
    assert errors_of(text, lab="zz") == {
        f"lab.yaml: vms.web2.nics[0]: {clash} is already used by vms.web1.nics[0]"
    }


# -- files and errors ----------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as caught:
        load(tmp_path / "nope.yaml")
    assert messages(caught.value) == {
        f"{tmp_path}/nope.yaml: (file): cannot read the file: No such file or directory"
    }


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"lab: caf\xe9\n")
    with pytest.raises(TopologyError) as caught:
        load(path)
    assert messages(caught.value) == {f"{path}: (file): not UTF-8 text (byte 0xe9 at offset 8)"}


def test_issue_and_error_text() -> None:
    issues = [Issue("a.yaml", "lab", "one"), Issue("a.yaml", "vms.x", "two")]
    assert str(issues[0]) == "a.yaml: lab: one"
    assert str(TopologyError(issues)) == "a.yaml: lab: one\na.yaml: vms.x: two"
    assert TopologyError(issues).errors == issues


def test_structural_issues_come_in_document_order() -> None:
    text = "lab: t\nvms:\n  b: {host: 1, nics: []}\n  a: {host: hv1, nics: x}\n"
    with pytest.raises(TopologyError) as caught:
        load_text(text, "lab.yaml")
    assert [issue.path for issue in caught.value.errors] == ["vms.b.host", "vms.b.nics", "vms.a.nics"]


def test_a_node_with_a_structural_error_is_not_reported_as_dangling() -> None:
    text = MINIMAL.replace("driver: ixgbe, ", "")
    assert errors_of(text) == {"lab.yaml: hosts.hv1.pnics.eth0: missing required key 'driver'"}


# -- robustness ----------------------------------------------------------------------------------
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 70000), st.text(max_size=12))
KEYS = st.sampled_from(["lab", "vms", "hosts", "host", "nics", "vswitch", "ip", "uplinks", "x", "to", "via"])
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3)
)


def _paths(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    return [path] + [sub for key, child in items for sub in _paths(child, (*path, key))]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(choice=st.integers(min_value=0), value=VALUES)
def test_any_damage_to_the_reference_lab_is_reported_not_crashed(choice: int, value: Any) -> None:
    _damage(REFERENCE, choice, value)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(choice=st.integers(min_value=0), value=VALUES | st.sampled_from(["web", "app", 110, 4094, "x"]))
def test_any_damage_to_the_vlans_lab_is_reported_not_crashed(choice: int, value: Any) -> None:
    _damage(VLANS, choice, value)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    choice=st.integers(min_value=0),
    value=VALUES
    | st.sampled_from(["web", "vm:web1", "vm:app1.eth7", "group:db", "any", "10.0.0.0/8", "9-1", 300]),
)
def test_any_damage_to_the_firewall_lab_is_reported_not_crashed(choice: int, value: Any) -> None:
    _damage(FIREWALL, choice, value)


def _damage(path: Path, choice: int, value: Any) -> None:
    """Replace one value of a good file; loading it either succeeds or reports, never crashes."""
    data, _ = parse_yaml(path.read_text(), "ref")
    paths = _paths(data)[1:]
    *parent, last = paths[choice % len(paths)]
    node = data
    for key in parent:
        node = node[key]
    node[last] = value
    try:
        load_text(json.dumps(data), "ref.yaml")
    except TopologyError as err:
        assert err.errors
        assert all(issue.source == "ref.yaml" and issue.path and issue.reason for issue in err.errors)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_any_text_is_reported_not_crashed(text: str) -> None:
    try:
        load_text(text, "any.yaml")
    except TopologyError as err:
        assert err.errors


def test_the_example_in_the_docs_loads() -> None:
    docs = (ROOT / "docs" / "topology.md").read_text()
    example = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    topo = load_text(example, "docs/topology.md")
    assert [vm.name for vm in topo.vms] == ["fw1", "web1"]


def test_nesting_too_deep_is_reported() -> None:
    for depth in (40, 3000):
        text = "lab: t\ndescription: " + "[" * depth + "]" * depth + "\n"
        assert errors_of(text) == {"lab.yaml: (file): mappings and lists are nested more than 32 levels deep"}
