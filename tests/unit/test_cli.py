"""The CLI's contract where no root is needed: exit codes, one JSON document on stdout."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netns_lab import cli

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "labs" / "nist-800-125b.yaml"


def nlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netns_lab", *args], capture_output=True, text=True, cwd=REPO, check=False
    )


def test_validate_reference_lab_json() -> None:
    proc = nlab("validate", str(REFERENCE), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc == {
        "valid": True,
        "lab": "nist",
        "hosts": 3,
        "switches": 2,
        "networks": 3,
        "vms": 14,
        "routers": 0,
        "segments": 0,
    }


def test_validate_reports_every_error_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("lab: Bad\nhosts:\n  hv1: {pnics: {}, vswitches: {}, colour: red}\n")
    proc = nlab("validate", str(bad), "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["code"] == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{bad}: ") for line in lines)
    assert any(": lab: " in line for line in lines) and any("hosts.hv1.colour" in line for line in lines)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    proc = nlab("validate", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert "cannot read the topology file" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_command_and_bad_option_exit_2() -> None:
    assert nlab("frobnicate").returncode == 2
    assert nlab("up", "--no-such-option").returncode == 2


def test_graph_of_a_file_prints_dot() -> None:
    proc = nlab("graph", str(REFERENCE))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('graph "nist" {') and proc.stdout.rstrip().endswith("}")


HV3_TRUNK_LINE = "hv3-eth1: {trunk: [app, db, desktop, management, migration, logging, storage]}"


def test_vlans_of_a_file_compliant_and_not(tmp_path: Path) -> None:
    """`nlab vlans FILE`: exit 0 and no finding for the reference lab; exit 3, --json naming the
    trunk and VLAN, and the human verdict for a copy whose tor2 port to hv3 lost `desktop`."""
    good = nlab("vlans", str(REFERENCE), "--json")
    assert good.returncode == 0, good.stderr
    doc = json.loads(good.stdout)
    assert (doc["compliant"], doc["findings"], doc["probes"]) == (True, [], [])
    assert {t["trunk"] for t in doc["trunks"]} >= {"hv3.eth1 <-> tor2.hv3-eth1", "hv1.eth1 <-> tor2.hv1-eth1"}
    text = REFERENCE.read_text()
    assert text.count(HV3_TRUNK_LINE) == 1, "the reference lab changed: update the test"
    bad = tmp_path / "no-desktop.yaml"
    bad.write_text(text.replace(HV3_TRUNK_LINE, HV3_TRUNK_LINE.replace("desktop, ", "")))
    proc = nlab("vlans", str(bad), "--json")
    assert proc.returncode == 3, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["compliant"] is False
    errors = [(f["trunk"], f["vlan"]) for f in doc["findings"] if f["severity"] == "error"]
    assert errors == [("hv3.eth1 <-> tor2.hv3-eth1", "desktop (140)")]
    human = nlab("vlans", str(bad))
    assert human.returncode == 3
    assert human.stdout.splitlines()[0] == "VM-VN-R1 lab nist: NOT compliant"
    assert "error hv3.eth1 <-> tor2.hv3-eth1: VLAN desktop (140):" in human.stdout


def test_vlans_probe_of_a_file_is_a_usage_error() -> None:
    proc = nlab("vlans", str(REFERENCE), "--probe")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "vlans --probe needs a lab that is up" in proc.stderr


OVERLAY = REPO / "labs" / "overlay.yaml"


def test_overlay_compliance_of_files_met_not_met_and_not_applicable(tmp_path: Path) -> None:
    """`nlab overlay compliance FILE`: the overlay lab meets VM-VN-R2 and VM-VN-R3 (exit 0); in
    flood mode R3 is not met, naming every segment (exit 3); the reference lab's VLANs that span
    three hosts do not meet R2 and R3 does not apply (it has no overlay)."""
    good = nlab("overlay", "compliance", str(OVERLAY), "--json")
    assert good.returncode == 0, good.stderr
    doc = json.loads(good.stdout)
    assert doc["compliant"] is True
    assert [(r["id"], r["status"], r["objects"]) for r in doc["recommendations"]] == [
        ("VM-VN-R2", "met", []),
        ("VM-VN-R3", "met", []),
    ]
    text = OVERLAY.read_text()
    assert text.count("  mode: controller\n") == 1, "the overlay lab changed: update the test"
    flood = tmp_path / "flood.yaml"
    flood.write_text(text.replace("  mode: controller\n", "  mode: flood\n"))
    proc = nlab("overlay", "compliance", str(flood), "--json")
    assert proc.returncode == 3, proc.stderr
    r2, r3 = json.loads(proc.stdout)["recommendations"]
    assert (r2["status"], r3["status"]) == ("met", "not met")
    assert r3["objects"] == [
        "segment blue-web (VNI 10010, tenant blue)",
        "segment blue-db (VNI 10020, tenant blue)",
        "segment red-web (VNI 20010, tenant red)",
    ]
    human = nlab("overlay", "compliance", str(REFERENCE))
    assert human.returncode == 3, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0] == "VM-VN-R2, VM-VN-R3 lab nist: NOT compliant"
    assert lines[1].startswith("not met VM-VN-R2: 4 VLANs span more than 2 hosts")
    assert "  VLAN app (120) on hv1, hv2, hv3" in lines
    assert "not applicable VM-VN-R3: the lab has no overlay segments" in lines


def test_overlay_compliance_of_a_bad_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(OVERLAY.read_text().replace("vni: 10020", "vni: 16777216"))
    proc = nlab("overlay", "compliance", str(bad))
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "segments.blue-db.vni" in proc.stderr and "Traceback" not in proc.stderr


# -- the JSON error document -----------------------------------------------------------------------
NOT_UP = "nosuchlab1"
BAD = "lab: Bad\nhosts:\n  hv1: {pnics: {}, vswitches: {}, colour: red}\n"


def _json_commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command (with its verb) that takes --json."""
    found = [words] if any("--json" in a.option_strings for a in parser._actions) else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _json_commands(sub, (*words, name))
    return found


