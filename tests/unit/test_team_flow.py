"""What a NIC team's events and state look like to users, without root: the monitor's lines as
watch records and words, the event hub's team filter, `nlab watch --team`'s choice of sources,
and `nlab teams` on topology files (labs/teams.yaml breaks each of VM-MP-R1..R3 once)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netns_lab.cli import watch as cli_watch
from netns_lab.features.team import events
from netns_lab.lab import fanout
from netns_lab.observe import watch

REPO = Path(__file__).resolve().parents[2]
TEAMS = REPO / "labs" / "teams.yaml"
PAIR = REPO / "tests" / "lab" / "team_pair.yaml"

FAILOVER = {
    "kind": "team", "lab": "l", "host": "hv1", "time": 100.0, "event": "failover", "team": "hv1.vs1",
    "from": "eth0", "to": "eth1", "cause": "carrier", "latency_ms": 0.95, "ambiguous": False,
}  # fmt: skip
MEMBER = {
    "kind": "team", "lab": "l", "host": "hv1", "time": 101.0, "event": "member", "team": "hv1.vs1",
    "member": "eth1", "state": "failed", "cause": "beacon",
}  # fmt: skip
STATE = {
    "kind": "team", "time": 99.0, "event": "state", "team": "hv1.vs1", "active": "eth0",
    "members": {"eth0": "active", "eth1": "standby"},
}  # fmt: skip


def nlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netns_lab", *args], capture_output=True, text=True, cwd=REPO, check=False
    )


# -- the monitor's lines as records and words ------------------------------------------------------
def test_a_move_is_one_team_record_and_bookkeeping_reaches_nobody() -> None:
    record = events.watch_record(FAILOVER, "l", "hv1")
    assert record == {**FAILOVER, "kind": "team"}
    assert set(record) >= {"kind", "lab", "host", "team", "from", "to", "cause", "latency_ms", "time"}
    member = events.watch_record(MEMBER, "l", "hv1")
    assert member is not None and member["kind"] == "team-member"
    assert (member["member"], member["state"], member["cause"]) == ("eth1", "failed", "beacon")
    assert events.watch_record(STATE, "l", "hv1") is None
    # a line written before the monitor named its lab and host takes them from its file
    old = events.watch_record({k: v for k, v in FAILOVER.items() if k not in ("lab", "host")}, "x", "hv9")
    assert old is not None and (old["lab"], old["host"]) == ("x", "hv9")


def test_records_in_words() -> None:
    assert events.describe(events.watch_record(FAILOVER, "l", "hv1") or {}) == (
        "failover eth0 → eth1 (carrier, detected in 0.95 ms)"
    )
    back = {
        **FAILOVER,
        "event": "failback",
        "from": "eth1",
        "to": "eth0",
        "cause": "failback",
        "latency_ms": 1000.0,
    }
    assert events.describe(events.watch_record(back, "l", "hv1") or {}) == (
        "failback eth1 → eth0 (failback, after 1000 ms of hold-down)"
    )
    assert events.describe(events.watch_record(MEMBER, "l", "hv1") or {}) == "eth1 failed (beacon)"
    text, key = cli_watch.line(events.watch_record(FAILOVER, "l", "hv1") or {})
    assert key == "team" and "TEAM" in text and "hv1.vs1" in text and text.endswith("detected in 0.95 ms)")


def _write(path: Path, *lines: dict[str, Any], partial: str = "") -> None:
    with open(path, "a") as f:
        f.write("".join(json.dumps(line) + "\n" for line in lines) + partial)


def test_the_tail_reads_new_lines_of_every_host_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "state_dir", lambda lab: tmp_path)
    _write(tmp_path / "team-hv1.events", STATE, FAILOVER)  # history: before the tail began
    tail = events.Tail("l")
    assert tail.poll() == []
    _write(tmp_path / "team-hv1.events", MEMBER, partial='{"event": "failb')
    _write(tmp_path / "team-hv2.events", {**FAILOVER, "host": "hv2", "team": "hv2.vs1", "time": 100.5})
    assert [(r["kind"], r["host"]) for r in tail.poll()] == [("team", "hv2"), ("team-member", "hv1")]
    assert tail.poll() == []
    with open(tmp_path / "team-hv1.events", "a") as f:  # the torn line completed
        f.write('ack", "team": "hv1.vs1", "from": "eth1", "to": "eth0", "cause": "failback", "time": 102}\n')
    (back,) = tail.poll()
    assert (back["event"], back["from"], back["to"]) == ("failback", "eth1", "eth0")


def test_member_states_and_the_last_move(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "state_dir", lambda lab: tmp_path)
    assert (
        events.member_states("l", "hv1", "hv1.vs1") == {} and events.last_move("l", "hv1", "hv1.vs1") is None
    )
    _write(tmp_path / "team-hv1.events", STATE, MEMBER, FAILOVER)
    assert events.member_states("l", "hv1", "hv1.vs1") == {"eth0": "ok", "eth1": "failed (beacon)"}
    move = events.last_move("l", "hv1", "hv1.vs1")
    assert move is not None and (move["from"], move["to"]) == ("eth0", "eth1")
    assert events.last_move("l", "hv1", "hv1.vs2") is None


# -- the hub's team filter ---------------------------------------------------------------------------
def test_team_records_go_to_those_who_asked_since_they_came() -> None:
    hub = fanout.Fanout()
    verdicts = hub.join(1, fanout.Filter())  # `nlab fw events`: no team records
    every = hub.join(2, fanout.Filter(teams=frozenset()))
    other = hub.join(3, fanout.Filter(verdicts=False, teams=frozenset({"hv2.vs1"})))
    only = hub.join(4, fanout.Filter(verdicts=False, teams=frozenset({"hv1.vs1"})))
    record = events.watch_record(FAILOVER, "l", "hv1") or {}
    for sub in (verdicts, every, other, only):
        sub.since_time = 50.0
    late = hub.join(5, fanout.Filter(teams=frozenset()))
    late.since_time = 100.5  # subscribed after the move
    hub.team(record)
    assert [list(s.queue) for s in (verdicts, every, other, only, late)] == [[], [record], [], [record], []]
    hub.kernel_lost(3)  # lost verdicts concern only those who want verdicts
    assert [len(s.queue) for s in (verdicts, every, other, only)] == [1, 2, 0, 1]
    ev = {"kind": "verdict", "vm": "web1", "verdict": "deny"}
    assert not only.flt.keep(ev) and every.flt.keep(ev)


def test_the_team_filter_travels_and_bad_ones_are_named() -> None:
    for flt in (fanout.Filter(), fanout.Filter(frozenset({"a"}), True, False, frozenset({"hv1.vs1"}))):
        assert fanout.Filter.from_doc(json.loads(json.dumps(flt.doc()))) == flt
    assert fanout.Filter().doc() == {"vms": [], "denied": False}  # what older subscribers send
    with pytest.raises(ValueError, match="teams: 'hv1' is not a list"):
        fanout.Filter.from_doc({"teams": "hv1"})
    with pytest.raises(ValueError, match="verdicts: 1 is not true or false"):
        fanout.Filter.from_doc({"verdicts": 1})


def test_watch_sources_with_and_without_the_team_option() -> None:
    everything = watch.Filter()
    assert everything.wants_teams and everything.hub_filter().teams == frozenset()
    teams = watch.Filter(team="")
    assert teams.wants_teams and not teams.wants_verdicts and not teams.wants_mirrors
    assert teams.hub_filter() == fanout.Filter(verdicts=False, teams=frozenset())
    assert watch.Filter(team="hv1.vs1").hub_filter().teams == frozenset({"hv1.vs1"})
    for narrowed in (watch.Filter(frozenset({"web1"})), watch.Filter(denied=True), watch.Filter(mirror="s")):
        assert not narrowed.wants_teams and narrowed.hub_filter().teams is None
    both = watch.Filter(denied=True, team="")
    assert both.wants_teams and both.wants_verdicts and not both.wants_mirrors
    vms = watch.Filter(frozenset({"web1"}), team="")
    assert vms.wants_teams and vms.wants_verdicts and vms.wants_mirrors


# -- nlab teams ---------------------------------------------------------------------------------------
def test_teams_of_a_file_names_each_violation() -> None:
    proc = nlab("teams", str(TEAMS), "--json")
    assert proc.returncode == 3, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["lab"], doc["running"], doc["compliant"]) == ("teams", False, False)
    hv1 = doc["teams"][0]
    assert hv1["team"] == "hv1.vs1" and "active" not in hv1
    assert hv1["members"] == [
        {"name": "eth0", "order": 1, "driver": "ixgbe", "pci_bus": "0000:03:00.0", "switch": "tor1"},
        {"name": "eth1", "order": 2, "driver": "i40e", "pci_bus": "0000:81:00.0", "switch": "tor2"},
    ]
    assert (hv1["policy"], hv1["detection"], hv1["beacon_interval"]) == (
        "active-standby", ["link", "beacon"], "100ms",
    )  # fmt: skip
    not_met = [
        (r["id"], r["objects"], r["reason"]) for r in doc["recommendations"] if r["status"] == "not met"
    ]
    assert not_met == [
        ("VM-MP-R1", ["hv2.vs1", "hv2.eth0", "hv2.eth1"], "hv2.vs1: eth0 and eth1 share driver ixgbe"),
        ("VM-MP-R2", ["hv3.vs1", "hv3.eth0", "hv3.eth1"], "hv3.vs1: eth0 and eth1 share PCI bus 0000:05"),
        (
            "VM-MP-R3",
            ["hv4.vs1", "hv4.eth0", "hv4.eth1"],
            "hv4.vs1: eth0 and eth1 share physical switch tor1",
        ),
    ]
    assert all(r["status"] == "met" for r in doc["recommendations"] if r["objects"][0] == "hv1.vs1")
    human = nlab("teams", str(TEAMS))
    assert human.returncode == 3
    assert human.stdout.splitlines()[0] == "VM-MP-R1..R3 lab teams (topology): NOT compliant"
    assert "hv4.vs1: eth0 and eth1 share physical switch tor1" in human.stdout


def test_teams_of_a_compliant_file_and_of_one_without_teams() -> None:
    proc = nlab("teams", str(PAIR), "--json")
    assert proc.returncode == 0, proc.stderr
    assert {r["status"] for r in json.loads(proc.stdout)["recommendations"]} == {"met"}
    bare = nlab("teams", str(REPO / "tests" / "lab" / "two_vms.yaml"), "--json")
    assert bare.returncode == 0, bare.stderr
    doc = json.loads(bare.stdout)
    assert doc["teams"] == [] and {r["status"] for r in doc["recommendations"]} == {"not applicable"}


def test_teams_of_a_bad_file_exits_2_naming_file_field_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TEAMS.read_text().replace("beacon_interval: 1s", "beacon_interval: 0ms"))
    proc = nlab("teams", str(bad))
    assert (proc.returncode, proc.stdout) == (2, "")
    assert f"{bad}: hosts.hv3.vswitches.vs1.team.beacon_interval: 0ms is not in" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_summary_counts_team_events() -> None:
    stats = watch.Stats()
    stats.counts["team"] += 2
    stats.counts["deny"] += 1
    line = stats.line()
    assert line.startswith("3 lines in ") and "1 denied, 0 mirrored, 2 team events;" in line
    assert "team events" not in watch.Stats().line()  # none: the line is as without teams
