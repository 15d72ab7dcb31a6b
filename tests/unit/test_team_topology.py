"""NIC teams in the topology: the ``team:`` block (schema, conversion, semantic checks, each
error once with its path, all at once, exit 2), the plan the monitor reads, the frames it sends,
and the VM-MP-R1..R3 checks on compliant and violating teams."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from netns_lab.features.team import checks, frames, plan
from netns_lab.topology.loader import load, load_text
from netns_lab.topology.model import Team
from tests.helpers import load_errors as errors

REPO = Path(__file__).resolve().parents[2]
TEAMS = REPO / "labs" / "teams.yaml"

BASE = """\
lab: t
vlans: {app: 120, management: 10}
switches: {tor1: {}, tor2: {}}
hosts:
  hv1:
    pnics:
      eth0: {switch: tor1, driver: ixgbe, pci_bus: "0000:03:00.0"}
      eth1: {switch: tor2, driver: i40e, pci_bus: "0000:81:00.0"}
    vswitches:
      vs1: {uplinks: [eth0, eth1], team: TEAM}
    vmknics:
      mgmt0: {vswitch: vs1, vlan: management, ip: 10.10.0.1/24}
vms:
  web1: {host: hv1, nics: [{vswitch: vs1, vlan: app, ip: 10.30.0.11/24}]}
  web2: {host: hv1, nics: [{vswitch: vs1, ip: 10.0.0.12/24}]}
