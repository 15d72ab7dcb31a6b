"""The team and fault gates on real namespaces (tests/lab/teamlab.py):

    vm ─ vm0 ┐                 ┌ down ─ s1 ─ up ┐
             host:br0 ─ eth0 ──┘                ├─ upstream:br0 ─ peer
                      ─ eth1 ──┐                │
                               └ down ─ s2 ─ up ┘

a host dual-homed to two switches that share an upstream, a loop that only the team breaks;
eth0 active, eth1 standby. Nothing but the test's own frames crosses the lab, so every count
is exact.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest
from scapy.layers.l2 import Ether
from scapy.packet import Raw, raw

from dataplane.abi import BEACON_ETHERTYPE, Direction, Reason
from netns_lab.kernel.netlink import Netlink
from tests.lab import vlan_attacks as va

if os.geteuid() != 0:
    pytest.skip("needs root: namespaces and eBPF", allow_module_level=True)
pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")

from tests.lab.teamlab import PEER_IP, VM_MAC, TeamLab, team_lab

IN, OUT = Direction.INGRESS, Direction.EGRESS


@pytest.fixture(scope="module")
def lab() -> Iterator[TeamLab]:
    with team_lab() as made:
        yield made


@pytest.fixture
def team(lab: TeamLab) -> Iterator[TeamLab]:
    """eth0 active, eth1 standby, no fault, an empty FDB: each test starts from the same team,
    and leaves it so."""

    def reset() -> None:
        with lab.dataplane() as dp:
            for ifindex in lab.members.values():
                dp.team.clear_fault(ifindex)
            dp.team.activate(lab.members["eth0"], list(lab.members.values()))
        for node, port in (("host", "eth0"), ("host", "eth1"), ("s1", "down"), ("s2", "down")):
            flush_fdb(lab.ns(node), port)

    reset()
    try:
        yield lab
    finally:
        reset()


def flush_fdb(ns: str, port: str) -> None:
    """Forget what the bridge learned on `port` (the monitor's step after a flip)."""
    cmd = ["ip", "-n", ns, "link", "set", "dev", port, "type", "bridge_slave", "fdb_flush"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


def broadcasts(marker: bytes, n: int) -> list[bytes]:
    return [
        raw(Ether(dst=va.BROADCAST, src=VM_MAC, type=0x88B6) / Raw(marker + b"%04d" % i)) for i in range(n)
    ]


def barrier(token: bytes) -> bytes:
    """A beacon-shaped broadcast from the VM: bridged, so an ordinary frame out of the active
    member (a VM cannot send beacons), but consumed, not counted, when it comes round to the
    standby's ingress: it ends the counts of both taps without adding to the standby drops."""
    return raw(Ether(dst=va.BROADCAST, src=VM_MAC, type=BEACON_ETHERTYPE) / Raw(b"NLABTEAM" + token))


def delta(after: dict, before: dict) -> dict:
    return {
        k: after.get(k, 0) - before.get(k, 0)
        for k in set(after) | set(before)
        if after.get(k, 0) != before.get(k, 0)
    }


def ping(ns: str, dst: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", ns, "ping", "-n", "-c", str(count), "-i", "0.1", "-W", "1", dst]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def carrier(ns: str, iface: str) -> int:
    with Netlink(ns) as nl:
        return nl.iproute().get_links(nl.index(iface))[0].get_attr("IFLA_CARRIER")


def test_broadcast_reaches_the_upstream_once(team: TeamLab) -> None:
    """N broadcasts from the VM: the peer gets each exactly once; each also comes round the loop
    to the standby, which drops it (exact counts), and the bridge floods it to the standby,
    which drops it too. Without the gate the loop would return them to the bridge forever."""
    n, marker, token = 50, b"nlab-team-" + secrets.token_hex(4).encode(), secrets.token_hex(8).encode()
    before = {m: team.counts(m) for m in ("eth0", "eth1")}
    with va.taps([(team.ns("peer"), "eth0"), (team.ns("host"), "eth1")]) as taps:
        va.inject(team.ns("vm"), "eth0", [*broadcasts(marker, n), barrier(token)])
        at_peer = taps[team.ns("peer"), "eth0"].until(lambda f: f.carries(token))
        at_standby = taps[team.ns("host"), "eth1"].until(lambda f: not f.outgoing and f.carries(token))

    def data(frames: list[va.Frame]) -> list[bytes]:
        return [f.data for f in frames if f.carries(marker) and not f.outgoing]

    assert len(data(at_peer)) == n and len(set(data(at_peer))) == n, "each broadcast exactly once"
    assert len(data(at_standby)) == n, "the loop is real: every broadcast came round to the standby"
    assert delta(team.counts("eth1"), before["eth1"]) == {
        (OUT, Reason.TEAM_STANDBY_TX): n + 1,  # the barrier too: from a VM it is no beacon
        (IN, Reason.TEAM_STANDBY_RX): n,
    }
    assert delta(team.counts("eth0"), before["eth0"]) == {(OUT, Reason.PASS): n + 1}


def test_flip_moves_traffic_to_the_other_member(team: TeamLab) -> None:
    assert ping(team.ns("vm"), PEER_IP.split("/")[0]).returncode == 0
    before = {m: team.counts(m) for m in ("eth0", "eth1")}
    with team.dataplane() as dp:
        dp.team.activate(team.members["eth1"], list(team.members.values()))
        assert dp.team.members() == {team.members["eth0"]: False, team.members["eth1"]: True}
    flush_fdb(team.ns("host"), "eth0")

    proc = ping(team.ns("vm"), PEER_IP.split("/")[0])

    assert proc.returncode == 0, proc.stdout + proc.stderr
    moved = delta(team.counts("eth1"), before["eth1"])
    assert moved.get((OUT, Reason.PASS), 0) >= 3 and moved.get((IN, Reason.PASS), 0) >= 3
    stayed = delta(team.counts("eth0"), before["eth0"])
    assert stayed.get((OUT, Reason.PASS), 0) == 0 and stayed.get((IN, Reason.PASS), 0) == 0


def test_silent_fault_stops_traffic_with_carrier_up(team: TeamLab) -> None:
    """Negative and positive in one tap: N frames while the active member is silent never reach
    the peer; after the heal the barrier does. A frame for the host bridge's own MAC, seen by a
    tap on br0, marks the moment the N frames have all been judged (the host handles a port's
    frames in order), so the counts are exact before the heal."""
    n, marker = 20, b"nlab-silent-" + secrets.token_hex(4).encode()
    token, judged = secrets.token_hex(8).encode(), secrets.token_hex(8).encode()
    eth0 = team.members["eth0"]
    bridge_mac = va.kernel_mac(team.ns("host"), "br0")
    to_bridge = raw(Ether(dst=bridge_mac, src=VM_MAC, type=0x88B6) / Raw(judged))
    before = team.counts("eth0")
    with va.taps([(team.ns("peer"), "eth0"), (team.ns("host"), "br0")]) as taps:
        with team.dataplane() as dp:
            dp.team.set_fault(eth0, "silent")
        va.inject(team.ns("vm"), "eth0", [*broadcasts(marker, n), to_bridge])
        taps[team.ns("host"), "br0"].until(lambda f: f.carries(judged))
        assert delta(team.counts("eth0"), before) == {(OUT, Reason.FAULT_SILENT): n}
        assert carrier(team.ns("host"), "eth0") == 1 and carrier(team.ns("s1"), "down") == 1
        with team.dataplane() as dp:
            dp.team.clear_fault(eth0)
        va.inject(team.ns("vm"), "eth0", [barrier(token)])
        at_peer = taps[team.ns("peer"), "eth0"].until(lambda f: f.carries(token))
    assert not any(f.carries(marker) for f in at_peer), "a frame crossed the silent member"
