"""Several observers of one lab's verdict events at once, through the lab's event hub.

    app1 eth1 ──N denied SYNs (sport 20000+i, dport 22: app1's default policy)──> [hv2: port_from_vm]
                                                                        │ ring buffer fw_events
                                                          event hub (one reader, in hv2... hv1)
                               ┌──────────────────┬──────────────────────┼─────────────────────┐
                      nlab watch --denied   nlab fw events ×2     a slow subscriber (queue 8)

Every observer must get all N, or say exactly how many it missed: a reader that shares the ring
buffer with another silently gets a part. app1's IPv6 is off in this module's lab, so the only
app1 denials in a window are the ones the test sends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from netns_lab.kernel import netlink, netns
from netns_lab.lab import fanout
from netns_lab.observe import subscription
from tests.lab import fw_attacks as fa
from tests.lab import vlan_attacks as va
from tests.lab.conftest import REPO, Lab, cmdline, nlab
from tests.lab.test_watch import DB1, Streaming

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lab tests need root (namespaces, eBPF)")

APP1_DB, FIRST_PORT = "10.40.0.21", 20000


@pytest.fixture(scope="module")
def lab(reference_lab: Lab) -> Lab:
    for key in ("all", "default"):  # no router solicitations or MLD reports of app1's own
        netlink.sysctl(reference_lab.ns("app1"), f"net.ipv6.conf.{key}.disable_ipv6", "1")
    return reference_lab


def syns(lab: Lab, n: int, first: int) -> list[bytes]:
    """n denied SYNs app1 -> db1:22, each its own flow (no aggregation), sport first..first+n-1."""
    doc = fa.status_doc(lab.name)
    app1, db1 = va.nic(doc, "app1", "eth1"), va.nic(doc, "db1")
    syn = bytearray(
        bytes(Ether(src=app1.mac, dst=db1.mac) / IP(src=APP1_DB, dst=DB1) / TCP(dport=22, flags="S"))
    )
    frames = []
    for i in range(n):
        syn[34:36] = (first + i).to_bytes(2, "big")
        frames.append(bytes(syn))
    return frames


def send(lab: Lab, frames: list[bytes]) -> None:
    for i in range(0, len(frames), 200):  # pauses keep the veth backlog (1000) from dropping frames
        va.inject(lab.ns("app1"), "eth1", frames[i : i + 200])
        time.sleep(0.01)


def ours(records: list[dict[str, Any]], first: int, n: int) -> list[int]:
    """Source ports of the test's denials among `records` (each counted as often as it stands for)."""
    return [
        r["sport"]
        for r in records
        if r.get("kind", "verdict") == "verdict"
        and r["dport"] == 22
        and first <= (r["sport"] or 0) < first + n
        for _ in range(r["count"])
    ]


def warm(lab: Lab, *observers: Any) -> None:
    """Denied probes until every observer shows one: then all of them are subscribed."""

    def seen(records: list[dict[str, Any]]) -> bool:
        fa.tcp_probes(lab.name, [("app1", DB1, 7777)], timeout=0.2)
        return any(r.get("dport") == 7777 for r in records)

    for o in observers:
        o.wait_for(seen, 15)


def test_watch_and_two_fw_events_each_get_every_denial(lab: Lab) -> None:
    n = 300
    watch = Streaming(["--lab", lab.name, "--json", "--denied", "app1", "--duration", "60"])
    events = [fa.Follower(lab.name, 60), fa.Follower(lab.name, 60)]
    try:
        warm(lab, watch, *events)
        send(lab, syns(lab, n, FIRST_PORT))
        for o in (watch, *events):
            o.wait_for(lambda rs: len(ours(rs, FIRST_PORT, n)) >= n, 20)
    finally:
        rc, watch_err = watch.stop()  # stopping reads what is left: a duplicate would show
        errs = [e.stop() for e in events]
    got = [
        sorted(ours(records, FIRST_PORT, n)) for records in (watch.records(), *(e.events() for e in events))
    ]
    assert got == [list(range(FIRST_PORT, FIRST_PORT + n))] * 3, "each observer gets every denial once"
    assert rc == 0 and "lost: 0 firewall events" in watch_err, watch_err
    assert all("lost" not in err and "Traceback" not in err for err in errs), errs


