"""The CLI's contract where no root is needed: exit codes, one JSON document on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert doc == {"valid": True, "lab": "nist", "hosts": 3, "switches": 2, "networks": 3, "vms": 14}


def test_validate_reports_every_error_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("lab: Bad\nhosts:\n  hv1: {pnics: {}, vswitches: {}, colour: red}\n")
    proc = nlab("validate", str(bad), "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
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
