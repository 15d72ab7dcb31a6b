"""The reachability the model promises (verify's evaluator, no kernel): layer 2 across VLANs,
vSwitches and trunks, the NIC firewall on both ends, and what it leaves to the real packets."""

from __future__ import annotations

from pathlib import Path

import pytest

from netns_lab.features.compliance.verify.expected import Probe, expect, layer2, probe_ports, probes
from netns_lab.topology import loader

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = loader.load(ROOT / "labs" / "nist-800-125b.yaml")
SMALL = loader.load(ROOT / "tests" / "lab" / "verify_lab.yaml")


@pytest.mark.parametrize(
    ("src", "dst", "ip", "proto", "port", "verdict", "why"),
    [
        ("app1", "db1", "10.40.0.31", "tcp", 5432, "allow", "same vSwitch hv2.prod"),
        ("app2", "db1", "10.40.0.31", "tcp", 5432, "allow", "through switch tor2"),
        ("app2", "db1", "10.40.0.31", "tcp", 5433, "deny", "app2.eth1 out: deny by default"),
        ("db1", "app1", "10.40.0.21", "tcp", 5432, "deny", "db1.eth0 out: deny by default"),
        ("desk2", "desk1", "10.50.0.11", "udp", 9, "allow", "no firewall; no firewall"),
        # a subnet shared across vSwitches of one host: sandbox has no uplink
        ("sandbox1", "app1", "10.30.0.21", "icmp", None, "deny", "no layer-2 path"),
        ("web1", "app1", "10.30.0.21", "tcp", 8080, None, "routed through vm4"),
        ("web1", "app1", "10.30.0.21", "tcp", 22, "deny", "web1.eth0 out: deny by default"),
        ("mgmt1", "db1", "10.40.0.31", "icmp", None, "deny", "mgmt1 has no route to 10.40.0.31"),
        ("vm4", "app1", "10.30.0.21", "icmp", None, None, "vm4 runs an nftables ruleset"),
    ],
)
def test_reference_lab_verdicts(
    src: str, dst: str, ip: str, proto: str, port: int | None, verdict: str | None, why: str
) -> None:
    e = expect(REFERENCE, Probe(src, dst, ip, proto, port))  # type: ignore[arg-type]
    assert (e.verdict, why in e.why) == (verdict, True), e.why


def test_a_switch_port_that_does_not_carry_a_vlan_cuts_it() -> None:
    cli, db = SMALL.vm("cli"), SMALL.vm("db")
    assert layer2(SMALL, (cli, cli.nics[0]), (db, db.nics[0])) == (True, "through switch tor1")
    text = (ROOT / "tests" / "lab" / "verify_lab.yaml").read_text()
    for member in ("hv2-eth0", "hv2-eth1"):
        text = text.replace(f"{member}: {{trunk: [front, back]}}", f"{member}: {{trunk: [front]}}")
    cut = loader.load_text(text, "cut.yaml")
    cli, db = cut.vm("cli"), cut.vm("db")
    assert layer2(cut, (cli, cli.nics[0]), (db, db.nics[0])) == (
        False,
        "db.eth0: its VLAN reaches no switch (internal vSwitch, or uplink or switch port lacks it)",
    )


def test_probe_ports_are_the_edges_of_allowed_ranges_and_a_sample_of_denied_ones() -> None:
    assert probe_ports(REFERENCE) == {"tcp": [22, 80, 443, 5432, 8080, 23, 81, 444, 9], "udp": [9]}
    assert probe_ports(SMALL) == {"tcp": [80, 5432, 8080, 81, 5433, 8081, 9], "udp": [53, 54, 9]}


def test_every_pair_of_addressed_vms_is_probed_both_ways() -> None:
    found = {(p.src, p.dst_ip, p.proto, p.port) for p in probes(SMALL)}
    assert len(found) == len(probes(SMALL)) == 4 * 3 * (7 + 3 + 1)  # no analyzer: it has no address
    assert ("db", "10.2.0.12", "icmp", None) in found and ("cli", "10.2.0.31", "udp", 53) in found
