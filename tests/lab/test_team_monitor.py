"""The team monitor (netns_lab.features.team.monitor) on real namespaces, with a flip callable
standing in for the dataplane: carrier loss, a silent failure only beacons see, heal and failback,
the FDB flush and the announcements on the new path, a restart that does not flip.

      <p>h (host)                   <p>a (switch A)                <p>u (upstream)
      vs1 ── m0 ═══════════════════ hA ── br ── upA ══════════════ uA ── br
      (m0 enslaved, active)                                              │
             m1 ═══════════════════ hB ── br ── upB ══════════════ uB ───┘
      (standby, left out of vs1:    <p>b (switch B)
       no eBPF team here to keep
       the two paths from looping)

Each test builds its own namespaces under a fresh random prefix `<p>` (zztm + 6 hex digits),
with IPv6 off so that nothing but the test's frames and the monitor's beacons crosses, and deletes
them in a `finally`. Waiting is for events in the monitor's file or for kernel state, never a sleep.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from netns_lab.features.team import frames
from netns_lab.features.team.monitor import KernelActions, Monitor
from netns_lab.features.team.plan import TeamPlan
from netns_lab.kernel import netns, nft
from netns_lab.kernel.linkwatch import LinkWatch
from netns_lab.kernel.netlink import Netlink, sysctl
from netns_lab.kernel.packet import ETH_P_ALL, packet_socket
from netns_lab.topology.model import Team

VM_MAC = "02:00:5e:00:53:0a"
REMOTE_MAC = "02:00:5e:00:53:0b"  # a station behind the upstream switch, learned by vs1 on m0
ANNOUNCE = 3
MISS = 3
TEAM = Team(detection=("link", "beacon"), beacon_interval_ms=100, beacon_miss=MISS, announce=ANNOUNCE)
PLAN = TeamPlan("h", "vs1", ("m0", "m1"), TEAM, macs=((VM_MAC, None),))
BARRIER = 0x88B6
WAIT = 20.0  # seconds before a missing event is a failure (never reached when things work)


@dataclass
class Net:
    prefix: str
    tmp: Path
    flips: list[tuple[str, str]] = field(default_factory=list)
    current: dict[str, str] = field(default_factory=dict)

    def ns(self, node: str) -> str:
        return f"{self.prefix}{node}"

    @property
    def events(self) -> Path:
        return self.tmp / "team.events"

    def flip(self, team: str, member: str) -> None:
        self.flips.append((team, member))
        self.current[team] = member

    def actions(self) -> KernelActions:
        return KernelActions(self.ns("h"), self.flip, self.current.get)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net("zztm" + secrets.token_hex(3), tmp_path)
    made: list[str] = []
    try:
        for node in ("h", "a", "b", "u"):
            netns.create(n.ns(node))
            made.append(n.ns(node))
            for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
                sysctl(n.ns(node), key, "1")
        _build(n)
        yield n
    finally:
        for name in reversed(made):
            netns.delete(name)


def _build(n: Net) -> None:
    with Netlink(n.ns("h")) as h, Netlink(n.ns("u")) as u:
        h.bridge("vs1")
        u.bridge("br")
        for member, side in (("m0", "a"), ("m1", "b")):
            with Netlink(n.ns(side)) as sw:
                sw.bridge("br")
                h.veth(member, f"h{side.upper()}", sw.ns, master="vs1" if member == "m0" else None, up=True)
                sw.veth(f"up{side.upper()}", f"u{side.upper()}", u.ns, master="br", up=True)
                sw.enslave(f"h{side.upper()}", "br")
                sw.up(f"h{side.upper()}")
                u.enslave(f"u{side.upper()}", "br")
                u.up(f"u{side.upper()}")


@contextlib.contextmanager
def monitoring(n: Net, state: Path | None = None) -> Iterator[Monitor]:
    mon = Monitor("zz", n.ns("h"), [PLAN], n.actions(), n.events, state)
    stop = threading.Event()
    thread = threading.Thread(target=mon.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield mon
    finally:
        stop.set()
        thread.join(5)
        mon.close()


def events(n: Net) -> list[dict[str, Any]]:
    if not n.events.exists():
        return []
    return [json.loads(line) for line in n.events.read_text().splitlines()]


def wait_for(what: str, found: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"no {what} within {WAIT} s")


def wait_event(n: Net, **match: Any) -> dict[str, Any]:
    def hit() -> dict[str, Any] | None:
        return next((e for e in events(n) if all(e.get(k) == v for k, v in match.items())), None)

    try:
        return wait_for(f"event {match}", hit)
    except AssertionError as err:  # say what the monitor did instead
        raise AssertionError(f"{err}; events: {json.dumps(events(n), indent=1)}") from None


def beacons_flowing(mon: Monitor, count: int = MISS + 2) -> None:
    team = mon.teams[PLAN.name]
    wait_for("beacons on both members", lambda: min(team.own_rx.values()) >= count)


def set_link(ns: str, name: str, up: bool) -> None:
    with Netlink(ns) as nl:
        (nl.up if up else nl.down)(name)


def fdb_ports(ns: str, bridge: str, mac: str) -> list[str]:
    with netns.inside(ns):
        out = subprocess.run(["bridge", "-j", "fdb", "show", "br", bridge], capture_output=True, text=True)
    return [e["ifname"] for e in json.loads(out.stdout or "[]") if e.get("mac") == mac]


def learn_remote(n: Net) -> None:
    """A frame from REMOTE_MAC, sent from the upstream switch, reaches vs1 through m0 (sent again
    until it does: bridge ports start forwarding once the kernel's link watch has run)."""
    frame = b"\xff" * 6 + frames.mac_bytes(REMOTE_MAC) + BARRIER.to_bytes(2, "big") + bytes(46)
    with packet_socket(n.ns("u"), "br", BARRIER) as sock:

        def learned() -> bool:
            sock.send(frame)
            return fdb_ports(n.ns("h"), "vs1", REMOTE_MAC) == ["m0"]

        wait_for("vs1 learning the remote MAC on m0", learned)


class Capture:
    """Every frame arriving at switch B from the host (port hB), until a barrier frame."""

    def __init__(self, n: Net) -> None:
        self.n = n
        self.sock = packet_socket(n.ns("b"), "hB", ETH_P_ALL)
        self.sock.settimeout(WAIT)

    def until_barrier(self) -> list[bytes]:
        token = secrets.token_bytes(8)
        with packet_socket(self.n.ns("h"), "m1", BARRIER) as out:
            out.send(b"\xff" * 6 + b"\x02" + bytes(5) + BARRIER.to_bytes(2, "big") + token + bytes(38))
        got = []
        while True:
            data = self.sock.recv(2048)  # arriving frames only: outgoing ones are ignored
            if data[12:14] == BARRIER.to_bytes(2, "big") and data[14:22] == token:
                return got
            got.append(data)

    def close(self) -> None:
        self.sock.close()


def rarps(captured: list[bytes]) -> int:
    return sum(frames.is_rarp_from(f, VM_MAC) for f in captured)


# -- carrier -------------------------------------------------------------------------------------
def test_carrier_loss_fails_over_flushes_announces_and_fails_back(net: Net) -> None:
    learn_remote(net)
    capture = Capture(net)
    try:
        with monitoring(net) as mon:
            wait_event(net, event="state")
            beacons_flowing(mon)
            before = capture.until_barrier()
            set_link(net.ns("a"), "hA", False)  # the peer end: m0 loses its carrier
            fo = wait_event(net, event="failover")
            after = capture.until_barrier()
            assert (fo["from"], fo["to"], fo["cause"], fo["team"]) == ("m0", "m1", "carrier", "h.vs1")
            assert net.flips == [("h.vs1", "m1")]
            assert fdb_ports(net.ns("h"), "vs1", REMOTE_MAC) == []  # what m0 taught vs1 is forgotten
            assert (rarps(before), rarps(after)) == (0, ANNOUNCE)  # exactly `announce`, on the new path
            set_link(net.ns("a"), "hA", True)
            back = wait_event(net, event="failback")
            assert (back["from"], back["to"], back["cause"]) == ("m1", "m0", "failback")
            assert net.flips == [("h.vs1", "m1"), ("h.vs1", "m0")]
    finally:
        capture.close()


def test_a_vm_migrated_in_is_announced_at_the_next_failover(net: Net) -> None:
    """A live change (a VM migrated onto the host) rewrites the lab's topology: the monitor reads
    the MACs behind the team again from it, so a failover announces the newcomer too."""
    moved = "02:00:5e:00:53:0c"
    topology = net.tmp / "topology.yaml"
    topology.write_text("before")
    plans = [PLAN]
    mon = Monitor(
        "zz", net.ns("h"), plans, net.actions(), net.events, topology=topology, replan=lambda: plans
    )
    stop = threading.Event()
    thread = threading.Thread(target=mon.run, args=(stop,), daemon=True)
    capture = Capture(net)
    try:
        thread.start()
        beacons_flowing(mon)
        plans = [TeamPlan("h", "vs1", ("m0", "m1"), TEAM, macs=((VM_MAC, None), (moved, None)))]
        topology.write_text("after")  # what RunningLab does when a migration is recorded
        wait_for("the monitor re-reading the team", lambda: len(mon.teams[PLAN.name].plan.macs) == 2)
        capture.until_barrier()
        set_link(net.ns("a"), "hA", False)
        wait_event(net, event="failover")
        after = capture.until_barrier()
        assert rarps(after) == ANNOUNCE  # the VM that was there all along: positive control
        assert sum(frames.is_rarp_from(f, moved) for f in after) == ANNOUNCE
    finally:
        stop.set()
        thread.join(5)
        mon.close()
        capture.close()


# -- silent failure ------------------------------------------------------------------------------
# Everything into and out of switch A's port to m0 (switch A's own frames too: its IGMP reports
# reaching m0 would rightly prove that m0 still receives), carrier untouched.
SILENT = """
table bridge teamfault {
    chain into { type filter hook prerouting priority 0; policy accept; iifname "hA" drop; }
    chain out { type filter hook postrouting priority 0; policy accept; oifname "hA" drop; }
}
"""


def test_silent_failure_is_seen_by_beacons_only_and_heals(net: Net) -> None:
    with monitoring(net) as mon:
        beacons_flowing(mon)
        assert [e for e in events(net) if e["event"] != "state"] == []  # positive control: all well
        team = mon.teams[PLAN.name]
        sent_before = team.seq
        nft.load(net.ns("a"), SILENT)
        fo = wait_event(net, event="failover")
        sent_after = team.seq
        assert (fo["from"], fo["to"], fo["cause"]) == ("m0", "m1", "beacon")
        member = [e for e in events(net) if e["event"] == "member" and e["member"] == "m0"]
        assert [(e["state"], e["cause"]) for e in member] == [("failed", "beacon")]
        watch = LinkWatch(net.ns("h"))
        try:
            assert watch.snapshot()["m0"].carrier  # link state alone sees nothing wrong
        finally:
            watch.close()
        # the beacons sent after the fault until its detection: beacon_miss, plus the one in
        # flight while the rule went in and the one of the grace period
        assert sent_after - sent_before <= MISS + 2
        nft.load(net.ns("a"), "delete table bridge teamfault")
        back = wait_event(net, event="failback")
        assert (back["from"], back["to"]) == ("m1", "m0")
        assert net.flips == [("h.vs1", "m1"), ("h.vs1", "m0")]


def test_a_silent_standby_path_is_blamed_while_the_active_member_receives(net: Net) -> None:
    stop = threading.Event()

    def traffic() -> None:  # a station upstream keeps talking: frames reach m0 (and would reach m1)
        with packet_socket(net.ns("u"), "br", BARRIER) as sock:
            frame = b"\xff" * 6 + frames.mac_bytes(REMOTE_MAC) + BARRIER.to_bytes(2, "big") + bytes(46)
            while not stop.wait(0.02):
                sock.send(frame)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        with monitoring(net) as mon:
            beacons_flowing(mon)
            nft.load(net.ns("b"), SILENT.replace('"hA"', '"hB"'))
            failed = wait_event(net, event="member", member="m1")
            assert (failed["state"], failed["cause"]) == ("failed", "beacon")
            team = mon.teams[PLAN.name]
            later = team.seq + 2 * MISS  # as many beacon rounds again as the detection took
            wait_for("more beacon rounds", lambda: team.seq >= later)
            # the team stayed: m0 kept receiving after the beacons stopped, so m1's path is blamed
            assert [e for e in events(net) if e["event"] == "failover"] == [] and net.flips == []
            assert mon.teams[PLAN.name].det.state() == {"m0": "active", "m1": "failed (beacon)"}
    finally:
        stop.set()
        sender.join(5)


# -- restart -------------------------------------------------------------------------------------
def test_a_restarted_monitor_keeps_the_active_member(net: Net) -> None:
    state = net.tmp / "team.json"
    with monitoring(net, state):
        set_link(net.ns("a"), "hA", False)
        wait_event(net, event="failover")
    set_link(net.ns("a"), "hA", True)
    net.current.clear()  # the dataplane cannot tell: the monitor's own state file says m1
    n_events = len(events(net))
    with monitoring(net, state) as mon:
        started = wait_for("a second state event", lambda: events(net)[n_events:])
        assert started[0]["active"] == "m1"
        beacons_flowing(mon)
        assert net.flips == [("h.vs1", "m1")]  # no flip at start; failback comes after the hold-down
        wait_event(net, event="failback")
