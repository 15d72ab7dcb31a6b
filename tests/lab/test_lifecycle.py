"""Lab lifecycle: up, down, crash, interruption, rollback, refusals; nothing may be left behind.

nlab up --name tXXXXXX ... ──kill -9 midway──> nlab down tXXXXXX ──> no namespace/state/process
builder.up (in this process) ──Ctrl-C at namespace n──> rolled back: no compile thread, fd or pin
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from netns_lab.kernel import netns
from netns_lab.lab import builder
from netns_lab.lab.state import LabState, pin_dir, state_dir
from netns_lab.topology import loader
from tests.lab import build_shim
from tests.lab.build_shim import recorded
from tests.lab.conftest import REFERENCE, REPO, cmdline, lab_namespaces, leftovers, nlab, unique_name
from tests.labgen import scale_topology


def _start_up(topology: Path, name: str, record: Path | None = None) -> subprocess.Popen[str]:
    """`nlab up` in the background; with `record`, under tests.lab.build_shim (see there)."""
    shim = ["tests.lab.build_shim", str(record)] if record else ["netns_lab"]
    return subprocess.Popen(
        [sys.executable, "-m", *shim, "up", str(topology), "--name", name],
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


def _sweepers(inodes: set[int]) -> list[int]:
    return [pid for pid in netns.pids_in(inodes) if "netns_lab.lab.sweeper" in cmdline(pid)]


def test_sigterm_midway_rolls_back_by_itself(big_topology: Path, tmp_path: Path) -> None:
    name, record = unique_name(), tmp_path / "namespaces"
    proc = _start_up(big_topology, name, record)
    try:
        _wait_for_journal(name, 40, proc)
        inodes = set(recorded(record).values())
        assert _sweepers(inodes), "no sweeper runs yet: the rollback would have none to stop"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "nothing was left half-built" in err
        assert leftovers(name, set(recorded(record).values())) == {}
    finally:
        proc.kill()
        nlab("down", name)


def test_failure_midway_rolls_back(tmp_path: Path) -> None:
    """A ruleset nft rejects fails the build at the firewall VM: exit 2, no trace of the lab."""
    topo = REPO / "labs" / "nist-800-125b.yaml"
    bad = tmp_path / "badfw.yaml"
    bad.write_text(topo.read_text().replace("tcp dport { 80, 443 }", "tcp dport { 80, 443 } frobnicate"))
    name, record = unique_name(), tmp_path / "namespaces"
    up = _start_up(bad, name, record)
    try:
        _, err = up.communicate(timeout=120)
    finally:
        up.kill()
        nlab("down", name)
    assert up.returncode == 2, err
    assert err.startswith(f"{bad}: vms.vm1.nftables: nft rejected the ruleset:")
    assert "Traceback" not in err
    made = recorded(record)
    assert f"{name}-hv1" in made, "vm1's host (and its sweeper) was not built before the failure"
    assert leftovers(name, set(made.values())) == {}


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
    assert summary["lab"] == lab.name and summary["vms"] == 14 and summary["namespaces"] == 22
    assert lab.status()["healthy"]
    replaced = lab.up("--replace", "--json")
    assert replaced.returncode == 0, replaced.stderr
    first = nlab("down", lab.name, "--json")
    assert json.loads(first.stdout)["removed"] is True
    second = nlab("down", lab.name, "--json")
    assert second.returncode == 0 and json.loads(second.stdout)["removed"] is False
    assert leftovers(lab.name, lab.inodes) == {}


ROGUE_MAC = "02:00:5e:00:53:99"


def test_a_lab_broken_on_purpose_is_unhealthy_with_each_reason(make_lab) -> None:
    """A NIC set down, a port's programs detached, a pin removed, a VM's namespace deleted, a VM's
    second NIC deleted and another's MAC changed, a mirror port's program detached and its other
    end set down: status names each, and exits 3 with and without --json; healthy again once the
    NIC is back up."""
    lab = make_lab()
    assert lab.up().returncode == 0
    assert lab.status()["healthy"] is True
    subprocess.run(["ip", "-n", lab.ns("web2"), "link", "set", "eth0", "down"], check=True)
    proc = nlab("status", lab.name, "--json")
    assert proc.returncode == 3, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["healthy"], doc["problems"]) == (False, ["web2: NIC eth0 is down"])
    subprocess.run(["ip", "-n", lab.ns("web2"), "link", "set", "eth0", "up"], check=True)
    assert nlab("status", lab.name, "--json").returncode == 0

    subprocess.run(["tc", "-n", lab.ns("hv2"), "qdisc", "del", "dev", "app1-0", "clsact"], check=True)
    subprocess.run(["ip", "-n", lab.ns("tor2"), "link", "set", "hv3-eth1", "down"], check=True)
    (pin_dir(lab.name) / "hv3" / "prog_port_to_vm").unlink()
    lab.inodes.add(netns.inode(lab.ns("db1")) or 0)
    subprocess.run(["ip", "netns", "del", lab.ns("db1")], check=True)
    subprocess.run(["ip", "-n", lab.ns("app1"), "link", "del", "eth1"], check=True)
    subprocess.run(["ip", "-n", lab.ns("app2"), "link", "set", "eth1", "address", ROGUE_MAC], check=True)
    subprocess.run(["tc", "-n", lab.ns("hv1"), "qdisc", "del", "dev", "mirror1", "clsact"], check=True)
    subprocess.run(["ip", "-n", lab.ns("hv3"), "link", "set", "mirror0", "down"], check=True)
    app2_mac = next(
        n["mac"] for vm in doc["vms"] if vm["name"] == "app2" for n in vm["nics"] if n["name"] == "eth1"
    )
    proc = nlab("status", lab.name, "--json")
    assert proc.returncode == 3, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["healthy"] is False and doc["missing"] == [lab.ns("db1")]
    want = [
        f"{lab.ns('db1')}: namespace is missing",
        "tor2: port hv3-eth1 is down",
        "hv1: mirror port mirror1: ingress runs none, not mirror_port_rx",
        "hv2: port app1-0: ingress runs none, not port_from_vm",
        "hv2: port app1-0: egress runs none, not port_to_vm",
        "hv2: port app1-1 is missing",  # the host end of app1's eth1 died with it
        "hv2: port db1-0 is missing",  # its veth died with db1's namespace
        f"hv3: not pinned in {pin_dir(lab.name) / 'hv3'}: prog_port_to_vm",
        "hv3: mirror port mirror0 is down",
        "app1: NIC eth1 is missing",
        f"app2: NIC eth1 has MAC {ROGUE_MAC}, not {app2_mac}",
    ]
    assert doc["problems"] == want
    human = nlab("status", lab.name)
    assert human.returncode == 3
    assert human.stdout.splitlines()[0].endswith(f"NOT healthy ({len(want)} problems)")
    assert [line.removeprefix(" problem ") for line in human.stdout.splitlines()[1 : len(want) + 1]] == want


def test_down_stops_processes_left_in_the_lab(make_lab) -> None:
    lab = make_lab()
    assert lab.up().returncode == 0
    sleeper = subprocess.Popen(
        [sys.executable, "-m", "netns_lab", "exec", "--lab", lab.name, "web1", "--", "sleep", "600"], cwd=REPO
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sleeper.pid not in _lab_processes(lab):
            time.sleep(0.05)
        # the lab's own: one connection sweeper per hypervisor (netns_lab/lab/sweeper.py), the
        # event hub (netns_lab/lab/eventhub.py) and a team monitor per teamed host (hv2, hv3)
        own = [pid for pid in _lab_processes(lab) if pid != sleeper.pid]
        assert sleeper.pid in _lab_processes(lab)
        kinds = sorted(cmdline(pid).split(" -m ")[1].split()[0] for pid in own)
        assert kinds == [
            *["netns_lab.features.team.monitor"] * 2,
            "netns_lab.lab.eventhub",
            *["netns_lab.lab.sweeper"] * 3,
        ], [cmdline(pid) for pid in own]
        down = json.loads(nlab("down", lab.name, "--json").stdout)
        assert sorted(down["processes"]) == sorted([sleeper.pid, *own])
        assert sleeper.wait(10) != 0
    finally:
        sleeper.kill()


def test_a_crashed_event_hub_is_restarted_by_its_next_reader_and_ended_by_down(make_lab) -> None:
    lab = make_lab()
    assert lab.up().returncode == 0
    (hub,) = _hubs(lab)
    os.kill(hub, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _hubs(lab):
        time.sleep(0.05)
    assert _hubs(lab) == [], "the hub did not die"
    events = nlab("fw", "--lab", lab.name, "events", "--timeout", "0.5")
    assert events.returncode == 0 and "Traceback" not in events.stderr, events.stderr
    (again,) = _hubs(lab)  # started by that reader, in the lab's namespace: the lab owns it
    assert again != hub
    down = json.loads(nlab("down", lab.name, "--json").stdout)
    assert again in down["processes"]
    assert leftovers(lab.name, lab.inodes) == {}


def _hubs(lab) -> list[int]:
    return [pid for pid in _lab_processes(lab) if "netns_lab.lab.eventhub" in cmdline(pid)]


def _lab_processes(lab) -> list[int]:
    return leftovers(lab.name, lab.inodes).get("processes") or []


def test_status_of_a_lab_that_is_not_up() -> None:
    proc = nlab("status", "nosuchlab", "--json")
    assert proc.returncode == 2 and "lab 'nosuchlab' is not up" in proc.stderr
    error = json.loads(proc.stdout)["error"]  # --json: one error document on stdout
    assert error["code"] == 2 and error["message"].startswith("lab 'nosuchlab' is not up")


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def warm_bcc() -> None:
    """Load and close one dataplane first, so that whatever bcc keeps open for good is not
    counted as a leak (and skip where programs cannot be loaded)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: loads eBPF programs and builds namespaces")
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")
    from dataplane.switch import SwitchDataplane

    SwitchDataplane.load().close()


