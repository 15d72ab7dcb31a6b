"""Lab lifecycle: up, down, crash, interruption, rollback, refusals; nothing may be left behind.

nlab up --name tXXXXXX ... ──kill -9 midway──> nlab down tXXXXXX ──> no namespace/state/process
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netns_lab.state import LabState, state_dir
from tests.lab.conftest import REPO, lab_namespaces, leftovers, nlab, unique_name
from tests.labgen import scale_topology


def _start_up(topology: Path, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "netns_lab", "up", str(topology), "--name", name],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_journal(name: str, at_least: int, proc: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = LabState.read(name)
        count = len(st.namespaces()) if st else 0
        if count >= at_least:
            return count
        assert proc.poll() is None, f"nlab up ended early: {proc.communicate()}"
        time.sleep(0.002)
    raise AssertionError("nlab up made no progress")


@pytest.fixture
def big_topology(tmp_path: Path) -> Path:
    path = tmp_path / "big.yaml"
    path.write_text(scale_topology(150, hosts=4, lab="big"))
    return path


def test_kill_9_midway_then_down_leaves_nothing(big_topology: Path) -> None:
    name = unique_name()
    proc = _start_up(big_topology, name)
    try:
        made = _wait_for_journal(name, 40, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert made < 155, "the build finished before it could be killed"
        inodes = {p.stat().st_ino for p in (Path("/run/netns") / n for n in lab_namespaces(name))}
        assert lab_namespaces(name), "the crash should leave a half-built lab for down to clean"
        down = nlab("down", name, "--json")
        assert down.returncode == 0, down.stderr
        assert json.loads(down.stdout)["removed"] is True
        assert leftovers(name, inodes) == {}
    finally:
        proc.kill()
        nlab("down", name)


def test_sigterm_midway_rolls_back_by_itself(big_topology: Path) -> None:
    name = unique_name()
    proc = _start_up(big_topology, name)
    try:
        _wait_for_journal(name, 40, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "nothing was left half-built" in err
        assert leftovers(name, set()) == {}
    finally:
        proc.kill()
        nlab("down", name)


def test_failure_midway_rolls_back(tmp_path: Path) -> None:
    """A ruleset nft rejects fails the build at the firewall VM: exit 2, no trace of the lab."""
    topo = REPO / "labs" / "nist-800-125b.yaml"
    bad = tmp_path / "badfw.yaml"
    bad.write_text(topo.read_text().replace("tcp dport { 80, 443 }", "tcp dport { 80, 443 } frobnicate"))
    name = unique_name()
    proc = nlab("up", str(bad), "--name", name)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"{bad}: vms.vm1.nftables: nft rejected the ruleset:")
    assert "Traceback" not in proc.stderr
    assert leftovers(name, set()) == {}


def test_bad_topology_creates_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("lab: x\nvms:\n  a: {host: nowhere, nics: [{vswitch: vs0}]}\n")
    name = unique_name()
    proc = nlab("up", str(bad), "--name", name)
    assert proc.returncode == 2
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert f"{bad}: vms.a.host:" in proc.stderr
    assert not state_dir(name).exists() and not lab_namespaces(name)


def test_up_status_down_json_and_idempotent_down(make_lab) -> None:
    lab = make_lab()
    up = lab.up("--json")
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    assert summary["lab"] == lab.name and summary["vms"] == 14 and summary["namespaces"] == 21
    assert lab.status()["healthy"]
    replaced = lab.up("--replace", "--json")
    assert replaced.returncode == 0, replaced.stderr
    first = nlab("down", lab.name, "--json")
    assert json.loads(first.stdout)["removed"] is True
    second = nlab("down", lab.name, "--json")
    assert second.returncode == 0 and json.loads(second.stdout)["removed"] is False
    assert leftovers(lab.name, lab.inodes) == {}


def test_down_stops_processes_left_in_the_lab(make_lab) -> None:
    lab = make_lab()
    assert lab.up().returncode == 0
    sleeper = subprocess.Popen(
        [sys.executable, "-m", "netns_lab", "exec", "--lab", lab.name, "web1", "--", "sleep", "600"], cwd=REPO
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not leftovers(lab.name, lab.inodes).get("processes"):
            time.sleep(0.05)
        assert leftovers(lab.name, lab.inodes).get("processes") == [sleeper.pid]
        down = json.loads(nlab("down", lab.name, "--json").stdout)
        assert down["processes"] == [sleeper.pid]
        assert sleeper.wait(10) != 0
    finally:
        sleeper.kill()


def test_status_of_a_lab_that_is_not_up() -> None:
    proc = nlab("status", "nosuchlab", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "lab 'nosuchlab' is not up" in proc.stderr
