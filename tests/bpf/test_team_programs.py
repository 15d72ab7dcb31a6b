"""The team and fault gates of vlan_from_port / vlan_to_port, through BPF_PROG_TEST_RUN.

Each row sets the port's team state and fault (ifindex 1, the loopback: test-run only names
it), runs one program once on one frame and checks the verdict and the exact deltas of the
verdict counters and of the beacon counter. A beacon is never a verdict: consumed at ingress,
sent at egress, it shows only in the beacon counter.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw, raw

from dataplane import testrun
from dataplane.abi import BEACON_ETHERTYPE, Direction, Reason
from dataplane.switch import PortVlans
from dataplane.team import BEACON_MAGIC, TeamError, is_beacon
from tests.bpf.conftest import PORT, Counters, require_kernel

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

IN, OUT = Direction.INGRESS, Direction.EGRESS
PROGRAM = {IN: "vlan_from_port", OUT: "vlan_to_port"}
HOST = "02:00:00:00:0b:01"
BROADCAST = "ff:ff:ff:ff:ff:ff"
BRIDGED_FROM = 7  # ingress_ifindex of a frame the bridge forwards (a VM's port, say)

_BEACON = BEACON_MAGIC + b'{"lab":"t","host":"hv1","vswitch":"vs1","member":"eth0","seq":1}'
_IPV4 = IP(src="10.0.10.1", dst="10.0.10.2") / UDP(sport=4000, dport=5000) / Raw(b"x" * 18)
FRAMES = {
    "ipv4": raw(Ether(dst=BROADCAST, src=HOST) / _IPV4),
    "ipv4.v10": raw(Ether(dst=BROADCAST, src=HOST) / Dot1Q(vlan=10) / _IPV4),
    "beacon": raw(Ether(dst=BROADCAST, src=HOST, type=BEACON_ETHERTYPE) / Raw(_BEACON)),
    # beacons are untagged: behind a tag, 0x88B5 is an ordinary frame (the mirror encapsulation's)
    "beacon.v10": raw(Ether(dst=BROADCAST, src=HOST) / Dot1Q(vlan=10, type=BEACON_ETHERTYPE) / Raw(_BEACON)),
    # the EtherType without the magic: anyone's experimental protocol, an ordinary frame
    "nomagic": raw(Ether(dst=BROADCAST, src=HOST, type=BEACON_ETHERTYPE) / Raw(b"NLABTEAX" + b"y" * 30)),
    "short": raw(Ether(dst=BROADCAST, src=HOST, type=BEACON_ETHERTYPE) / Raw(BEACON_MAGIC[:7])),
}

PROFILES = {
    "trunk": PortVlans(allowed=frozenset({10}), untagged=True),
    "tagged-only": PortVlans(allowed=frozenset({10}), untagged=False),
}
STATES: dict[str, bool | str | None] = {"none": None, "active": True, "standby": False, "edge": "edge"}
FAULTS: dict[str, str | tuple[str, float] | None] = {
    "none": None,
    "silent": "silent",
    "loss0": ("loss", 0.0),
    "loss1": ("loss", 1.0),
}

PASS, CONSUMED, SENT = "pass", "consumed", "sent"


@dataclass(frozen=True)
class Row:
    state: str
    fault: str
    direction: Direction
    frame: str
    outcome: str | Reason  # PASS, CONSUMED (beacon, ingress), SENT (beacon, egress) or a drop reason
    profile: str = "trunk"
    bridged: bool = False  # egress: forwarded by the bridge, not sent by the node

    @property
    def id(self) -> str:
        way = "from" if self.direction is IN else "to"
        out = self.outcome if isinstance(self.outcome, str) else self.outcome.label
        extra = "-bridged" if self.bridged else ""
        return f"{self.profile}-{self.state}-{self.fault}-{way}-{self.frame}{extra}-{out}"


R = Reason
BOTH = (IN, OUT)
ORDINARY = ("ipv4", "ipv4.v10", "beacon.v10", "nomagic", "short")
STANDBY = {IN: R.TEAM_STANDBY_RX, OUT: R.TEAM_STANDBY_TX}

ROWS = [
    # no member, no fault: the gate is not there, a beacon is an ordinary frame
    *(Row("none", "none", d, f, PASS) for d in BOTH for f in (*ORDINARY, "beacon")),
    # active member: everything passes; its beacons are the team's own
    *(Row("active", "none", d, f, PASS) for d in BOTH for f in ORDINARY),
    Row("active", "none", IN, "beacon", CONSUMED),
    Row("active", "none", OUT, "beacon", SENT),
    Row("active", "none", OUT, "beacon", PASS, bridged=True),  # from a VM: judged like any frame
    # standby member: nothing but beacons, either way
    *(Row("standby", "none", d, f, STANDBY[d]) for d in BOTH for f in ORDINARY),
    Row("standby", "none", IN, "beacon", CONSUMED),
    Row("standby", "none", OUT, "beacon", SENT),
    Row("standby", "none", OUT, "beacon", R.TEAM_STANDBY_TX, bridged=True),  # no way out dressed as one
    # a beacon sent on a trunk without untagged frames still leaves: the VLAN policy is for the
    # switch's frames, the beacon is the member's own
    *(Row(s, "none", OUT, "beacon", SENT, "tagged-only") for s in ("active", "standby")),
    # edge (a host uplink in no team): other hosts' beacons end here, never enter its bridge;
    # everything else is an ordinary frame
    *(Row("edge", "none", d, f, PASS) for d in BOTH for f in ORDINARY),
    Row("edge", "none", IN, "beacon", CONSUMED),
    Row("edge", "none", OUT, "beacon", SENT),
    Row("edge", "none", OUT, "beacon", PASS, bridged=True),
    Row("active", "none", OUT, "ipv4", R.UNTAGGED, "tagged-only"),
    Row("none", "none", OUT, "beacon", R.UNTAGGED, "tagged-only"),
    # silent fault: every frame both ways, beacons too, on any port
    *(Row(s, "silent", d, f, R.FAULT_SILENT) for s in STATES for d in BOTH for f in (*ORDINARY, "beacon")),
    # loss 1.0 drops every frame, loss 0 none: both exact
    *(Row(s, "loss1", d, f, R.FAULT_LOSS) for s in STATES for d in BOTH for f in ("ipv4", "beacon")),
    *(Row("none", "loss0", d, f, PASS) for d in BOTH for f in ("ipv4", "beacon")),
    Row("active", "loss0", IN, "beacon", CONSUMED),
    Row("active", "loss0", OUT, "beacon", SENT),
    *(Row("standby", "loss0", d, "ipv4", STANDBY[d]) for d in BOTH),
]


@pytest.fixture
def gated(dataplane: SwitchDataplane) -> Iterator[SwitchDataplane]:
    """The session's dataplane with port PORT back to no member, no fault afterwards: the other
    tests of the session share the port."""
    try:
        yield dataplane
    finally:
        dataplane.team.remove_member(PORT)
        dataplane.team.clear_fault(PORT)
        dataplane.configure(PORT, PROFILES["trunk"])


@pytest.fixture(scope="module")
def switch_plane() -> Iterator[SwitchDataplane]:
    """A physical switch's dataplane (-DNLAB_SWITCH_ONLY)."""
    require_kernel()
    from dataplane.switch import SwitchDataplane

    dp = SwitchDataplane.load(vm_ports=False)
    try:
        yield dp
    finally:
        dp.close()


