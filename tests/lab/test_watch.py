"""`nlab watch` on the reference lab under real traffic.

    hv1 vs2 (VLAN web)                    hv2 prod                                  hv3 ops
     web2 .12 --pings--> web1 .11          app1 eth1 db .21 --tcp--> db1 .31         app2 db .22
                         [tap A: web1's    app1 eth0 app .21 --ping--> over tor2 --> app2 app .22
                          eth0, session    [tap B: hv2's eth1, the trunk to tor2: tags come back
                          web1-in]          from PACKET_AUXDATA]

Verdicts come from the real firewall programs' ring buffers (denials at app1-1 by the default
policy, at db1-0 by a deny rule 65 added with `nlab fw add`; allowed new flows by rules 21/30).
Taps on interfaces that are no session's destination (a VM's own NIC, a host's trunk, a socket
with a tiny buffer) are built here: tests/lab/watch_shim.py stands in for
`netns_lab.features.mirror.live` in a `nlab watch` subprocess. The end-to-end test uses a real
session (web1 to the analyzer).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from netns_lab.features.mirror import live as mirror_live
from netns_lab.features.mirror.plan import Tap
from netns_lab.kernel import netns
from netns_lab.lab import running
from netns_lab.observe import probe, watch
from netns_lab.observe.capture import PcapWriter
from tests.lab import fw_attacks as fa
from tests.lab import vlan_attacks as va
from tests.lab.conftest import REPO, Lab
from tests.lab.watch_shim import encode

DB1, APP1_DB, APP2_DB, APP2_APP, WEB1 = "10.40.0.31", "10.40.0.21", "10.40.0.22", "10.30.0.22", "10.20.0.11"
PG, PINGS = 5432, 5
DENY_APP2 = fa.rule(65, "db", "in", "vm:app2", "tcp", PG, action="deny", priority=50)
VERDICT_FIELDS = {"kind", "time", "vm", "nic", "port", "direction", "verdict", "reason", "rule", "proto"} | {
    "src", "dst", "sport", "dport", "icmp_type", "icmp_id", "count",
}  # fmt: skip
ECHO_LEN = 98  # Ethernet + IPv4 + ICMP + ping's 56 bytes: the counted pings; warm-up pings are longer


class Streaming:
    """`nlab watch ... --json` in the background (optionally through the mirror shim)."""

    def __init__(self, args: list[str], taps: list[Tap] | None = None) -> None:
        head = ["-m", "tests.lab.watch_shim", encode(taps)] if taps is not None else ["-m", "netns_lab"]
        self.proc = subprocess.Popen(
            [sys.executable, *head, "watch", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout or ()), daemon=True)
        self.thread.start()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def wait_for(self, found: Callable[[list[dict[str, Any]]], bool], seconds: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while not found(records := self.records()):
            assert self.proc.poll() is None, f"nlab watch ended early: {self.proc.stderr.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"nlab watch did not print it in {seconds} s: {records[-5:]}"
            time.sleep(0.1)
        return records

    def stop(self) -> tuple[int, str]:
        """Ctrl-C as a user would stop it (SIGTERM is handled the same); its exit code and stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
        rc = self.proc.wait(10)
        self.thread.join(5)
        return rc, self.proc.stderr.read() if self.proc.stderr else ""


def ping(ns: str, dst: str, count: int, size: int = 56, flood: bool = False) -> None:
    pace = ["-f"] if flood else ["-i", "0.2"]
    with netns.inside(ns):
        subprocess.run(
            ["ping", "-n", "-q", "-c", str(count), "-s", str(size), "-W", "1", *pace, dst],
            capture_output=True,
            check=False,
        )


