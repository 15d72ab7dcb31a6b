"""Inter-switch links (`switches.X.links`), pure: the model, the ports each end gets, the loops
refused and the ones that are not loops, a team's standby path (VM-VN-R1), the drawing, the
names `nlab fail` knows, and `nlab up` refusing a loop with exit 2. The files that fail with
exact messages are tests/unit/bad/sem-link-*.yaml (test_loader)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netns_lab.features.team import faults
from netns_lab.features.vlan import checks as vlancheck
from netns_lab.features.vlan import plan
from netns_lab.observe import graph
from netns_lab.topology import machines
from netns_lab.topology.loader import load, load_text
from netns_lab.topology.model import PortProfile
from tests.helpers import load_errors as errors

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "labs" / "nist-800-125b.yaml"

# hv1 dual-homed by a team; app and db cross the link, or not (LINK is replaced)
TEAMED = """
lab: t
vlans: {app: 120, db: 130}
switches:
  tor1: {ports: {hv1-eth0: {trunk: [app, db]}}, links: {tor2: LINK}}
  tor2: {ports: {hv1-eth1: {trunk: [app, db]}}}
hosts:
  hv1:
    pnics:
      eth0: {switch: tor1, driver: ixgbe, pci_bus: "0000:03:00.0"}
      eth1: {switch: tor2, driver: i40e, pci_bus: "0000:81:00.0"}
    vswitches:
      vs1: {uplinks: [eth0, eth1], team: {}}
vms:
  vm1: {host: hv1, nics: [{vswitch: vs1, vlan: app, ip: 10.0.0.1/24}, {vswitch: vs1, vlan: db}]}
"""


def teamed(link: str) -> str:
    return TEAMED.replace("LINK", link)


def test_link_profiles_like_ports() -> None:
    def profile(link: str) -> PortProfile:
        [found] = load_text(teamed(link), "x").switch_links()
        return found.profile

    assert profile("{trunk: [app, db]}") == PortProfile(trunk=frozenset({120, 130}), untagged=False)
    assert profile("{trunk: [app], untagged: true}") == PortProfile(trunk=frozenset({120}), untagged=True)
    assert profile("{access: db}") == PortProfile(access=130)
    assert profile("{}") == PortProfile()  # untagged, as an undeclared port
    assert profile("null") == PortProfile()


def test_both_ends_get_the_links_vlan_policy_named_after_the_other_switch() -> None:
    topo = load_text(teamed("{trunk: [app, db]}"), "x")
    ends = {
        sw: [(p.name, p.role, p.owner, sorted(p.vlans.allowed), p.vlans.untagged, p.vlans.guard)]
        for sw in ("tor1", "tor2")
        for p in plan.switch_ports(topo, sw)
        if p.role == "link"
    }
    assert ends == {
        "tor1": [("tor2", "link", "tor1-tor2", [120, 130], False, True)],
        "tor2": [("tor1", "link", "tor1-tor2", [120, 130], False, True)],
    }
    assert plan.port_vlans(topo)["tor2"]["tor1"] == plan.link_vlans(topo.switch_links()[0])


def test_a_team_standby_path_needs_every_vlan_of_the_team_on_the_link() -> None:
    assert vlancheck.check(load_text(teamed("{trunk: [app, db]}"), "x")) == []
    [gap] = vlancheck.check(load_text(teamed("{trunk: [app]}"), "x"))
    assert (gap.severity, gap.trunk, gap.vlan) == ("error", "hv1.vs1 team: tor1 <-> tor2", "db (130)")
    assert "no inter-switch link path between tor1 and tor2 carries it" in gap.reason
    unlinked = teamed("{}").replace(", links: {tor2: {}}}", "}")
    found = [
        (f.vlan, "not joined by any inter-switch link" in f.reason)
        for f in vlancheck.check(load_text(unlinked, "x"))
    ]
    assert found == [("app (120)", True), ("db (130)", True)]


def test_the_reference_lab_teams_and_link_meet_vm_vn_r1_and_the_link_is_needed() -> None:
    text = REFERENCE.read_text()
    assert vlancheck.check(load_text(text, "x")) == []
    narrow = text.replace(
        "tor2: {trunk: [app, db, desktop, management, migration, logging, storage]}",
        "tor2: {trunk: [app, db, management, migration, logging, storage]}",
    )
    assert narrow != text
    gaps = {(f.trunk, f.vlan) for f in vlancheck.check(load_text(narrow, "x"))}
    assert gaps == {
        ("hv2.prod team: tor2 <-> tor1", "desktop (140)"),
        ("hv3.ops team: tor2 <-> tor1", "desktop (140)"),
    }


def test_a_triangle_with_disjoint_vlans_is_no_loop() -> None:
    text = """