def set_gate(dp: SwitchDataplane, state: str, fault: str) -> None:
    if STATES[state] is None:
        dp.team.remove_member(PORT)
    elif STATES[state] == "edge":
        dp.team.set_edge(PORT)
    else:
        dp.team.set_member(PORT, bool(STATES[state]))
    if FAULTS[fault] is None:
        dp.team.clear_fault(PORT)
    else:
        dp.team.set_fault(PORT, FAULTS[fault])  # type: ignore[arg-type]


def beacons(dp: SwitchDataplane) -> tuple[int, int]:
    counts = dp.team.counters([PORT])[PORT]
    return counts.beacons_rx, counts.beacons_tx


def check(dp: SwitchDataplane, row: Row) -> None:
    dp.configure(PORT, PROFILES[row.profile])
    set_gate(dp, row.state, row.fault)
    counters = Counters(dp)
    frame = FRAMES[row.frame]
    before, beacons_before = counters.snapshot(), beacons(dp)

    result = testrun.run(
        dp.programs[PROGRAM[row.direction]],
        frame,
        ifindex=PORT,
        ingress_ifindex=BRIDGED_FROM if row.bridged else 0,
    )

    delta = counters.delta(before)
    rx, tx = (a - b for a, b in zip(beacons(dp), beacons_before, strict=True))
    if row.outcome in (CONSUMED, SENT):
        assert delta == {}, f"a beacon is no verdict, counted {delta}"
        assert (rx, tx) == ((1, 0) if row.outcome == CONSUMED else (0, 1))
        assert result.retval == (testrun.TC_ACT_SHOT if row.outcome == CONSUMED else testrun.TC_ACT_OK)
        return
    reason = Reason.PASS if row.outcome == PASS else row.outcome
    assert delta == {(row.direction, reason): (1, len(frame))}, f"counted {delta}"
    assert (rx, tx) == (0, 0)
    assert result.retval == (testrun.TC_ACT_OK if reason is Reason.PASS else testrun.TC_ACT_SHOT)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_row(gated: SwitchDataplane, row: Row) -> None:
    check(gated, row)