def test_a_slow_subscriber_reports_exactly_what_it_lost_and_nobody_else_loses(lab: Lab) -> None:
    n, first = 2000, FIRST_PORT + 1000
    watch = Streaming(["--lab", lab.name, "--json", "--denied", "app1", "--duration", "60"])
    events = fa.Follower(lab.name, 60)
    try:
        warm(lab, watch, events)
        with subscription.Subscription(
            lab.name, fanout.Filter(frozenset({"app1"}), denied=True), queue=8
        ) as slow:
            send(lab, syns(lab, n, first))  # the slow one reads nothing meanwhile
            for o in (watch, events):
                o.wait_for(lambda rs: len(ours(rs, first, n)) >= n, 30)
            records = slow.sync()  # now it reads everything the hub kept for it, and its losses
            received, lost = ours(records, first, n), slow.lost
            others = [r for r in records if r["kind"] == "verdict" and r["dport"] != 22]
    finally:
        rc, watch_err = watch.stop()
        err = events.stop()
    assert others == []
    assert 0 < lost < n and len(received) + lost == n, (len(received), lost)
    assert len(set(received)) == len(received), "nothing twice"
    losses = [r for r in records if r["kind"] == "lost"]
    assert {(r["source"], r["where"]) for r in losses} == {("firewall", "subscriber queue")}
    assert losses[-1]["total"] == lost
    assert (
        sorted(ours(watch.records(), first, n))
        == sorted(ours(events.events(), first, n))
        == list(range(first, first + n))
    )
    assert rc == 0 and "lost: 0 firewall events" in watch_err, watch_err
    assert "lost" not in err and "Traceback" not in err, err


def test_kernel_losses_reach_every_subscriber_present_exactly(lab: Lab) -> None:
    """The hub paused (SIGSTOP) while 6000 denials come: the ring buffer (~3600 records) overflows.
    Both subscribers hear of every lost event: what each got plus what it was told it lost is
    exactly what was sent."""
    n, first = 6000, FIRST_PORT + 5000
    flt = fanout.Filter(frozenset({"app1"}), denied=True)
    (hub,) = [
        p for p in netns.pids_in({netns.inode(lab.ns("hv1"))}) if "netns_lab.lab.eventhub" in cmdline(p)
    ]
    with subscription.Subscription(lab.name, flt) as a, subscription.Subscription(lab.name, flt) as b:
        os.kill(hub, signal.SIGSTOP)
        try:
            send(lab, syns(lab, n, first))
        finally:
            os.kill(hub, signal.SIGCONT)
        got = {name: s.sync(30) for name, s in (("a", a), ("b", b))}
        lost = {"a": a.lost, "b": b.lost}
    for name, records in got.items():
        received = ours(records, first, n)
        assert len(set(received)) == len(received) and lost[name] > 0, name
        assert len(received) + lost[name] == n, (name, len(received), lost[name])
        assert {(r["source"], r["where"]) for r in records if r["kind"] == "lost"} == {
            ("firewall", "ring buffer")
        }
        assert [r for r in records if r["kind"] == "verdict" and r["dport"] != 22] == []
    assert lost["a"] == lost["b"] and ours(got["a"], first, n) == ours(got["b"], first, n)
    # a reader that comes after the losses lost nothing, though the kernel's count since the lab
    # came up is not 0
    later = nlab("fw", "--lab", lab.name, "events", "--json", "--timeout", "1", check=True)
    assert "lost" not in later.stderr, later.stderr
    counters = json.loads(nlab("fw", "--lab", lab.name, "counters", "--json", check=True).stdout)
    assert counters["events_lost"] >= lost["a"]


def test_fw_events_count_stops_after_n_readable_lines(lab: Lab) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "netns_lab", "fw", "--lab", lab.name, "events", "--denied", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    deadline, sport = time.monotonic() + 30, FIRST_PORT + 20000
    while proc.poll() is None and time.monotonic() < deadline:
        send(lab, syns(lab, 1, sport))  # each its own flow: none is aggregated
        sport += 1
        time.sleep(0.2)
    out, err = proc.communicate(timeout=10)
    lines = out.splitlines()
    assert proc.returncode == 0 and len(lines) == 2 and err == "", (proc.returncode, out, err)
    assert all(
        " DENY  app1.eth1 " in x and "10.40.0.21:" in x and "policy (default policy)" in x for x in lines
    ), lines