"""
PATH = "hosts.hv1.vswitches.vs1"


def with_team(team: str, base: str = BASE) -> str:
    return base.replace("TEAM", team)


# -- the model -----------------------------------------------------------------------------------
def test_team_settings_and_defaults() -> None:
    text = "{policy: active-standby, failback: false, detection: [link, beacon], beacon_interval: 100ms,"
    text += " beacon_miss: 5, arp_target: 10.10.0.254, announce: 0}"
    vs = load_text(with_team(text), "lab.yaml").host("hv1").vswitch("vs1")
    assert vs.team == Team("active-standby", False, ("link", "beacon"), 100, 5, IPv4Address("10.10.0.254"), 0)
    assert load_text(with_team("{}"), "x").host("hv1").vswitch("vs1").team == Team()
    assert (
        load_text(with_team("{beacon_interval: 2s}"), "x").host("hv1").vswitch("vs1").team.beacon_interval_ms
        == 2000
    )


def test_single_uplink_vswitches_have_no_team() -> None:
    topo = load(REPO / "labs" / "nist-800-125b.yaml")
    teamed = {(h.name, vs.name) for h in topo.hosts for vs in h.vswitches if vs.team is not None}
    assert teamed == {("hv2", "prod"), ("hv3", "ops")}
    assert all(len(vs.uplinks) == 2 for h in topo.hosts for vs in h.vswitches if (h.name, vs.name) in teamed)
    assert all(len(vs.uplinks) <= 1 for h in topo.hosts for vs in h.vswitches if vs.team is None)


# -- bad teams -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("team", "path", "reason"),
    [
        ("{beacon_interval: 0ms}", "team.beacon_interval", "0ms is not in 10ms..60s"),
        ("{beacon_interval: 5ms}", "team.beacon_interval", "5ms is not in 10ms..60s"),
        (
            "{beacon_interval: fast}",
            "team.beacon_interval",
            "'fast' is not a valid beacon interval: a number with its unit, e.g. 100ms or 1s",
        ),
        ("{beacon_interval: 100}", "team.beacon_interval", "expected a string, got an integer"),
        (
            "{policy: round-robin}",
            "team.policy",
            "unknown policy 'round-robin' (policies: active-standby)",
        ),
        (
            "{policy: active-stanby}",
            "team.policy",
            "unknown policy 'active-stanby' (did you mean 'active-standby'? policies: active-standby)",
        ),
        (
            "{detection: [carrier]}",
            "team.detection[0]",
            "unknown detection 'carrier' (detections: link, beacon)",
        ),
        ("{detection: []}", "team.detection", "must not be empty"),
        ("{beacon_miss: 0}", "team.beacon_miss", "0 is not in 1..100"),
        ("{announce: -1}", "team.announce", "-1 is not in 0..16"),
        ("{announce: 17}", "team.announce", "17 is not in 0..16"),
        ("{arp_target: 10.10.0.300}", "team.arp_target", "'10.10.0.300' is not an IP address"),
    ],
)
def test_a_bad_team_value_is_reported_at_its_path(team: str, path: str, reason: str) -> None:
    assert errors(with_team(team)) == {f"lab.yaml: {PATH}.{path}: {reason}"}


def test_several_uplinks_need_a_team() -> None:
    text = BASE.replace(", team: TEAM", "")
    reason = "2 uplinks need a 'team:' (NIC teaming keeps one member active; plain uplinks would make a loop)"
    assert errors(text) == {f"lab.yaml: {PATH}.uplinks: {reason}"}


def test_a_member_must_be_a_pnic_of_the_host_and_of_one_vswitch() -> None:
    text = with_team("{}").replace("uplinks: [eth0, eth1]", "uplinks: [eth0, eth2]")
    hint = "did you mean 'eth1'? pNICs of hv1: eth0, eth1"
    assert errors(text) == {f"lab.yaml: {PATH}.uplinks[1]: 'eth2' is not a pNIC of hv1 ({hint})"}
    text = with_team("{}").replace(
        "      vs1: {uplinks: [eth0, eth1], team: {}}",
        "      vs1: {uplinks: [eth0, eth1], team: {}}\n      vs2: {uplinks: [eth1]}",
    )
    assert errors(text) == {
        "lab.yaml: hosts.hv1.vswitches.vs2.uplinks[0]: 'eth1' is already the uplink of vs1"
    }


def test_every_team_error_at_once_and_nothing_else() -> None:
    text = with_team("{policy: hot, beacon_interval: 0s, detection: [link, link]}")
    assert errors(text) == {
        f"lab.yaml: {PATH}.team.policy: unknown policy 'hot' (policies: active-standby)",
        f"lab.yaml: {PATH}.team.beacon_interval: 0s is not in 10ms..60s",
        f"lab.yaml: {PATH}.team.detection[1]: 'link' is already listed at detection[0]",
    }


def test_a_bad_team_exits_2_and_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(with_team("{beacon_interval: 0ms, policy: lacp}"))
    proc = subprocess.run(
        [sys.executable, "-m", "netns_lab", "validate", str(bad)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 2
    assert sorted(proc.stderr.splitlines()) == sorted(
        [
            f"{bad}: {PATH}.team.beacon_interval: 0ms is not in 10ms..60s",
            f"{bad}: {PATH}.team.policy: unknown policy 'lacp' (policies: active-standby)",
        ]
    )


# -- the plan ------------------------------------------------------------------------------------
def test_plan_members_in_order_macs_with_their_vlan_and_arp_source() -> None:
    text = with_team("{detection: [link, beacon], beacon_interval: 100ms, arp_target: 10.10.0.254}")
    text = text.replace("uplinks: [eth0, eth1]", "uplinks: [eth1, eth0]")
    topo = load_text(text, "lab.yaml")
    [p] = plan.teams(topo)
    assert (p.name, p.members) == ("hv1.vs1", ("eth1", "eth0"))
    web1, web2 = topo.vm("web1").nics[0].mac, topo.vm("web2").nics[0].mac
    mgmt0 = topo.host("hv1").vmknics[0].mac
    assert p.macs == ((web1, 120), (web2, None), (mgmt0, 10))
    assert (p.arp_source, p.arp_vlan) == (IPv4Address("10.10.0.1"), 10)
    s = p.settings()
    assert (s.members, s.link, s.beacon, s.arp, s.beacon_interval, s.beacon_miss) == (
        ("eth1", "eth0"),
        True,
        True,
        True,
        0.1,
        3,
    )
    assert s.hold_down == 1.0  # at least a second, even with 100 ms beacons


def test_plan_of_the_example_lab() -> None:
    teams = plan.teams(load(TEAMS))
    assert [t.name for t in teams] == ["hv1.vs1", "hv2.vs1", "hv3.vs1", "hv4.vs1"]
    assert [t.name for t in plan.teams(load(TEAMS), "hv3")] == ["hv3.vs1"]
    assert teams[2].settings().hold_down == 3.0  # three 1 s beacons


# -- frames --------------------------------------------------------------------------------------
def test_beacon_round_trip_and_strangers() -> None:
    b = frames.Beacon("nist", "hv1", "vs3", "eth1", 7)
    raw = frames.beacon(b, "02:00:00:00:00:01")
    assert raw[:6] == b"\xff" * 6 and raw[12:14] == b"\x88\xb5" and len(raw) >= 60
    assert frames.parse_beacon(raw) == b
    assert frames.parse_beacon(raw[:12] + b"\x88\xb5" + b"NLABTEAMnot json") is None
    assert frames.parse_beacon(frames.rarp("02:00:00:00:00:01")) is None


def test_rarp_announcement_and_arp_reply() -> None:
    untagged, tagged = frames.rarp("02:00:00:00:00:0a"), frames.rarp("02:00:00:00:00:0a", 120)
    assert untagged[6:14] == bytes.fromhex("02000000000a8035")
    assert tagged[12:18] == bytes.fromhex("8100007880 35".replace(" ", ""))
    assert frames.is_rarp_from(untagged, "02:00:00:00:00:0a") and frames.is_rarp_from(
        tagged, "02:00:00:00:00:0a"
    )
    assert not frames.is_rarp_from(untagged, "02:00:00:00:00:0b")
    target = IPv4Address("10.10.0.254")
    probe = frames.arp_probe("02:00:00:00:00:01", IPv4Address("0.0.0.0"), target)
    reply = bytearray(probe)
    reply[21] = 2  # op: reply
    reply[28:32] = target.packed  # the sender is the target
    assert frames.is_arp_reply(bytes(reply), target) and not frames.is_arp_reply(probe, target)


# -- VM-MP-R1..R3 --------------------------------------------------------------------------------
def by_team(results: list[dict]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for r in results:
        found.setdefault(r["objects"][0] if r["objects"] else "-", {})[r["id"]] = r["status"]
    return found


def test_example_lab_one_compliant_team_and_one_violation_of_each() -> None:
    results = checks.check(load(TEAMS))
    assert by_team(results) == {
        "hv1.vs1": {"VM-MP-R1": "met", "VM-MP-R2": "met", "VM-MP-R3": "met"},
        "hv2.vs1": {"VM-MP-R1": "not met", "VM-MP-R2": "met", "VM-MP-R3": "met"},
        "hv3.vs1": {"VM-MP-R1": "met", "VM-MP-R2": "not met", "VM-MP-R3": "met"},
        "hv4.vs1": {"VM-MP-R1": "met", "VM-MP-R2": "met", "VM-MP-R3": "not met"},
    }
    not_met = {r["id"]: r for r in results if r["status"] == "not met"}
    assert not_met["VM-MP-R1"]["reason"] == "hv2.vs1: eth0 and eth1 share driver ixgbe"
    assert not_met["VM-MP-R2"]["reason"] == "hv3.vs1: eth0 and eth1 share PCI bus 0000:05"
    assert not_met["VM-MP-R3"]["reason"] == "hv4.vs1: eth0 and eth1 share physical switch tor1"
    assert not_met["VM-MP-R3"]["objects"] == ["hv4.vs1", "hv4.eth0", "hv4.eth1"]
    assert all(set(r) == {"id", "status", "reason", "objects"} for r in results)


def test_two_functions_of_one_card_share_a_bus() -> None:
    assert checks.pci_bus("0000:03:00.0") == checks.pci_bus("0000:03:00.1") == "0000:03"
    text = with_team("{}").replace('"0000:81:00.0"', '"0000:03:00.1"')
    text = text.replace(
        "      eth1: {switch: tor2",
        '      eth9: {switch: tor2, driver: e1000e, pci_bus: "0000:04:00.0"}\n      eth1: {switch: tor2',
    )
    results = checks.check(load_text(text, "lab.yaml"))
    r2 = next(r for r in results if r["id"] == "VM-MP-R2")
    assert (r2["status"], r2["reason"]) == ("not met", "hv1.vs1: eth0 and eth1 share PCI bus 0000:03")


def test_not_applicable_without_teams_or_with_one_bus_or_one_member() -> None:
    assert {r["status"] for r in checks.check(load(REPO / "tests" / "unit" / "good" / "minimal.yaml"))} == {
        "not applicable"
    }
    # the reference lab's teams across tor1 and tor2 meet all three
    assert {r["status"] for r in checks.check(load(REPO / "labs" / "nist-800-125b.yaml"))} == {"met"}
    one_bus = with_team("{}").replace('"0000:81:00.0"', '"0000:03:00.1"')
    r2 = next(r for r in checks.check(load_text(one_bus, "x")) if r["id"] == "VM-MP-R2")
    assert (r2["status"], r2["reason"]) == ("not applicable", "every pNIC of hv1 is on PCI bus 0000:03")
    solo = with_team("{}").replace("uplinks: [eth0, eth1]", "uplinks: [eth0]")
    assert {r["status"] for r in checks.check(load_text(solo, "x"))} == {"not applicable"}
    assert json.dumps(checks.check(load(TEAMS)))  # plain data, as `nlab audit --json` prints it