def test_table_covers_every_state_fault_and_reason() -> None:
    assert {row.state for row in ROWS} == set(STATES)
    assert {row.fault for row in ROWS} == set(FAULTS)
    assert {r for r in (row.outcome for row in ROWS) if isinstance(r, Reason)} >= {
        R.TEAM_STANDBY_RX,
        R.TEAM_STANDBY_TX,
        R.FAULT_SILENT,
        R.FAULT_LOSS,
    }
    assert len({row.id for row in ROWS}) == len(ROWS)


SWITCH_ROWS = [
    *(Row("none", "none", d, "ipv4", PASS) for d in BOTH),
    *(Row("none", "silent", d, f, R.FAULT_SILENT) for d in BOTH for f in ("ipv4", "beacon")),
    *(Row("none", "loss1", d, "ipv4", R.FAULT_LOSS) for d in BOTH),
    *(Row("none", "loss0", d, "ipv4", PASS) for d in BOTH),
]


@pytest.mark.parametrize("row", SWITCH_ROWS, ids=[row.id for row in SWITCH_ROWS])
def test_fault_on_a_physical_switch_port(switch_plane: SwitchDataplane, row: Row) -> None:
    check(switch_plane, row)


@pytest.mark.parametrize("direction", BOTH)
def test_loss_half_drops_about_half(gated: SwitchDataplane, direction: Direction) -> None:
    """A property of the random drop, not a timing: over N frames the drops are binomial
    (N/2, sd sqrt(N)/2); the bounds are 10 sd wide, and the passes make up the rest exactly."""
    n = 10_000
    gated.configure(PORT, PROFILES["trunk"])
    gated.team.set_fault(PORT, ("loss", 0.5))
    counters = Counters(gated)
    frame = FRAMES["ipv4"]
    before = counters.snapshot()

    testrun.run(gated.programs[PROGRAM[direction]], frame, ifindex=PORT, repeat=n)

    delta = counters.delta(before)
    dropped = delta.get((direction, Reason.FAULT_LOSS), (0, 0))[0]
    passed = delta.get((direction, Reason.PASS), (0, 0))[0]
    assert dropped + passed == n and set(delta) <= {(direction, Reason.FAULT_LOSS), (direction, Reason.PASS)}
    sd = math.sqrt(n) / 2
    assert abs(dropped - n / 2) < 10 * sd, f"{dropped} of {n} dropped at P=0.5"


def test_flipping_the_state_is_one_write(gated: SwitchDataplane) -> None:
    """Positive and negative in one go: the same frame passes the active member and is dropped
    once it is standby, then passes again after `activate`."""
    team = gated.team
    gated.configure(PORT, PROFILES["trunk"])
    team.set_member(PORT, True)

    def run() -> testrun.Result:
        return testrun.run(gated.programs["vlan_from_port"], FRAMES["ipv4"], ifindex=PORT)

    assert run().passed
    team.activate(2, [PORT, 2])
    try:
        assert team.members()[PORT] is False and team.members()[2] is True
        assert run().dropped
        team.activate(PORT, [PORT, 2])
        assert run().passed
    finally:
        team.remove_member(2)


def test_team_api_round_trip_and_errors(gated: SwitchDataplane) -> None:
    team = gated.team
    team.set_member(PORT, False)
    team.set_fault(PORT, "loss", 0.25)
    assert team.members() == {PORT: False}
    assert team.faults()[PORT].mode == "loss" and team.faults()[PORT].p == 0.25
    team.set_fault(PORT, "silent")
    assert team.faults()[PORT].mode == "silent"
    team.clear_fault(PORT)
    team.remove_member(PORT)
    assert PORT not in team.faults() and PORT not in team.members()
    team.set_edge(PORT)
    assert PORT not in team.members(), "an edge is no member: verify and status count members only"
    for bad in ((0, "silent"), (PORT, "bogus"), (PORT, ("loss", 1.5)), (PORT, "loss")):
        with pytest.raises(TeamError):
            team.set_fault(*bad)  # type: ignore[arg-type]
    with pytest.raises(TeamError):
        team.set_member(4096, True)


def test_python_is_beacon_agrees() -> None:
    assert is_beacon(FRAMES["beacon"])
    assert not any(is_beacon(FRAMES[f]) for f in ("nomagic", "short", "ipv4"))