lab: t
vlans: {a: 10, b: 20, c: 30}
switches:
  s1: {links: {s2: {trunk: [a, b]}}}
  s2: {links: {s3: {trunk: [b, c]}}}
  s3: {links: {s1: {trunk: [c, a]}}}
"""
    assert len(load_text(text, "x").switch_links()) == 3
    assert errors(text.replace("[c, a]", "[c, a, b]")) == {
        "lab.yaml: switches.s3.links.s1: links s1-s2, s2-s3, s3-s1 form a loop for VLAN b (20) "
        "and there is no spanning tree to break it: remove one of them, or the VLAN from one"
    }


def test_two_vswitches_of_a_host_on_linked_switches_are_no_loop() -> None:
    """Two bridges forward nothing to each other: only one vSwitch with two plain uplinks could
    close the loop, and that one is refused (sem-link-two-uplinks.yaml)."""
    text = teamed("{trunk: [app, db]}").replace(
        "vs1: {uplinks: [eth0, eth1], team: {}}", "vs1: {uplinks: [eth0]}\n      vs2: {uplinks: [eth1]}"
    )
    topo = load_text(text, "x")
    assert [vs.uplinks for vs in topo.host("hv1").vswitches] == [("eth0",), ("eth1",)]


def test_graph_draws_the_link_with_its_vlans() -> None:
    source = graph.dot(load(REFERENCE))
    assert (
        '"switch/tor1" -- "switch/tor2" [label="trunk management,migration,logging,storage,app,db,desktop", '
        "fontsize=8, penwidth=2];" in source
    )


def test_nlab_fail_names_a_link_from_either_switch() -> None:
    known = faults.links(load(REFERENCE))
    assert (known["tor1.tor2"].switch, known["tor1.tor2"].port) == ("tor1", "tor2")
    assert (known["tor2.tor1"].switch, known["tor2.tor1"].port) == ("tor2", "tor1")
    with pytest.raises(ValueError, match=r"did you mean 'tor1\.tor2'"):
        faults.resolve(load(REFERENCE), "tor1.tor3")


def test_nlab_up_refuses_a_loop_with_exit_2_naming_the_links(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text((ROOT / "tests" / "unit" / "bad" / "sem-link-loop.yaml").read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "netns_lab", "up", str(path), "--name", "isllooptest"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "switches.tor3.links.tor1: links tor1-tor2, tor2-tor3, tor3-tor1 form a loop" in proc.stderr


def test_linked_switches_are_one_cable_group_when_a_lab_spans_machines() -> None:
    """Two hosts on two machines, each on its own switch: apart, each switch goes with its host;
    linked, the switches would bridge one machine's part into the other's: refused."""
    text = """
lab: t
machines: [m1, m2]
switches:
  s1: {}
  s2: {}
hosts:
  hv1:
    machine: m1
    pnics: {eth0: {switch: s1, driver: ixgbe, pci_bus: "0000:03:00.0"}}
    vswitches: {vs1: {uplinks: [eth0]}}
  hv2:
    machine: m2
    pnics: {eth0: {switch: s2, driver: ixgbe, pci_bus: "0000:03:00.0"}}
    vswitches: {vs1: {uplinks: [eth0]}}
"""
    place = machines.placement(load_text(text, "x"))
    assert (place["s1"], place["s2"]) == ("m1", "m2")
    with pytest.raises(machines.MachineError) as err:
        machines.placement(load_text(text.replace("s1: {}", "s1: {links: {s2: {}}}"), "x"))
    assert {i.path for i in err.value.errors} == {"switches.s1", "switches.s2"}


def test_beacons_need_untagged_frames_across_the_link() -> None:
    """Beacons are untagged: a team probing by beacons across two switches needs a link path that
    passes untagged frames (the member ports' own are refused at load: sem-team-beacon-trunk)."""
    text = teamed("{trunk: [app, db]}").replace("team: {}", "team: {detection: [link, beacon]}")
    for port in ("hv1-eth0", "hv1-eth1"):  # the member ports pass them (needed: no warning)
        text = text.replace(f"{port}: {{trunk: [app, db]}}", f"{port}: {{trunk: [app, db], untagged: true}}")
    [gap] = vlancheck.check(load_text(text, "x"))
    assert (gap.trunk, gap.vlan) == ("hv1.vs1 team: tor1 <-> tor2", "untagged")
    assert (
        vlancheck.check(
            load_text(
                text.replace("tor2: {trunk: [app, db]}", "tor2: {trunk: [app, db], untagged: true}"), "x"
            )
        )
        == []
    )