@pytest.mark.parametrize("at", [1, 2, 4, 12, 22])
def test_interrupt_at_any_namespace_closes_every_dataplane(monkeypatch, warm_bcc, at: int) -> None:
    """Ctrl-C while the reference lab's `at`-th namespace is made, with compiles queued, under
    way or done: rolled back, the compile thread gone, no fd left open, no pin left."""
    name, inodes = unique_name(), {}
    topo = loader.load_text(REFERENCE.read_text(), str(REFERENCE), lab=name)
    build_shim.install(inodes.__setitem__, monkeypatch.setattr)
    create, made = netns.create, []

    def create_then_interrupt(ns: str) -> None:
        made.append(ns)
        if len(made) == at:
            raise KeyboardInterrupt
        create(ns)

    monkeypatch.setattr(netns, "create", create_then_interrupt)
    before = _open_fds()
    try:
        with pytest.raises(KeyboardInterrupt):
            builder.up(topo, REFERENCE.read_text())
    finally:
        monkeypatch.undo()
        nlab("down", name)
    assert len(made) == at
    assert not [t.name for t in threading.enumerate() if t.name.startswith("nlab-compile")]
    assert _open_fds() == before, "a loaded dataplane (or a socket) was not closed"
    assert len(inodes) == at - 1
    assert leftovers(name, set(inodes.values())) == {}


