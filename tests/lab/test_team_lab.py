"""NIC teaming built by `nlab up` and driven by `nlab fail` / `nlab heal` (NIST 3): one host
dual-homed to two switches (tests/lab/team_pair.yaml), the switches cabled to each other by the
test, so that the standby member is all that keeps the physical loop open.

What the monitor decides is read from its events file (`team-hv1.events`) and from `nlab
status`, whose active member is read from the dataplane's team map. Waiting for an event polls
the file with a deadline: the event is the barrier, no assertion is on time.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dataplane.abi.reasons import Reason
from dataplane.switch import SwitchDataplane
from netns_lab.features.team import faults as team_faults
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab import running as live_lab
from netns_lab.lab.state import pin_dir, state_dir
from netns_lab.observe import watch
from tests.lab.conftest import Lab, nlab, running
from tests.lab.streams import GAP
from tests.lab.team_traffic import INTERVAL, TCP_PORT, UDP_PORT, End, MemberTaps, ends

TOPOLOGY = Path(__file__).with_name("team_pair.yaml")
PEER, VM_IP = "peer", "10.14.0.11"
TCP_BYTES = 2_000_000


def events(lab: Lab) -> list[dict[str, Any]]:
    path = state_dir(lab.name) / "team-hv1.events"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_event(
    lab: Lab, after: int, match: Callable[[dict[str, Any]], bool], timeout: float = 15
) -> dict[str, Any]:
    """The first event past the first `after` ones that `match`es."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(lab)[after:] if match(e)]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no such team event after #{after}: {events(lab)[after:]}")


def pair_status(lab: Lab) -> dict[str, Any]:
    """`nlab status --json` also while it exits 3 (an injected fault is a problem of the lab)."""
    proc = nlab("status", lab.name, "--json")
    assert proc.returncode in (0, 3), proc.stderr
    return json.loads(proc.stdout)


def team(lab: Lab) -> dict[str, Any]:
    (entry,) = pair_status(lab)["hosts"][0]["teams"]
    return entry


def active_member(lab: Lab) -> str:
    """hv1's active member, read from its dataplane's team map (what `nlab status` shows, faster)."""
    with SwitchDataplane.open(pin_dir(lab.name) / "hv1") as dp, Netlink(lab.ns("hv1")) as nl:
        state = dp.team.members()
        (active,) = [m for m in ("eth0", "eth1") if state[nl.index(m)]]
    return active


def ping_args(lab: Lab, count: int, interval: float) -> list[str]:
    return [
        "ip",
        "netns",
        "exec",
        lab.ns(PEER),
        "ping",
        "-n",
        "-c",
        str(count),
        "-i",
        str(interval),
        "-W",
        "1",
        VM_IP,
    ]


def ping(lab: Lab, count: int, interval: float = 0.2) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ping_args(lab, count, interval), capture_output=True, text=True, timeout=60)


def ping_stream(lab: Lab, count: int) -> subprocess.Popen[str]:
    """The peer pings the VM every 20 ms while a test goes on: traffic through the active member."""
    return subprocess.Popen(ping_args(lab, count, 0.02), stdout=subprocess.PIPE, text=True)


def received(proc: subprocess.CompletedProcess[str]) -> int:
    return sum(1 for line in proc.stdout.splitlines() if "bytes from" in line and "DUP!" not in line)


def fail(lab: Lab, *args: str) -> dict[str, Any]:
    return json.loads(nlab("fail", *args, "--lab", lab.name, "--json", check=True).stdout)


def heal(lab: Lab, *args: str) -> dict[str, Any]:
    return json.loads(nlab("heal", *args, "--lab", lab.name, "--json", check=True).stdout)


def wait_beacons_flow(lab: Lab, timeout: float = 15) -> None:
    """Both members have received a few of each other's beacons since now (the dataplane's beacon
    counters), and neither is failed in the monitor's latest word on it."""
    with SwitchDataplane.open(pin_dir(lab.name) / "hv1") as dp, Netlink(lab.ns("hv1")) as nl:
        members = [nl.index("eth0"), nl.index("eth1")]

        def received_beacons() -> list[int]:
            counts = dp.team.counters(members)
            return [counts[i].beacons_rx for i in members]

        start = received_beacons()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = {e["member"]: e["state"] for e in events(lab) if e.get("event") == "member"}
            flowing = all(now >= then + 3 for now, then in zip(received_beacons(), start, strict=True))
            if flowing and all(state == "ok" for state in latest.values()):
                return
            time.sleep(0.05)
    raise AssertionError(f"beacons do not flow between hv1's members: {events(lab)}")


