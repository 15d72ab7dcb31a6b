"""One encoding across commands (netns_lab.encoding) and the shared CLI machinery (netns_lab.cli.base):
rules, directions, NIC names, ICMP fields, drop classes, the JSON error document, flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataplane.abi import Reason
from netns_lab import encoding
from netns_lab.cli import base as clibase
from netns_lab.topology.errors import Issue, TopologyError


def test_a_rule_is_an_id_the_default_or_none() -> None:
    assert [encoding.rule_field(r) for r in (30, 0, None)] == [30, "default", "default"]
    assert encoding.rule_field(0, by_policy=False) is None
    assert [encoding.rule_text(r) for r in (30, "default", None)] == ["rule 30", "default policy", "-"]


def test_directions_are_seen_from_the_peer_of_a_port() -> None:
    """A frame a VM sends enters its switch port at ingress: the VM's `out`, as in fw events."""
    assert (encoding.direction_of_hook("ingress"), encoding.direction_of_hook("egress")) == ("out", "in")
    with pytest.raises(ValueError):
        encoding.direction_of_hook("out")


def test_a_nic_is_vm_dot_eth_and_its_port_maps_back() -> None:
    assert encoding.nic_name("app1", 1) == "app1.eth1"
    assert encoding.nic_of_port("app1-1") == "app1.eth1"
    assert encoding.nic_of_port("desk12-10") == "desk12.eth10"
    for not_a_vm_port in ("eth1", "hv1-eth0", "mgmt0-br", "internet"):
        assert encoding.nic_of_port(not_a_vm_port) is None


def test_icmp_has_its_own_fields_and_no_ports() -> None:
    assert encoding.flow_fields("icmp", 77, 8, icmp_type=8, icmp_id=77) == {
        "sport": None,
        "dport": None,
        "icmp_type": 8,
        "icmp_id": 77,
    }
    assert encoding.flow_fields("tcp", 40000, 22, icmp_type=3, icmp_id=1) == {
        "sport": 40000,
        "dport": 22,
        "icmp_type": None,
        "icmp_id": None,
    }
    icmp = {"src": "10.0.0.1", "dst": "10.0.0.2", **encoding.flow_fields("icmp", 5, 5, 8, 5)}
    tcp = {"src": "fd00::1", "dst": "10.0.0.2", **encoding.flow_fields("tcp", 1, 22)}
    assert encoding.flow_text(icmp) == "10.0.0.1 -> 10.0.0.2 type 8 id 5"
    assert encoding.flow_text(tcp) == "[fd00::1]:1 -> 10.0.0.2:22"


def test_flooded_frames_towards_a_port_are_expected_everything_else_is_a_violation() -> None:
    flooded = (
        Reason.VLAN_MISMATCH,
        Reason.VLAN_NOT_ALLOWED,
        Reason.UNTAGGED,
        Reason.ANALYZER_RX,
        Reason.DST_MAC,
    )
    for reason in flooded:
        assert encoding.drop_class(reason, "in") == "expected"
        assert encoding.drop_class(reason, "out") == "violation"  # the peer sent what it must not
    for reason in (Reason.POLICY, Reason.SPOOF_MAC, Reason.QINQ, Reason.CT_INVALID, Reason.ANALYZER_TX):
        assert {encoding.drop_class(reason, d) for d in ("in", "out")} == {"violation"}


def test_team_and_fault_drops_are_expected_both_ways() -> None:
    for reason in (Reason.TEAM_STANDBY_RX, Reason.TEAM_STANDBY_TX, Reason.FAULT_SILENT, Reason.FAULT_LOSS):
        assert {encoding.drop_class(reason, d) for d in ("in", "out")} == {"expected"}


def test_every_reason_has_a_class_in_both_directions() -> None:
    for reason in Reason:
        for direction in ("in", "out"):
            assert encoding.drop_class(reason, direction) in ("expected", "violation")


# -- the error document and flags ------------------------------------------------------------------
def test_the_error_document_of_a_topology_lists_every_problem() -> None:
    err = TopologyError(
        [Issue("lab.yaml", "vms.web1.colour", "unknown key"), Issue("lab.yaml", "lab", "bad")]
    )
    doc = clibase.error_document(2, err)
    assert doc == {
        "error": {
            "code": 2,
            "message": "2 problems in lab.yaml",
            "problems": [
                {"file": "lab.yaml", "path": "vms.web1.colour", "reason": "unknown key"},
                {"file": "lab.yaml", "path": "lab", "reason": "bad"},
            ],
        }
    }
    assert json.loads(json.dumps(doc)) == doc


def test_the_error_document_of_any_other_failure_has_its_message() -> None:
    doc = clibase.error_document(2, clibase.UsageError("lab 'x' is not up"))
    assert doc == {"error": {"code": 2, "message": "lab 'x' is not up", "problems": []}}


def test_problems_of_a_live_change_move_to_the_flag_that_gave_them() -> None:
    err = TopologyError(
        [
            Issue("nist (live firewall)", "firewall.rules[10].ports[0]", "8080-8000 is backwards"),
            Issue("nist (live firewall)", "firewall.rules[10].apply", "unknown security group 'x'"),
            Issue("nist (live firewall)", "firewall.rules[1].ports[0]", "elsewhere"),
            Issue("nist (live firewall)", "firewall.rules[100].id", "not ours either"),
        ]
    )
    moved = clibase.at_flags(err, "fw add", "firewall.rules[10]", lambda rest: f"--{clibase.first_key(rest)}")
    assert [str(i) for i in moved.errors] == [
        "nlab fw add: --ports: 8080-8000 is backwards",
        "nlab fw add: --apply: unknown security group 'x'",
        "nist (live firewall): firewall.rules[1].ports[0]: elsewhere",
        "nist (live firewall): firewall.rules[100].id: not ours either",
    ]


def test_an_output_file_that_cannot_be_written_names_the_flag_path_and_reason(tmp_path: Path) -> None:
    with pytest.raises(clibase.UsageError) as caught:
        clibase.write_output(str(tmp_path / "no" / "x.svg"), "--out", b"x")
    assert str(caught.value) == f"--out {tmp_path}/no/x.svg: cannot write: No such file or directory"
    with pytest.raises(clibase.UsageError, match="Is a directory"):
        clibase.open_output(str(tmp_path), "--pcap")
    clibase.write_output(str(tmp_path / "x.svg"), "--out", b"<svg/>")
    assert (tmp_path / "x.svg").read_bytes() == b"<svg/>"


def test_an_echo_has_the_same_icmp_fields_in_watch_as_in_connections() -> None:
    from netns_lab.observe import capture, pktdecode, watch

    echo = bytes.fromhex("0200000000020200000000010800")  # Ethernet to .2 from .1, IPv4
    ip = bytes.fromhex("4500005400004000400100000a0000010a000002")
    frame = echo + ip + bytes([8, 0, 0, 0]) + (4242).to_bytes(2, "big") + (1).to_bytes(2, "big") + bytes(56)
    rec = watch.mirror_record("s", capture.Frame(1, frame, len(frame), None), pktdecode.decode(frame), "out")
    assert (rec["proto"], rec["sport"], rec["dport"], rec["icmp_type"], rec["icmp_id"]) == (
        "icmp",
        None,
        None,
        8,
        4242,
    )
