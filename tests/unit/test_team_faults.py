"""The links `nlab fail` / `nlab heal` name, and the feature's member roles: pure, no root."""

from __future__ import annotations

from pathlib import Path

import pytest

from netns_lab.features import registry
from netns_lab.features.team import FEATURE, _member_roles
from netns_lab.features.team.faults import Link, links, resolve
from netns_lab.topology.loader import load

REPO = Path(__file__).resolve().parents[2]


def test_both_ends_of_a_cable_name_its_switch_end() -> None:
    topo = load(REPO / "tests" / "lab" / "team_pair.yaml")
    found = links(topo)
    assert sorted(found) == [
        "hv1.eth0", "hv1.eth1", "hv2.eth0", "tor1.hv1-eth0", "tor1.hv2-eth0", "tor1.peer", "tor1.tor2",
        "tor2.hv1-eth1", "tor2.tor1",
    ]  # fmt: skip
    # a link between two switches has a switch at both ends: each end names its own fault
    assert (found["tor1.tor2"].switch, found["tor1.tor2"].port) == ("tor1", "tor2")
    assert (found["tor2.tor1"].switch, found["tor2.tor1"].port) == ("tor2", "tor1")
    assert found["hv1.eth0"] == Link("hv1.eth0", "hv1", "eth0", "tor1", "hv1-eth0")
    assert (found["tor1.hv1-eth0"].switch, found["tor1.hv1-eth0"].port) == ("tor1", "hv1-eth0")
    assert (found["tor1.peer"].switch, found["tor1.peer"].port) == ("tor1", "peer")


def test_an_unknown_link_is_named_with_a_did_you_mean() -> None:
    topo = load(REPO / "tests" / "lab" / "team_pair.yaml")
    with pytest.raises(ValueError, match=r"unknown link 'hv1\.eht0' \(did you mean 'hv1\.eth0'\?"):
        resolve(topo, "hv1.eht0")


def test_first_member_active_others_standby_and_no_roles_without_teams() -> None:
    assert _member_roles(load(REPO / "labs" / "teams.yaml")) == {
        **{(h, "eth0"): True for h in ("hv1", "hv2", "hv3", "hv4")},
        **{(h, "eth1"): False for h in ("hv1", "hv2", "hv3", "hv4")},
    }
    assert _member_roles(load(REPO / "tests" / "lab" / "two_vms.yaml")) == {}
    assert FEATURE in registry.FEATURES


def test_the_feature_checks_are_the_vm_mp_checks() -> None:
    results = FEATURE.checks(load(REPO / "labs" / "teams.yaml"))
    assert {r["id"] for r in results} == {"VM-MP-R1", "VM-MP-R2", "VM-MP-R3"}
    assert any(r["status"] == "not met" for r in results)