@pytest.fixture(scope="module")
def pair() -> Iterator[Lab]:
    with running(TOPOLOGY) as lab:
        wait_beacons_flow(lab)  # the barrier of every test: the members hear each other
        yield lab


def test_the_team_is_built_active_standby_and_keeps_the_loop_open(pair: Lab) -> None:
    entry = team(pair)
    assert entry == {
        "vswitch": "vs1",
        "members": ["eth0", "eth1"],
        "active": "eth0",
        "policy": "active-standby",
        "failback": True,
        "detection": ["link", "beacon"],
        "beacon_interval": "100ms",
        "last_failover": None,
    }
    # the peer's ARP broadcast reaches hv1 through both switches: delivered once, answered once
    proc = ping(pair, 5)
    assert received(proc) == 5, proc.stdout
    assert "DUP!" not in proc.stdout
    with SwitchDataplane.open(pin_dir(pair.name) / "hv1") as dp, Netlink(pair.ns("hv1")) as nl:
        assert dp.team.members() == {nl.index("eth0"): True, nl.index("eth1"): False}


def test_other_hosts_beacons_end_at_an_uplink_in_no_team(pair: Lab) -> None:
    """tor1 floods hv1's beacons to hv2 too: its uplink (no team) ends them, so they never reach
    vm2's port, where they would be dropped as frames the firewall does not pass. Positive
    control in the same counters: hv2's uplink has received them."""
    wait_beacons_flow(pair)
    with SwitchDataplane.open(pin_dir(pair.name) / "hv2") as dp, Netlink(pair.ns("hv2")) as nl:
        uplink = nl.index("eth0")
        assert dp.team.counters([uplink])[uplink].beacons_rx >= 3
        assert dp.team.members() == {}
    hv2 = next(h for h in pair_status(pair)["hosts"] if h["name"] == "hv2")
    drops = {(port["name"], d["reason"]): d["packets"] for port in hv2["ports"] for d in port["drops"]}
    assert not [k for k in drops if k[1] == Reason.UNSUPPORTED.label], drops


