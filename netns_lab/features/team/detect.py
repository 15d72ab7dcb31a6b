"""Failure detection and failover decisions of one NIC team: a pure state machine.

Inputs, each with a monotonic timestamp in seconds: carrier changes of a member (netlink link
events), beacon arrivals (which member sent it, which member received it), other frames received
on a member (evidence that its receive path works), ARP replies through a member, and clock
ticks. Outputs: a member's health changing (:class:`MemberChange`, with the cause that failed
it) and the team moving to another member (:class:`Failover`). No I/O, no clock: the monitor
feeds it, tests drive it with made-up times.

A member is healthy when none of the configured detectors fails it:
- ``carrier`` (detection ``link``): its carrier is down.
- ``beacon``: it has received no beacon from any other member with carrier for ``beacon_miss``
  intervals (plus a tenth of an interval of grace for scheduling jitter), judged as below.
- ``arp`` (an ARP target is set): the active member has had no ARP reply for ``beacon_miss``
  intervals. Standby members drop everything but beacons, so only the active one is probed.

Who is to blame for missing beacons. Every member broadcasts a beacon each interval and every
other member should hear it. When member X hears nobody:
1. three or more members, and two others still hear each other: the network is alive and the
   silence is X's: X fails;
2. someone has heard X steadily for a whole window (one-way loss): X, the member that stopped
   receiving, fails. Its own beacons get out, so either its receive side or every peer's
   transmit side is broken; the first is one fault, the second several, so X is blamed. This
   rule cannot tell them apart. (Steadily: when a silence heals, one direction comes back a
   moment before the other, which is not a one-way loss;)
3. nobody hears anybody (always the case when a path between two members breaks both ways):
   beacons cannot say which path broke. With an ARP target, beacons blame nobody and the ARP
   probe through the active member decides. Without one the decision is taken once, when the
   silence begins. Members no peer has heard since their carrier came up (or since the monitor
   started) are blamed first: a path that has just come back, or was never seen to work, is the
   likelier one not to forward yet. Otherwise, if the active member received other frames after
   the first beacon missed (the last one heard plus an interval and the grace: frames before
   that may predate the break; when the counters were last read before that moment, the decision
   waits for the next read), its receive
   path works and the standby members are blamed; otherwise the active member is blamed (with
   any member beacons had failed before the silence spread) and the team moves (the event says
   ``ambiguous``). The blame stays until beacons flow again, so the
   team does not move back and forth over the same silence. What this cannot tell apart: a
   standby path that broke while the active one carried no traffic at all is taken for a broken
   active path, and the team moves onto the broken path (traffic was idle, and the next frame
   through it, or the heal, shows it). Configure ``arp_target`` to avoid that guess.

Failover is immediate: the first healthy member in ``members`` order takes over, with the cause
that failed the active one and the detection latency (from the last evidence of health: the
carrier event, the last beacon or ARP reply heard). When no member is healthy the team stays on
its active member (the dataplane keeps forwarding there); the first member to recover takes over.
Failback (policy ``failback``): an earlier member that has stayed healthy for its hold-down
takes over again. The hold-down starts at ``hold_down`` and doubles (up to ``MAX_HOLD_FACTOR``
times) each time the member fails again before twice its hold-down has passed since it
recovered, so a member flapping at 10 Hz costs one failover and, once it is stable, one
failback, never a flip per flap.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Cause = Literal["carrier", "beacon", "arp", "failback"]
GRACE = 0.1  # of a beacon interval: a beacon late by scheduling jitter is not yet missed
MAX_HOLD_FACTOR = 16


@dataclass(frozen=True)
class Settings:
    """A team's detection settings; times in seconds."""

    name: str
    members: tuple[str, ...]
    failback: bool = True
    link: bool = True
    beacon: bool = False
    arp: bool = False
    beacon_interval: float = 1.0
    beacon_miss: int = 3
    hold_down: float = 1.0

    @property
    def window(self) -> float:
        """How long without a beacon (or ARP reply) fails a member."""
        return self.beacon_interval * (self.beacon_miss + GRACE)


@dataclass(frozen=True)
class MemberChange:
    team: str
    member: str
    healthy: bool
    cause: Cause | None  # what failed it; None when it recovered
    t: float