def _failing(bad: Path) -> dict[tuple[str, ...], list[str]]:
    """A way to make each --json command fail for a reason of its own (not a usage error)."""
    fw, mirror = ["fw", "--lab", NOT_UP], ["mirror", "--lab", NOT_UP]
    rule = ["--id", "1", "--apply", "web", "--direction", "in", "--peer", "any", "--action", "allow"]
    return {
        ("up",): ["up", str(bad)],
        ("down",): ["down", "a", "b"],  # down of a lab that is not up succeeds: only usage is left
        ("status",): ["status", NOT_UP],
        ("validate",): ["validate", str(bad)],
        ("trace",): ["trace", "web1", "--to", "10.0.0.1", "--lab", NOT_UP],
        ("fw", "show"): [*fw, "show"],
        ("fw", "counters"): [*fw, "counters"],
        ("fw", "connections"): [*fw, "connections"],
        ("fw", "add"): [*fw, "add", *rule],
        ("fw", "del"): [*fw, "del", "1"],
        ("fw", "group"): [*fw, "group", "add", "web", "web1"],
        ("fw", "events"): [*fw, "events"],
        ("mirror", "list"): [*mirror, "list"],
        ("mirror", "add"): [*mirror, "add", "s", "--source", "web1", "--direction", "in", "--dest", "ids"],
        ("mirror", "del"): [*mirror, "del", "s"],
        ("watch",): ["watch", "--lab", NOT_UP],
        ("vlans",): ["vlans", str(bad)],
        ("audit",): ["audit", str(bad)],
        ("overlay", "show"): ["overlay", "show", "--lab", NOT_UP],
        ("overlay", "check"): ["overlay", "check", "--lab", NOT_UP],
        ("overlay", "compliance"): ["overlay", "compliance", str(bad)],
        ("fail",): ["fail", "hv1.eth0", "--lab", NOT_UP],
        ("heal",): ["heal", "--all", "--lab", NOT_UP],
        ("verify",): ["verify", "--lab", NOT_UP],
        ("migrate",): ["migrate", "web1", "hv2", "--lab", NOT_UP],
        ("report",): ["report", "--lab", NOT_UP, "--out", str(bad.parent / "report")],
        ("teams",): ["teams", str(bad)],
        ("placement", "compare"): ["placement", "compare", "--lab", NOT_UP],
    }


def _one_error_document(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, err)
    doc = json.loads(out)  # exactly one document: a second one would not parse
    assert set(doc) == {"error"} and doc["error"]["code"] == code, (argv, doc)
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
    assert all(set(p) == {"file", "path", "reason"} for p in doc["error"]["problems"])
    assert err.strip(), f"{argv}: the human text stays on stderr"
    return doc


def test_every_json_command_that_fails_prints_one_error_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    commands = _json_commands(cli._parser())
    failing = _failing(bad)
    assert sorted(commands) == sorted(failing), "a --json command without a failing case here"
    for words, argv in failing.items():
        _one_error_document([*argv, "--json"], capsys)
        _one_error_document([*words, "--json", "--no-such-option"], capsys)


def test_the_error_document_of_a_bad_topology_lists_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    doc = _one_error_document(["validate", str(bad), "--json"], capsys)
    assert doc["error"]["message"] == f"2 problems in {bad}"
    assert [p["path"] for p in doc["error"]["problems"]] == ["lab", "hosts.hv1.colour"]


def test_the_error_document_comes_from_the_real_entry_point(tmp_path: Path) -> None:
    proc = nlab("fw", "--lab", NOT_UP, "counters", "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["message"].startswith(f"lab {NOT_UP!r} is not up")


# -- output files -----------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graph_to_a_path_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    proc = nlab("graph", str(REFERENCE), "--out", "/nonexistent/x.svg")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert (
        proc.stderr.strip() == "nlab graph: --out /nonexistent/x.svg: cannot write: No such file or directory"
    )
    proc = nlab("graph", str(REFERENCE), "--out", str(tmp_path / "x.nosuchformat"))
    assert proc.returncode == 2 and "Graphviz cannot make format 'nosuchformat'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = nlab("graph", str(REFERENCE), "--out", str(tmp_path / "x.svg"))
    assert proc.returncode == 0 and (tmp_path / "x.svg").read_text().lstrip().startswith("<?xml")