def test_a_dataplane_that_fails_to_load_fails_the_build_cleanly(monkeypatch, warm_bcc) -> None:
    """The last host's dataplane fails to load, once the other hosts' sweepers run."""
    from dataplane.bpf import LoadError
    from dataplane.switch import SwitchDataplane

    name, inodes = unique_name(), {}
    topo = loader.load_text(REFERENCE.read_text(), str(REFERENCE), lab=name)
    build_shim.install(inodes.__setitem__, monkeypatch.setattr)
    load, loads = SwitchDataplane.load, []
    last = len(topo.switches) + len(topo.hosts)

    def last_fails(
        pins: Path | None = None, vm_ports: bool = True, like: SwitchDataplane | None = None
    ) -> SwitchDataplane:
        loads.append(pins)
        if len(loads) == last:
            raise LoadError("cannot load ebpf/vswitch.c: played by the test")
        return load(pins, vm_ports, like)

    monkeypatch.setattr(SwitchDataplane, "load", last_fails)
    before = _open_fds()
    try:
        with pytest.raises(RuntimeError, match="played by the test"):
            builder.up(topo, REFERENCE.read_text())
    finally:
        monkeypatch.undo()
        nlab("down", name)
    assert _open_fds() == before
    assert {name + "-hv1", name + "-hv2"} <= set(inodes), "no sweeper ran before the failure"
    assert leftovers(name, set(inodes.values())) == {}
