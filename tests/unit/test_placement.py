"""Firewall placements without root: placement per tier, the nftables compile of the one policy,
the instances provisioned, and VM-FW-R1..R4 in each of their statuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from netns_lab.features.firewall.checks import checks
from netns_lab.features.placement import plan
from netns_lab.features.placement.truth import Probe, expected
from netns_lab.topology import loader
from netns_lab.topology.errors import TopologyError
from netns_lab.topology.model import Topology

ROOT = Path(__file__).resolve().parents[2]
PLACEMENTS = ROOT / "labs" / "placements.yaml"
REFERENCE = ROOT / "labs" / "nist-800-125b.yaml"


def _variant(path: Path, edits: dict[str, str]) -> Topology:
    text = path.read_text()
    for old, new in edits.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return loader.load_text(text, str(path))


def _status(topo: Topology) -> dict[str, tuple[str, list[str]]]:
    return {c["id"]: (c["status"], c["objects"]) for c in checks(topo)}


def test_placement_of_each_vm() -> None:
    topo = loader.load(PLACEMENTS)
    assert topo.placements() == {
        "fw1": "none",
        "c1": "kernel",
        "c2": "none",
        "k1": "kernel",
        "n1": "none",
        "s1": "subnet",
        "p1": "physical",
    }
    assert topo.placement_of("p1") == "physical"


def test_the_kernel_enforces_only_kernel_placed_vms() -> None:
    from netns_lab.features.firewall import plan as kernel

    topo = loader.load(PLACEMENTS)
    assert kernel.kernel_nics(topo) == {("c1", 0), ("k1", 0)}
    assert kernel.vnic_settings(topo, topo.vm("p1"), topo.vm("p1").nics[0]).endpoint == 0


def test_every_instance_gets_its_placements_chains() -> None:
    topo = loader.load(PLACEMENTS)
    rules = plan.rulesets(topo)
    assert set(rules) == {"fw1", "pfw"}
    assert "ip daddr 10.60.2.21 jump" in rules["fw1"] and "10.60.3.21" not in rules["fw1"]
    assert "ip daddr 10.60.3.21 jump" in rules["pfw"] and "10.60.2.21" not in rules["pfw"]
    pfw = rules["pfw"]
    # precedence as the evaluator's: the priority-50 deny of 8080 before the allows
    assert pfw.index('drop comment "rule 13"') < pfw.index('return comment "rule 10"')
    assert 'meta l4proto tcp th dport 8000-8100 counter return comment "rule 12"' in pfw
    assert 'counter drop comment "default deny p1.eth0 in by pfw"' in pfw
    assert pfw.startswith("table inet nlab\ndelete table inet nlab\n")  # one atomic replace


def test_expected_verdicts_are_the_same_for_each_tier() -> None:
    topo = loader.load(PLACEMENTS)
    kinds = [("tcp", 80), ("tcp", 22), ("tcp", 8080), ("udp", 53), ("icmp", 8)]
    probes = [Probe(s, d, p, n) for s in ("c1", "c2") for d in ("k1", "s1", "p1") for p, n in kinds]
    got = expected(topo, probes)
    assert got[Probe("c1", "p1", "tcp", 80)] == "allow"
    assert got[Probe("c1", "p1", "tcp", 8080)] == "deny"  # rule 13 before rule 12
    assert got[Probe("c2", "s1", "tcp", 8080)] == "allow"
    assert got[Probe("c2", "k1", "udp", 53)] == "allow"  # a CIDR peer
    for d in ("s1", "p1"):
        assert all(got[Probe(p.src, d, p.proto, p.port)] == v for p, v in got.items() if p.dst == "k1")


def test_checks_met_on_the_placements_lab() -> None:
    got = _status(loader.load(PLACEMENTS))
    assert {rid: status for rid, (status, _) in got.items()} == dict.fromkeys(
        ("VM-FW-R1", "VM-FW-R2", "VM-FW-R3", "VM-FW-R4"), "met"
    )


def test_r1_and_r2_not_met_name_the_vms() -> None:
    text = PLACEMENTS.read_text().replace("traits: [delay-sensitive]\n", "traits: [SWAP]\n")
    text = text.replace("traits: [io-intensive]\n", "traits: [delay-sensitive]\n")
    got = _status(loader.load_text(text.replace("[SWAP]", "[io-intensive]"), "t.yaml"))
    assert got["VM-FW-R1"] == ("not met", ["p1"])
    assert got["VM-FW-R2"] == ("not met", ["s1"])


def test_r1_r2_r3_r4_not_applicable_without_traits_or_rules() -> None:
    text = "lab: t\nswitches: {tor1: {}}\nhosts:\n  hv1:\n    pnics: {}\n    vswitches: {vs1: {}}\n"
    text += "vms:\n  a: {host: hv1, nics: [{vswitch: vs1, ip: 10.0.0.1/24}]}\n"
    got = _status(loader.load_text(text, "t.yaml"))
    assert {rid: status for rid, (status, _) in got.items()} == dict.fromkeys(
        ("VM-FW-R1", "VM-FW-R2", "VM-FW-R3", "VM-FW-R4"), "not applicable"
    )


def test_r3_not_met_for_hand_written_firewall_vms() -> None:
    assert _status(loader.load(REFERENCE))["VM-FW-R3"] == ("not met", ["vm1", "vm4"])


def test_r4_not_met_without_security_groups() -> None:
    text = PLACEMENTS.read_text().split("firewall:")[0] + "firewall:\n  rules:\n"
    text += "    - {id: 1, apply: vm:k1, direction: in, peer: 10.60.1.11/32, proto: tcp, action: allow}\n"
    text += "switches:" + PLACEMENTS.read_text().split("\nswitches:", 1)[1]
    got = _status(loader.load_text(text, "t.yaml"))
    assert got["VM-FW-R4"] == ("not met", ["1"])


def test_placement_physical_without_appliance_is_refused() -> None:
    text = PLACEMENTS.read_text()
    text = text.split("appliances:")[0] + "hosts:" + text.split("\nhosts:", 1)[1]
    with pytest.raises(TopologyError) as caught:
        loader.load_text(text, "t.yaml")
    paths = {issue.path for issue in caught.value.errors}
    assert "firewall.placements.phys" in paths