def test_a_carrier_failover_keeps_the_streams_and_is_one_watch_event(pair: Lab) -> None:
    """vm2 (hv2, behind tor1) sends vm1 a numbered UDP stream and a TCP transfer while hv1.eth0's
    cable goes down: the TCP transfer completes intact, the UDP stream goes on through eth1 with
    a gap and no duplicate, every datagram vm1 got arrived through a member (taps on both), and
    a watch of the lab's team events sees exactly one move, eth0 -> eth1 (carrier), then one
    failback after the heal. `nlab teams` and `nlab status` show the move while it holds."""
    with (
        live_lab.opened(pair.name) as live,
        watch.Watch(live, [], watch.Filter(team="")) as w,  # subscribed once it is made
        MemberTaps.on(pair.ns("hv1"), ["eth0", "eth1"]) as taps,
    ):
        udp_r, tcp_r = (
            End(pair.ns("vm1"), "udp-recv", str(UDP_PORT)),
            End(pair.ns("vm1"), "tcp-recv", str(TCP_PORT)),
        )
        with ends(udp_r, tcp_r):
            udp_r.expect("ready")
            tcp_r.expect("ready")
            udp_s = End(pair.ns("vm2"), "udp-send", VM_IP, str(UDP_PORT), str(INTERVAL))
            tcp_s = End(pair.ns("vm2"), "tcp-send", VM_IP, str(TCP_PORT), str(TCP_BYTES), "3")
            with ends(udp_s, tcp_s):
                udp_r.expect("first")
                failed = fail(pair, "hv1.eth0")["failed"]
                assert (failed["mode"], failed["switch"], failed["port"]) == ("carrier", "tor1", "hv1-eth0")
                seen = until(w, lambda r: r["kind"] == "team")
                teams = json.loads(nlab("teams", "--lab", pair.name, "--json", check=True).stdout)
                human = nlab("status", pair.name).stdout
                sent, got = tcp_s.result(), tcp_r.result()
                udp_sent, udp = udp_s.result(), udp_r.result()
        taps.drain()
        heal(pair, "hv1.eth0")
        seen += until(w, lambda r: r["kind"] == "team")
    moves = [r for r in seen if r["kind"] == "team"]
    assert [(r["event"], r["from"], r["to"], r["cause"]) for r in moves] == [
        ("failover", "eth0", "eth1", "carrier"),
        ("failback", "eth1", "eth0", "failback"),
    ]
    assert all((r["lab"], r["host"], r["team"]) == (pair.name, "hv1", "hv1.vs1") for r in moves)
    members = [(r["member"], r["state"], r["cause"]) for r in seen if r["kind"] == "team-member"]
    assert members == [("eth0", "failed", "carrier"), ("eth0", "ok", None)]
    (entry,) = teams["teams"]
    assert (entry["active"], entry["states"]) == ("eth1", {"eth0": "failed (carrier)", "eth1": "active"})
    assert [(f["member"], f["link"], f["mode"]) for f in entry["faults"]] == [("eth0", "hv1.eth0", "carrier")]
    assert (entry["last_failover"]["from"], entry["last_failover"]["to"]) == ("eth0", "eth1")
    assert "last failover: " in human and "failover eth0 → eth1 (carrier, detected in" in human
    assert got == sent and got["bytes"] == TCP_BYTES  # the TCP transfer survived, intact
    assert udp["duplicates"] == 0 and udp["last"] == udp_sent["sent"] - 1  # it flowed again
    gaps = {s for a, b in udp["gaps"] for s in range(a, b + 1)}
    received = set(range(udp["last"] + 1)) - gaps
    via = {m: set(seqs) for m, seqs in taps.seqs.items()}
    assert all(len(set(seqs)) == len(seqs) for seqs in taps.seqs.values())  # no frame twice on a cable
    assert via["eth0"] and via["eth1"] and received <= via["eth0"] | via["eth1"]
    print(
        f"UDP across the carrier failover: {udp_sent['sent']} sent every {INTERVAL * 1e3:g} ms,"
        f" {len(received)} received, {udp['missing']} lost (~{udp['missing'] * INTERVAL * 1e3:g} ms),"
        f" through eth0 {len(via['eth0'])}, through eth1 {len(via['eth1'] & received)}"
        f" (arrived on eth1 and not delivered: {len(via['eth1'] - received)});"
        f" detection {moves[0]['latency_ms']} ms; TCP {got['bytes']} bytes intact"
    )
    assert active_member(pair) == "eth0" and team_faults.active(pair.name) == []