def tshark_count(path: Path, display_filter: str | None = None) -> int:
    cmd = ["tshark", "-n", "-r", str(path), *(["-Y", display_filter] if display_filter else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)
    return len([line for line in proc.stdout.splitlines() if line.strip()])


def echo_requests(records: list[dict[str, Any]], src: str) -> list[dict[str, Any]]:
    return [
        r
        for r in records
        if r["kind"] == "mirror" and r["src"] == src and r["info"].startswith("echo-request")
        if r["len"] - (4 if r["vlan"] is not None else 0) == ECHO_LEN
    ]


def _denied_probe_seen(lab: Lab) -> Callable[[list[dict[str, Any]]], bool]:
    """Send a denied SYN to db1:7777 until the watcher shows one: then it is surely reading."""

    def seen(records: list[dict[str, Any]]) -> bool:
        fa.tcp_probes(lab.name, [("app1", DB1, 7777)], timeout=0.2)
        return any(r.get("dport") == 7777 for r in records)

    return seen


def _has(records: list[dict[str, Any]], **want: Any) -> bool:
    return any(want.items() <= r.items() for r in records)


# -- verdicts ------------------------------------------------------------------------------------
def test_json_denied_shows_denials_with_their_rule_ids(reference_lab: Lab) -> None:
    lab = reference_lab
    default_deny = {"vm": "app1", "nic": "app1.eth1", "direction": "out", "rule": "default", "dport": 22}
    rule_65 = {"vm": "db1", "nic": "db1.eth0", "direction": "in", "rule": 65, "src": APP2_DB, "dport": PG}
    with fa.live_rules(lab.name, DENY_APP2), probe.listening(lab.ns("db1"), [(DB1, PG)]):
        w = Streaming(["--lab", lab.name, "--json", "--denied", "--duration", "40"])
        try:
            w.wait_for(_denied_probe_seen(lab), 15)
            got = fa.tcp_probes(lab.name, [("app1", DB1, 22), ("app2", DB1, PG), ("app1", DB1, PG)], 0.5)
            records = w.wait_for(lambda rs: _has(rs, **default_deny) and _has(rs, **rule_65), 8)
        finally:
            rc, err = w.stop()
    assert got == {("app1", DB1, 22): "timeout", ("app2", DB1, PG): "timeout", ("app1", DB1, PG): "open"}
    assert rc == 0 and "Traceback" not in err, err
    assert all(set(r) == VERDICT_FIELDS and r["kind"] == "verdict" for r in records), records[:3]
    assert {r["verdict"] for r in records} == {"deny"}, "--denied printed allowed flows"
    assert all(r["reason"] == "policy" for r in records if r["dport"] in (22, PG)), records
    assert "lost: 0 firewall events" in err, err


def test_allowed_new_flows_show_their_rule_and_vm_filter_holds(reference_lab: Lab) -> None:
    lab = reference_lab
    with probe.listening(lab.ns("db1"), [(DB1, PG)]):
        w = Streaming(["--lab", lab.name, "--json", "app1", "db1", "--duration", "40"])
        try:
            w.wait_for(_denied_probe_seen(lab), 15)
            ping(lab.ns("web2"), WEB1, 2)  # web VMs are not watched: nothing of it may show
            assert fa.tcp_probes(lab.name, [("app1", DB1, PG)], 0.5) == {("app1", DB1, PG): "open"}
            want = (
                {"vm": "app1", "rule": 21, "direction": "out"},
                {"vm": "db1", "rule": 30, "direction": "in"},
            )
            records = w.wait_for(lambda rs: all(_has(rs, verdict="allow", dport=PG, **x) for x in want), 8)
        finally:
            w.stop()
    verdicts = [r for r in records if r["kind"] == "verdict"]
    assert {r["vm"] for r in verdicts} <= {"app1", "db1"}, verdicts
    assert all(r["reason"] == "new-flow" for r in verdicts if r["verdict"] == "allow"), verdicts
    # copies only of sessions that mirror a watched VM (the reference lab's app1-wire mirrors app1)
    assert {r["session"] for r in records if r["kind"] == "mirror"} <= {"app1-wire"}, records


# -- mirrored copies -----------------------------------------------------------------------------
@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed")
def test_mirror_lines_and_pcap_through_the_cli(reference_lab: Lab, tmp_path: Path) -> None:
    lab, pcap = reference_lab, tmp_path / "web1.pcap"
    tap = Tap("web1-in", lab.ns("web1"), "eth0", ("web1",), False)
    w = Streaming(
        ["--lab", lab.name, "--mirror", "web1-in", "--json", "--pcap", str(pcap), "--duration", "40"], [tap]
    )
    try:

        def warm(records: list[dict[str, Any]]) -> bool:
            ping(lab.ns("web2"), WEB1, 1, size=120)
            return any(r["kind"] == "mirror" for r in records)

        w.wait_for(warm, 15)
        ping(lab.ns("web2"), WEB1, PINGS)
        w.wait_for(lambda rs: len(echo_requests(rs, "10.20.0.12")) >= PINGS, 8)
        time.sleep(0.3)  # anything after the pings (there should be nothing) shows as well
    finally:
        rc, err = w.stop()
    records = w.records()
    counted = echo_requests(records, "10.20.0.12")
    assert rc == 0 and "Traceback" not in err, err
    assert {r["kind"] for r in records} == {"mirror"}, "--mirror without VMs must show no verdicts"
    assert len(counted) == PINGS and {(r["session"], r["direction"]) for r in counted} == {("web1-in", "in")}
    assert tshark_count(pcap) == len(records), "the pcap holds exactly the mirrored lines"
    assert tshark_count(pcap, f"icmp.type == 8 && frame.len == {ECHO_LEN}") == PINGS
    assert "lost: 0 firewall events, 0 mirrored copies" in err, err


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed")
def test_trunk_capture_puts_the_vlan_tags_back(reference_lab: Lab, tmp_path: Path) -> None:
    lab, path = reference_lab, tmp_path / "trunk.pcap"
    tap = Tap("trunk", lab.ns("hv2"), "eth1", ("app1",), False)
    with (
        running.opened(lab.name) as live,
        open(path, "wb") as out,
        watch.Watch(live, [tap], watch.Filter(mirror="trunk"), PcapWriter(out)) as w,
    ):
        sender = threading.Thread(target=ping, args=(lab.ns("app1"), APP2_APP, 3))
        sender.start()
        records = []
        for r in w.stream(duration=6):
            records.append(r)
            if len([x for x in records if x["info"].startswith("echo-reply")]) == 3:
                break
        sender.join()
    replies = [r for r in records if r["info"].startswith("echo-reply")]
    assert len(replies) == 3, records
    assert {(r["vlan"], r["direction"], r["src"], r["len"]) for r in replies} == {(120, "in", APP2_APP, 102)}
    assert tshark_count(path, "vlan.id == 120 && icmp.type == 0") == 3


# -- losses --------------------------------------------------------------------------------------
def test_capture_drops_are_reported_never_silent(reference_lab: Lab) -> None:
    lab = reference_lab
    tap = Tap("small", lab.ns("web1"), "eth0", ("web1",), False)
    with (
        running.opened(lab.name) as live,
        watch.Watch(live, [tap], watch.Filter(mirror="small"), rcvbuf=1) as w,
    ):
        ping(lab.ns("web2"), WEB1, 300, flood=True)  # while nobody reads the tiny socket buffer
        records = list(w.stream(duration=1.5))
        dropped = w.stats.copies_dropped
    lost = [r for r in records if r["kind"] == "lost"]
    seen = len(echo_requests(records, "10.20.0.12"))
    assert lost and {r["source"] for r in lost} == {"capture"} and sum(r["count"] for r in lost) == dropped
    assert dropped > 0 and seen < 300 and seen + dropped >= 300, (seen, dropped)


def test_firewall_event_losses_are_reported_never_silent(reference_lab: Lab) -> None:
    lab = reference_lab
    doc = fa.status_doc(lab.name)
    app1, db1 = va.nic(doc, "app1", "eth1"), va.nic(doc, "db1")
    syn = bytearray(
        bytes(Ether(src=app1.mac, dst=db1.mac) / IP(src=APP1_DB, dst=DB1) / TCP(dport=22, flags="S"))
    )
    frames = []
    for i in range(6000):  # denied by app1's default policy: one event each; the buffer holds ~3600
        syn[34:36] = (20000 + i).to_bytes(2, "big")
        frames.append(bytes(syn))
    with (
        running.opened(lab.name) as live,
        watch.Watch(live, [], watch.Filter(frozenset({"app1"}), denied=True), queue=1000) as w,
    ):
        for i in range(0, len(frames), 500):  # before the first read: its queue at the hub overflows
            va.inject(lab.ns("app1"), "eth1", frames[i : i + 500])
            time.sleep(0.01)  # pauses keep the veth backlog (1000) from dropping frames before TC
        records = list(w.stream(duration=3))
        lost_total = w.stats.events_lost
    lost = [r for r in records if r["kind"] == "lost"]
    denied = [r for r in records if r["kind"] == "verdict" and r["dport"] == 22 and r["sport"] >= 20000]
    assert lost and {(r["source"], r["where"]) for r in lost} == {("firewall", "subscriber queue")}, lost
    assert lost_total > 0 and sum(r["count"] for r in lost) == lost_total
    assert len(denied) + lost_total >= 6000, (len(denied), lost_total)


# -- bad input -----------------------------------------------------------------------------------
def test_bad_input_on_a_running_lab_exits_2_and_leaves_nothing(reference_lab: Lab, tmp_path: Path) -> None:
    lab, pcap, nowhere = reference_lab, tmp_path / "never.pcap", tmp_path / "no" / "dir.pcap"
    tap = Tap("web1-in", lab.ns("web1"), "eth0", ("web1",), False)
    cases = {
        "vm": (["nosuch"], None, "nlab watch: vm: no VM nosuch in lab"),
        "session": (["--mirror", "nosuch", "--pcap", str(pcap)], [tap], "nlab watch: mirror: no mirror"),
        "pcap": (["--pcap", str(nowhere)], [tap], f"nlab watch: --pcap {nowhere}: cannot write"),
    }  # fmt: skip
    for what, (args, taps, message) in cases.items():
        w = Streaming(["--lab", lab.name, "--duration", "5", *args], taps)
        w.proc.wait(30)
        rc, err = w.stop()
        assert (rc, w.lines) == (2, []), f"{what}: {rc} {err}"
        assert err.startswith(message) and len(err.strip().splitlines()) == 1, f"{what}: {err}"
    assert not pcap.exists(), "a refused watch must not leave a pcap behind"


# -- end to end with a real mirror session ---------------------------------------------------------
@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed")
def test_mirror_session_web1_to_analyzer_end_to_end(reference_lab: Lab, tmp_path: Path) -> None:
    """N pings from web1, session web1 -> analyzer both ways: 2N mirror lines, a pcap of 2N."""
    lab, pcap = reference_lab, tmp_path / "session.pcap"
    existing = [
        t for t in mirror_live.taps(lab.name) if "web1" in t.sources and t.ifname.startswith("analyzer-")
    ]
    session, added = (existing[0].session, False) if existing else ("wtest", True)
    if added:
        args = ("mirror", "--lab", lab.name, "add", session, "--source", "web1", "--direction", "both")
        _nlab(*args, "--dest", "analyzer")  # the reference lab should have one
    try:
        w = Streaming(
            ["--lab", lab.name, "--mirror", session, "--json", "--pcap", str(pcap), "--duration", "40"]
        )
        try:

            def warm(records: list[dict[str, Any]]) -> bool:
                ping(lab.ns("web1"), "10.20.0.12", 1, size=120)
                return any(r["kind"] == "mirror" for r in records)

            w.wait_for(warm, 15)
            start = len(w.records())
            ping(lab.ns("web1"), "10.20.0.12", PINGS)
            w.wait_for(lambda rs: len(_echoes(rs[start:])) >= 2 * PINGS, 8)
            time.sleep(0.3)
        finally:
            w.stop()
        echoes = _echoes(w.records()[start:])
        assert len(echoes) == 2 * PINGS, echoes
        assert {r["direction"] for r in echoes} == {"in", "out"}
        filt = f"icmp && (frame.len == {ECHO_LEN} || frame.len == {ECHO_LEN + 4})"
        assert tshark_count(pcap, filt) == 2 * PINGS
    finally:
        if added:
            _nlab("mirror", "--lab", lab.name, "del", session)


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed")
def test_sessions_sharing_an_analyzer_each_show_only_their_own_copies(
    reference_lab: Lab, tmp_path: Path
) -> None:
    """web1-ids (web1, both ways) and web2-out (web2, out) copy to the same analyzer port.

    web1 pings web2 3 times, web2 pings web1 twice: web2-out copies what web2 sent (3 replies,
    2 requests, all `out`); web1-ids what web1 sent and got (5 `out`, 5 `in`). Each watch with
    --mirror shows exactly its session's copies with their direction, and its pcap holds them."""
    lab = reference_lab
    pcaps = {name: tmp_path / f"{name}.pcap" for name in ("web1-ids", "web2-out")}
    _nlab(
        "mirror",
        "--lab",
        lab.name,
        "add",
        "web2-out",
        "--source",
        "web2",
        "--direction",
        "out",
        "--dest",
        "analyzer",
    )
    try:
        watches = {
            name: Streaming(
                ["--lab", lab.name, "--mirror", name, "--json", "--pcap", str(pcap), "--duration", "40"]
            )
            for name, pcap in pcaps.items()
        }
        try:
            for w in watches.values():

                def warm(records: list[dict[str, Any]]) -> bool:
                    ping(lab.ns("web1"), "10.20.0.12", 1, size=120)
                    return any(r["kind"] == "mirror" for r in records)

                w.wait_for(warm, 15)
            start = {name: len(w.records()) for name, w in watches.items()}
            ping(lab.ns("web1"), "10.20.0.12", 3)
            ping(lab.ns("web2"), WEB1, 2)
            for name, want in (("web1-ids", 10), ("web2-out", 5)):
                watches[name].wait_for(lambda rs, n=name, k=want: len(_echoes(rs[start[n] :])) >= k, 8)
            time.sleep(0.3)  # a copy of the other session would show here (there must be none)
        finally:
            stopped = {name: w.stop() for name, w in watches.items()}
    finally:
        _nlab("mirror", "--lab", lab.name, "del", "web2-out")
    assert all(
        rc == 0 and "lost: 0 firewall events, 0 mirrored copies" in err for rc, err in stopped.values()
    )
    seen = {name: _echoes(w.records()[start[name] :]) for name, w in watches.items()}
    assert {(r["session"], r["direction"], r["src"]) for r in seen["web2-out"]} == {
        ("web2-out", "out", "10.20.0.12")
    }
    assert sorted(r["info"].split()[0] for r in seen["web2-out"]) == ["echo-reply"] * 3 + ["echo-request"] * 2
    by_direction = Counter((r["session"], r["direction"]) for r in seen["web1-ids"])
    assert by_direction == {("web1-ids", "out"): 5, ("web1-ids", "in"): 5}
    for name, w in watches.items():
        assert {r["session"] for r in w.records()} == {name}, "another session's copy was shown"
        assert tshark_count(pcaps[name]) == len(w.records()), "the pcap holds exactly the lines"
        assert tshark_count(pcaps[name], f"icmp && frame.len == {ECHO_LEN}") == len(seen[name])


def test_encapsulated_copies_are_named_by_their_trailer(reference_lab: Lab) -> None:
    """app1-wire copies app1 to the IDS on the physical network `monitor`, encapsulated across
    tor2: the watch there shows each echo once, named and directed by the copy's trailer."""
    lab = reference_lab
    w = Streaming(["--lab", lab.name, "--mirror", "app1-wire", "--json", "--duration", "40"])
    try:

        def warm(records: list[dict[str, Any]]) -> bool:
            ping(lab.ns("app1"), APP2_APP, 1, size=120)
            return any(r["kind"] == "mirror" for r in records)

        w.wait_for(warm, 15)
        start = len(w.records())
        ping(lab.ns("app1"), APP2_APP, PINGS)
        w.wait_for(lambda rs: len(_echoes(rs[start:])) >= 2 * PINGS, 8)
    finally:
        rc, err = w.stop()
    echoes = _echoes(w.records()[start:])
    assert rc == 0 and "lost: 0 firewall events, 0 mirrored copies" in err, err
    assert Counter((r["session"], r["direction"], r["info"].split()[0]) for r in echoes) == {
        ("app1-wire", "out", "echo-request"): PINGS,
        ("app1-wire", "in", "echo-reply"): PINGS,
    }


def _echoes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r
        for r in records
        if r["kind"] == "mirror" and r["info"].startswith(("echo-request", "echo-reply"))
        if r["len"] - (4 if r["vlan"] is not None else 0) == ECHO_LEN
    ]


def _nlab(*args: str) -> None:
    from tests.lab.conftest import nlab

    nlab(*args, check=True)


def test_count_stops_after_exactly_n_lines(reference_lab: Lab) -> None:
    lab = reference_lab
    w = Streaming(["--lab", lab.name, "--json", "app1", "--count", "3", "--duration", "30"])
    deadline = time.monotonic() + 20
    while w.proc.poll() is None and time.monotonic() < deadline:
        fa.tcp_probes(lab.name, [("app1", DB1, 7777)], timeout=0.2)
    rc, err = w.stop()
    records = w.records()
    mine = all(  # app1's verdicts, or copies of its own chatter (app1-wire mirrors app1.eth0)
        (r["kind"] == "verdict" and r["vm"] == "app1")
        or (r["kind"] == "mirror" and r["session"] == "app1-wire")
        for r in records
    )
    assert rc == 0 and len(records) == 3 and mine, (rc, err, records)
    assert "3 lines in" in err, err
