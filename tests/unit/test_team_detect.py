"""The team's failure detector (netns_lab.features.team.detect) on made-up time: carrier, beacons
(silent, one-way and ambiguous failures), ARP, double failure, failback and its hold-down, and
a member flapping at 10 Hz. Times are exact, so the latencies asserted are the detector's own."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest

from netns_lab.features.team.detect import GRACE, Failover, MemberChange, Output, Settings, TeamDetector

INTERVAL = 0.1
MISS = 3
TICK = 0.01


def settings(**kw: object) -> Settings:
    base: dict[str, object] = dict(
        name="hv1.vs1",
        members=("eth0", "eth1"),
        link=True,
        beacon=True,
        beacon_interval=INTERVAL,
        beacon_miss=MISS,
        hold_down=1.0,
    )
    return Settings(**(base | kw))  # type: ignore[arg-type]


class Sim:
    """Drives a detector: beacons each interval on every working (sender, receiver) pair, a tick
    every 10 ms, carrier changes and traffic when told; collects every output."""

    def __init__(self, s: Settings, **kw: object) -> None:
        self.s = s
        self.t = 0.0
        self.det = TeamDetector(s, 0.0, **kw)  # type: ignore[arg-type]
        self.paths = set(itertools.permutations(s.members, 2))
        self.out: list[Output] = []
        self.traffic_on: set[str] = set()
        self.arp_ok: set[str] = set()
        self._next_beacon = 0.0

    def cut(self, *pairs: tuple[str, str]) -> None:
        self.paths -= set(pairs)

    def isolate(self, member: str) -> None:
        self.paths = {(a, b) for a, b in self.paths if member not in (a, b)}

    def heal(self) -> None:
        self.paths = set(itertools.permutations(self.s.members, 2))

    def run(self, seconds: float) -> list[Output]:
        start = len(self.out)
        end = self.t + seconds
        while self.t < end - 1e-9:
            self.t = round(self.t + TICK, 6)
            if self.s.beacon and self.t >= self._next_beacon - 1e-9:
                self._next_beacon = round(self.t + INTERVAL, 6)
                for sender, receiver in sorted(self.paths):
                    if self.det.m[sender].carrier and self.det.m[receiver].carrier:
                        self.out += self.det.beacon(sender, receiver, self.t)
            for member in self.traffic_on:
                self.out += self.det.traffic(member, self.t)
            for member in self.arp_ok:
                if member == self.det.active:
                    self.out += self.det.arp_reply(member, self.t)
            self.out += self.det.tick(self.t)
        return self.out[start:]

    def link(self, member: str, up: bool) -> list[Output]:
        out = self.det.link(member, up, self.t)
        self.out += out
        return out


def failovers(out: Iterable[Output]) -> list[Failover]:
    return [o for o in out if isinstance(o, Failover)]


def changes(out: Iterable[Output]) -> list[MemberChange]:
    return [o for o in out if isinstance(o, MemberChange)]


# -- carrier -------------------------------------------------------------------------------------
def test_carrier_loss_on_the_active_member_fails_over_at_once() -> None:
    sim = Sim(settings(beacon=False))
    sim.run(0.5)
    out = sim.link("eth0", False)
    assert changes(out) == [MemberChange("hv1.vs1", "eth0", False, "carrier", sim.t)]
    assert failovers(out) == [Failover("hv1.vs1", "eth0", "eth1", "carrier", 0.0, sim.t)]
    assert sim.det.active == "eth1"


def test_carrier_loss_on_the_standby_only_marks_it_failed() -> None:
    sim = Sim(settings(beacon=False))
    out = sim.link("eth1", False)
    assert failovers(out) == [] and sim.det.state() == {"eth0": "active", "eth1": "failed (carrier)"}


def test_carrier_ignored_without_link_detection() -> None:
    sim = Sim(settings(link=False, beacon=False))
    out = sim.link("eth0", False) + sim.run(1.0)
    assert out == [] and sim.det.active == "eth0"


# -- beacons -------------------------------------------------------------------------------------
@pytest.mark.parametrize("beacon", [True, False], ids=["beacon", "link-only"])
def test_silent_failure_seen_by_beacons_within_beacon_miss_intervals(beacon: bool) -> None:
    sim = Sim(settings(beacon=beacon, arp=False))
    sim.run(1.0)
    assert sim.out == []  # healthy beacons: nothing happens
    last_beacon = 0.91  # beacons at 0.01, 0.11, ... 0.91
    sim.isolate("eth0")  # both ways, carrier stays up
    out = sim.run(1.0)
    if not beacon:
        assert out == [] and sim.det.active == "eth0"  # link state alone cannot see it
        return
    [fo] = failovers(out)
    assert (fo.old, fo.new, fo.cause, fo.ambiguous) == ("eth0", "eth1", "beacon", True)
    assert fo.latency == pytest.approx(fo.t - last_beacon)
    # failed at the first tick once beacon_miss beacons (plus the grace) are missing, not before
    assert MISS * INTERVAL <= fo.latency <= (MISS + GRACE) * INTERVAL + TICK


def test_ambiguous_silence_with_traffic_on_the_active_blames_the_standby() -> None:
    sim = Sim(settings())
    sim.traffic_on = {"eth0"}  # the active member keeps receiving other frames
    sim.run(0.5)
    sim.isolate("eth1")
    out = sim.run(2.0)
    assert failovers(out) == [] and sim.det.state() == {"eth0": "active", "eth1": "failed (beacon)"}


def test_frames_before_the_first_missed_beacon_prove_nothing() -> None:
    """The active path breaks mid-interval, after frames came in since the last beacon: they
    predate the break, so the active member is blamed and the team moves."""
    sim = Sim(settings())
    sim.traffic_on = {"eth0"}
    sim.run(0.55)  # the last beacon at 0.5, frames until 0.55
    sim.traffic_on = set()
    sim.isolate("eth0")
    out = sim.run(1.0)
    [fo] = failovers(out)
    assert (fo.old, fo.new, fo.cause, fo.ambiguous) == ("eth0", "eth1", "beacon", True)


def test_ambiguous_blame_sticks_until_beacons_flow_again() -> None:
    sim = Sim(settings())
    sim.run(0.5)
    sim.isolate("eth0")
    out = sim.run(10.0)  # the silence goes on: one move, never back
    assert [(f.old, f.new) for f in failovers(out)] == [("eth0", "eth1")]


def test_one_way_loss_fails_the_member_that_stops_receiving() -> None:
    sim = Sim(settings())
    sim.run(0.5)
    sim.cut(("eth1", "eth0"))  # eth0 (active) hears nothing, eth1 still hears eth0
    out = sim.run(1.0)
    [fo] = failovers(out)
    assert (fo.old, fo.new, fo.cause, fo.ambiguous) == ("eth0", "eth1", "beacon", False)
    sim.heal()
    sim.cut(("eth1", "eth0"))  # the same cut, eth0 now being the standby (within its hold-down)
    out = sim.run(1.0)
    assert failovers(out) == [] and sim.det.state()["eth0"] == "failed (beacon)"


def test_a_healing_silence_is_not_a_one_way_loss() -> None:
    sim = Sim(settings())
    sim.run(0.5)
    sim.isolate("eth0")
    sim.run(1.0)
    sim.heal()
    sim.cut(("eth0", "eth1"))  # eth0 hears eth1 again one interval before eth1 hears eth0
    sim.run(INTERVAL)
    sim.heal()
    sim.run(0.5)
    assert [(c.member, c.healthy) for c in changes(sim.out)] == [("eth0", False), ("eth0", True)]


def test_a_member_back_before_its_path_forwards_is_blamed_not_the_active_one() -> None:
    sim = Sim(settings())
    sim.run(0.5)
    sim.link("eth0", False)
    sim.run(0.5)
    sim.isolate("eth0")  # carrier back, but its switch port does not forward yet
    sim.link("eth0", True)
    sim.run(1.0)
    assert sim.det.state() == {"eth0": "failed (beacon)", "eth1": "active"}
    sim.heal()
    sim.run(3.0)  # its hold-down doubled: it failed again right after its carrier came back
    moves = [(f.old, f.new, f.cause) for f in failovers(sim.out)]
    assert moves == [("eth0", "eth1", "carrier"), ("eth1", "eth0", "failback")]


def test_silence_from_the_start_moves_nothing() -> None:
    sim = Sim(settings())
    sim.isolate("eth0")
    sim.isolate("eth1")
    sim.run(2.0)
    assert failovers(sim.out) == [] and sim.det.state() == {
        "eth0": "failed (beacon)",
        "eth1": "failed (beacon)",
    }
    sim.heal()
    sim.run(1.0)
    assert failovers(sim.out) == [] and sim.det.state() == {"eth0": "active", "eth1": "standby"}


def test_three_members_the_silent_one_fails_while_the_others_hear_each_other() -> None:
    sim = Sim(settings(members=("eth0", "eth1", "eth2")))
    sim.run(0.5)
    sim.isolate("eth1")  # a standby
    out = sim.run(1.0)
    assert failovers(out) == []
    assert sim.det.state() == {"eth0": "active", "eth1": "failed (beacon)", "eth2": "standby"}
    sim.isolate("eth0")  # and the active one: eth2 hears nobody now, but eth1 stays failed
    out = sim.run(1.0)
    assert [(f.old, f.new) for f in failovers(out)] == [("eth0", "eth2")]


def test_three_members_no_ambiguity_while_two_hear_each_other() -> None:
    sim = Sim(settings(members=("eth0", "eth1", "eth2")))
    sim.run(0.5)
    sim.isolate("eth0")
    [fo] = failovers(sim.run(1.0))
    assert (fo.old, fo.new, fo.cause, fo.ambiguous) == ("eth0", "eth1", "beacon", False)


def test_beacons_of_other_teams_say_nothing() -> None:
    sim = Sim(settings())
    sim.run(0.5)
    sim.isolate("eth0")
    for t in (0.6, 0.7, 0.8, 0.9):
        sim.det.beacon("hv2.eth0", "eth0", t)
    assert failovers(sim.run(1.0))


# -- ARP -----------------------------------------------------------------------------------------
def test_arp_target_silent_through_the_active_member_fails_it() -> None:
    sim = Sim(settings(beacon=False, arp=True))
    sim.arp_ok = {"eth0", "eth1"}
    sim.run(1.0)
    assert sim.out == []
    sim.arp_ok = {"eth1"}
    [fo] = failovers(sim.run(1.0))
    assert (fo.new, fo.cause) == ("eth1", "arp")
    assert fo.latency == pytest.approx(sim.s.window, abs=TICK)


def test_with_an_arp_target_an_ambiguous_silence_is_left_to_arp() -> None:
    sim = Sim(settings(arp=True))
    sim.arp_ok = {"eth0", "eth1"}  # the target answers through the active member
    sim.run(0.5)
    sim.isolate("eth1")
    out = sim.run(2.0)
    assert failovers(out) == [] and sim.det.active == "eth0"


# -- double failure, failback, restart -----------------------------------------------------------
def test_double_failure_stays_then_recovers_on_heal() -> None:
    sim = Sim(settings(beacon=False))
    sim.link("eth0", False)
    sim.link("eth1", False)
    assert [(f.old, f.new) for f in failovers(sim.out)] == [("eth0", "eth1")]
    assert failovers(sim.run(1.0)) == []  # nothing healthy: stay on eth1
    out = sim.link("eth0", True) + sim.run(2.0)
    # the active member is down: the first one back takes over at once, hold-down or not
    assert [(f.old, f.new, f.cause) for f in failovers(out)] == [("eth1", "eth0", "carrier")]


def test_double_silent_failure_then_heal() -> None:
    sim = Sim(settings())
    sim.run(0.5)
    sim.isolate("eth0")
    sim.isolate("eth1")
    out = sim.run(2.0)
    assert [(f.old, f.new) for f in failovers(out)] == [("eth0", "eth1")]  # the ambiguous guess
    sim.heal()
    out = sim.run(3.0)
    assert [(f.old, f.new, f.cause) for f in failovers(out)] == [("eth1", "eth0", "failback")]


@pytest.mark.parametrize("failback", [True, False])
def test_failback_after_the_hold_down_only_if_the_policy_says_so(failback: bool) -> None:
    sim = Sim(settings(failback=failback))
    sim.run(0.5)
    sim.link("eth0", False)
    sim.run(0.5)
    sim.link("eth0", True)
    up = sim.t
    out = sim.run(3.0)
    if not failback:
        assert failovers(out) == [] and sim.det.active == "eth1"
        return
    [fo] = failovers(out)
    assert (fo.new, fo.cause, fo.latency) == ("eth0", "failback", 1.0)
    assert fo.t == pytest.approx(up + 1.0, abs=TICK)


def test_flapping_at_10_hz_costs_one_failover_and_one_failback() -> None:
    sim = Sim(settings())
    sim.run(0.5)
    for _ in range(30):  # 3 s: 50 ms down, 50 ms up
        sim.link("eth0", False)
        sim.run(0.05)
        sim.link("eth0", True)
        sim.run(0.05)
    during = failovers(sim.out)
    assert [(f.old, f.new) for f in during] == [("eth0", "eth1")]
    sim.run(40.0)  # stable again: back after the (grown) hold-down, once
    moves = [(f.old, f.new, f.cause) for f in failovers(sim.out)]
    assert moves == [("eth0", "eth1", "carrier"), ("eth1", "eth0", "failback")]
    assert sim.det.m["eth0"].hold == 16.0  # doubled per flap, capped


def test_a_restarted_detector_keeps_the_dataplane_s_active_member() -> None:
    sim = Sim(settings(failback=False), active="eth1")
    assert failovers(sim.run(5.0)) == [] and sim.det.active == "eth1"
    sim = Sim(settings(), active="eth1", carriers={"eth0": False})
    assert failovers(sim.run(5.0)) == [] and sim.det.state()["eth0"] == "failed (carrier)"


@pytest.mark.parametrize("frames", [True, False], ids=["active-receives", "idle"])
def test_a_late_count_defers_the_ambiguous_blame_to_the_next_count(frames: bool) -> None:
    """A monitor starved past the silence's judgement (a loaded machine) reads the counters once
    late: that read covers frames from before the first missed beacon and says nothing, so the
    blame waits for the next read. Frames in it prove the active member receives: the standby is
    blamed and nothing moves; none: the active member is blamed and the team moves."""
    sim = Sim(settings())
    sim.run(0.45)  # beacons both ways, the last at 0.41
    sim.det.counted(0.40)
    sim.isolate("eth1")  # no beacon either way from now on; the monitor sleeps until 0.80
    missed = 0.41 + INTERVAL * (1 + GRACE)
    sim.det.traffic("eth0", 0.45)  # frames since the read at 0.45, stamped when they had not come
    sim.det.counted(0.45)
    assert missed > 0.45 and sim.det.tick(0.80) == [] and sim.det.blamed is None
    if frames:
        sim.det.traffic("eth0", 0.80)
    sim.det.counted(0.80)
    out = sim.det.tick(0.85)
    if frames:
        assert failovers(out) == [] and sim.det.state() == {"eth0": "active", "eth1": "failed (beacon)"}
    else:
        [fo] = failovers(out)
        assert (fo.old, fo.new, fo.cause, fo.ambiguous) == ("eth0", "eth1", "beacon", True)