def until(
    w: watch.Watch, done: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> list[dict[str, Any]]:
    """The watch's records up to the first that is `done` (included)."""
    found = []
    for record in w.stream(duration=timeout):
        found.append(record)
        if done(record):
            return found
    raise AssertionError(f"the watch saw no such record: {found}")


def test_a_double_failure_stops_the_stream_until_healed(pair: Lab) -> None:
    """The standby's cable down, then the active member's: nothing is left to move to, the team
    stays on eth0 and nothing reaches vm1 (the stream's one gap) until the heal, then it flows
    again on eth0."""
    udp_r = End(pair.ns("vm1"), "udp-recv", str(UDP_PORT))
    with ends(udp_r):
        udp_r.expect("ready")
        udp_s = End(pair.ns("vm2"), "udp-send", VM_IP, str(UDP_PORT), str(INTERVAL))
        with ends(udp_s):
            udp_r.expect("first")
            before = len(events(pair))
            for member in ("eth1", "eth0"):
                fail(pair, f"hv1.{member}")
                wait_event(pair, before, lambda e, m=member: e.get("member") == m and e["state"] == "failed")
            assert active_member(pair) == "eth0"  # nothing healthy to move to: it stays
            healed_at = len(events(pair))
            heal(pair, "--all")  # eth1 comes back first: it may take over until eth0's failback
            resumed = int(udp_r.expect("resumed").split()[1])
            wait_beacons_flow(pair)  # both members healthy again
            while (moves := [e for e in events(pair)[healed_at:] if "to" in e]) and moves[-1]["to"] != "eth0":
                wait_event(pair, healed_at + len(moves), lambda e: e.get("event") == "failback")
            udp_sent, udp = udp_s.result(), udp_r.result()
    assert not [e for e in events(pair)[before:healed_at] if e.get("event") in ("failover", "failback")]
    assert active_member(pair) == "eth0"
    assert udp["duplicates"] == 0 and udp["last"] == udp_sent["sent"] - 1
    outage = udp["gaps"][0]  # the standby's loss cost nothing; the double failure, everything
    assert outage[1] + 1 == resumed and outage[1] - outage[0] + 1 >= GAP
    print(f"double failure: {outage[1] - outage[0] + 1} datagrams lost while both members were down")


def test_a_flapping_standby_does_not_wedge_the_team(pair: Lab) -> None:
    """The standby's carrier toggled 10 times a second for a few flaps, then healed: the team
    stays on its first member, both members are healthy again, and traffic flows once."""
    before = len(events(pair))
    fail(pair, "hv1.eth1", "--flap", "10")
    for _ in range(3):
        seen = wait_event(pair, before, lambda e: e.get("member") == "eth1" and e["state"] == "failed")
        before = events(pair).index(seen) + 1
    heal(pair, "hv1.eth1")
    wait_beacons_flow(pair)  # both members healthy and hearing each other again
    assert active_member(pair) == "eth0"
    assert not [e for e in events(pair)[before:] if e.get("event") in ("failover", "failback")]
    proc = ping(pair, 5)
    assert received(proc) == 5, proc.stdout
    assert "DUP!" not in proc.stdout


def test_a_silent_standby_is_seen_by_beacons_only(pair: Lab) -> None:
    """The carrier stays up: no link event; the beacons stop both ways; the active member still
    receives the peer's traffic, so the standby is blamed (the two-member rule) and nothing moves."""
    stream = ping_stream(pair, 100)
    try:
        before = len(events(pair))
        fail(pair, "hv1.eth1", "--silent")
        down = wait_event(pair, before, lambda e: e.get("event") == "member" and e["state"] == "failed")
        assert (down["member"], down["cause"]) == ("eth1", "beacon")
        assert [(f["link"], f["mode"]) for f in pair_status(pair)["faults"]] == [("hv1.eth1", "silent")]
        assert team(pair)["active"] == "eth0"
        before = len(events(pair))
        assert [f["link"] for f in heal(pair, "--all")["healed"]] == ["hv1.eth1"]
        up = wait_event(pair, before, lambda e: e.get("event") == "member" and e["state"] == "ok")
        assert up["member"] == "eth1"
    finally:
        out, _ = stream.communicate(timeout=30)
    assert not [e for e in events(pair)[before:] if e.get("event") in ("failover", "failback")]
    assert "DUP!" not in out


def test_a_silent_active_member_fails_over_on_beacons(pair: Lab) -> None:
    """Silence on the active member's cable while the peer pings through it: its frames stop
    with the beacons, so the active member is blamed and the team moves (cause beacon)."""
    stream = ping_stream(pair, 150)
    try:
        before = len(events(pair))
        fail(pair, "hv1.eth0", "--silent")
        move = wait_event(pair, before, lambda e: e.get("event") == "failover")
        assert (move["from"], move["to"], move["cause"]) == ("eth0", "eth1", "beacon")
        assert team(pair)["active"] == "eth1"
        before = len(events(pair))
        heal(pair, "hv1.eth0")
        # the hold-down has grown with the earlier moves of this module
        back = wait_event(pair, before, lambda e: e.get("event") == "failback", timeout=60)
        assert (back["from"], back["to"]) == ("eth1", "eth0")
    finally:
        out, _ = stream.communicate(timeout=60)
    assert "DUP!" not in out
    proc = ping(pair, 3)
    assert received(proc) == 3, proc.stdout


def test_a_bad_link_is_named(pair: Lab) -> None:
    proc = nlab("fail", "hv1.eht0", "--lab", pair.name)
    assert proc.returncode == 2
    assert "unknown link 'hv1.eht0'" in proc.stderr and "did you mean 'hv1.eth0'?" in proc.stderr
    proc = nlab("heal", "tor1.peer", "--lab", pair.name)
    assert proc.returncode == 2 and "no fault is injected" in proc.stderr


def test_a_flapping_member_is_left_to_down(pair: Lab) -> None:
    """`nlab down` (the fixture's) ends the flapping process with the lab: leftovers are checked."""
    before = len(events(pair))
    failed = fail(pair, "tor2.hv1-eth1", "--flap", "10")["failed"]
    assert failed["mode"] == "flap" and failed["hz"] == 10
    for state in ("failed", "ok", "failed"):
        seen = wait_event(pair, before, lambda e, s=state: e.get("event") == "member" and e["state"] == s)
        before = events(pair).index(seen) + 1
        assert (seen["member"], seen.get("cause")) == ("eth1", "carrier" if state == "failed" else None)
    assert team(pair)["active"] == "eth0"