@dataclass(frozen=True)
class Failover:
    team: str
    old: str
    new: str
    cause: Cause
    latency: float  # seconds from the last evidence of health to the decision (failback: hold-down)
    t: float
    ambiguous: bool = False


Output = MemberChange | Failover


@dataclass
class _Member:
    carrier: bool
    since: float  # healthy since (or failed since)
    hold: float
    failure: Cause | None = None
    recovered_at: float | None = None
    last_traffic: float = float("-inf")
    last_arp: float = 0.0
    heard: dict[str, float] = field(default_factory=dict)  # sender -> last beacon from it
    resumed: dict[str, float] = field(default_factory=dict)  # sender -> first beacon after a gap
    proven: bool = False  # a peer heard it since its carrier came up (or since we started)


class TeamDetector:
    """One team's state: which members are healthy, which one is active."""

    def __init__(
        self,
        settings: Settings,
        now: float,
        active: str | None = None,
        carriers: dict[str, bool] | None = None,
    ) -> None:
        """``active``: the member the dataplane forwards through now (a restarted monitor reads it
        and keeps it); ``carriers``: the members' carrier now (default: up)."""
        self.s = settings
        self.active = active if active is not None else settings.members[0]
        carriers = carriers or {}
        self.m = {
            name: _Member(carriers.get(name, True), now, settings.hold_down, last_arp=now)
            for name in settings.members
        }
        for name, member in self.m.items():
            member.heard = {other: now for other in settings.members if other != name}
            member.resumed = dict.fromkeys(member.heard, float("-inf"))
        self.blamed: frozenset[str] | None = None  # sticky blame of an ambiguous silence
        self.counted_since: float | None = None  # frames after this have all been reported
        self._ambiguous_failure = False
        for name, member in self.m.items():
            member.failure = self._failure(name, now)

    # -- inputs ------------------------------------------------------------------------------
    def link(self, member: str, up: bool, t: float) -> list[Output]:
        m = self.m[member]
        if m.carrier == up:
            return self.tick(t)
        m.carrier = up
        if up:  # give it (and its peers) a full window before its beacons are judged
            m.heard = dict.fromkeys(m.heard, t)
            for other in self.m.values():
                if member in other.heard:
                    other.heard[member] = t
            m.last_arp = t
            m.proven = False
        return self.tick(t)

    def beacon(self, sender: str, receiver: str, t: float) -> list[Output]:
        heard = self.m[receiver].heard if receiver in self.m else {}
        if sender in heard:  # a beacon of another team's member says nothing about ours
            if t - heard[sender] >= self.s.window:
                self.m[receiver].resumed[sender] = t
            heard[sender] = t
            self.m[sender].proven = True
        return self.tick(t)

    def traffic(self, member: str, t: float) -> list[Output]:
        """Frames other than our beacons arrived on ``member`` after ``t``: its receive path
        worked then."""
        self.m[member].last_traffic = t
        return []

    def counted(self, since: float) -> None:
        """Every member's frames that arrived after ``since`` have been reported (``traffic``):
        a monitor that reads counters from time to time says so after each read."""
        self.counted_since = since if self.counted_since is None else max(self.counted_since, since)

    def arp_reply(self, member: str, t: float) -> list[Output]:
        self.m[member].last_arp = t
        return self.tick(t)

    def tick(self, t: float) -> list[Output]:
        """Re-judge every member at time ``t`` and decide; returns what changed."""
        self._update_blame(t)
        out: list[Output] = []
        for name, m in self.m.items():
            failure = self._failure(name, t)
            if (failure is None) != (m.failure is None):
                out.append(self._change(name, m, failure, t))
            m.failure = failure
        decision = self._decide(t)
        if decision is not None:
            out.append(decision)
        return out

    # -- queries -----------------------------------------------------------------------------
    def healthy(self, member: str) -> bool:
        return self.m[member].failure is None

    def state(self) -> dict[str, str]:
        """member -> ``active``, ``standby`` or ``failed (cause)``."""
        return {
            name: ("active" if name == self.active else "standby")
            if m.failure is None
            else f"failed ({m.failure})"
            for name, m in self.m.items()
        }

    # -- judging -----------------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        """Members whose beacons should be heard: with carrier (or all, without link detection)."""
        return [n for n, m in self.m.items() if m.carrier or not self.s.link]

    def _hears(self, receiver: str, sender: str, t: float) -> bool:
        return t - self.m[receiver].heard[sender] < self.s.window

    def _steady(self, receiver: str, sender: str, t: float) -> bool:
        """Heard, and for a whole window already."""
        return self._hears(receiver, sender, t) and t - self.m[receiver].resumed[sender] >= self.s.window

    def _any_pair(self, members: Iterable[str], t: float) -> bool:
        return any(self._hears(a, b, t) for a, b in itertools.permutations(members, 2))

    def _update_blame(self, t: float) -> None:
        """Set the blame once when a total silence begins; drop it when beacons flow again."""
        live = self._candidates()
        if not self.s.beacon or len(live) < 2 or self._any_pair(live, t):
            self.blamed = None
            return
        if self.blamed is not None or self.s.arp:
            return
        already = {n for n in live if self.m[n].failure == "beacon"}  # blamed before the silence spread
        unproven = {n for n in live if not self.m[n].proven}
        began = max(self.m[r].heard[s] for r, s in itertools.permutations(live, 2))
        # Frames are proof only once the next beacon was due and missed: the path may have broken
        # at any moment of the interval after the last beacon, and frames before that say nothing.
        missed = began + self.s.beacon_interval * (1 + GRACE)
        active_rx = self.m[self.active].last_traffic > missed
        if unproven:
            self.blamed = frozenset(unproven | already)
        elif not active_rx and self.counted_since is not None and self.counted_since < missed:
            return  # a late count (a loaded machine) does not say yet: judge at the next one
        elif active_rx and self.active in live:
            self.blamed = frozenset(n for n in live if n != self.active)
        else:
            self.blamed = frozenset({self.active, *already})
        self._ambiguous_failure = self.active in self.blamed and self.active not in already

    def _failure(self, name: str, t: float) -> Cause | None:
        m = self.m[name]
        if self.s.link and not m.carrier:
            return "carrier"
        if self.s.beacon and self._beacon_failed(name, t):
            return "beacon"
        if self.s.arp and name == self.active and t - m.last_arp >= self.s.window:
            return "arp"
        return None

    def _beacon_failed(self, name: str, t: float) -> bool:
        live = self._candidates()
        peers = [p for p in live if p != name]
        if name not in live or not peers or any(self._hears(name, p, t) for p in peers):
            return False
        if len(peers) >= 2 and self._any_pair(peers, t):
            return True
        if any(self._steady(p, name, t) for p in peers):
            return True
        return self.blamed is not None and name in self.blamed

    def _change(self, name: str, m: _Member, failure: Cause | None, t: float) -> MemberChange:
        if failure is not None:
            recently = m.recovered_at is not None and t - m.recovered_at < 2 * m.hold
            m.hold = min(m.hold * 2, self.s.hold_down * MAX_HOLD_FACTOR) if recently else self.s.hold_down
        else:
            m.recovered_at = t
        m.since = t
        return MemberChange(self.s.name, name, failure is None, failure, t)

    # -- deciding ----------------------------------------------------------------------------
    def _decide(self, t: float) -> Failover | None:
        order = self.s.members
        current = self.m[self.active]
        if current.failure is not None:
            new = next((n for n in order if n != self.active and self.m[n].failure is None), None)
            if new is None:
                return None  # nothing better: stay, the dataplane keeps the active member
            latency = t - self._evidence(self.active, current.failure, t)
            ambiguous = current.failure == "beacon" and self._ambiguous_failure
            return self._move(new, current.failure, latency, t, ambiguous)
        if not self.s.failback:
            return None
        for name in order[: order.index(self.active)]:
            m = self.m[name]
            if m.failure is None and t - m.since >= m.hold:
                return self._move(name, "failback", m.hold, t, False)
        return None

    def _move(self, new: str, cause: Cause, latency: float, t: float, ambiguous: bool) -> Failover:
        old, self.active = self.active, new
        self.m[new].last_arp = t  # the ARP probe starts on the new active member now
        return Failover(self.s.name, old, new, cause, max(latency, 0.0), t, ambiguous)

    def _evidence(self, name: str, cause: Cause, t: float) -> float:
        """When the member last showed it was healthy, for the detection latency."""
        m = self.m[name]
        if cause == "beacon":
            return max(m.heard.values(), default=t)
        if cause == "arp":
            return m.last_arp
        return m.since
