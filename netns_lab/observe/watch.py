"""`nlab watch`: firewall verdicts, mirrored packets and NIC-team events of a running lab, merged
into one stream.

Sources: the verdict events of every host's NIC firewall and the team monitors' events, as a
subscriber of the lab's event hub (`subscription.Subscription`, the same verdict records as
`nlab fw events`), and, for each mirror session,
the copies that reach its destination (`capture.Capture`). Records come out as plain dicts, the
JSON schema of `nlab watch --json`:

- `{"kind": "verdict", <exactly the fields of nlab fw events --json>}`
- `{"kind": "mirror", "time", "session", "direction", "summary", "proto", "src", "dst", "sport",
  "dport", "icmp_type", "icmp_id", "len", "vlan", "info"}` (`direction` seen from the mirrored
  VM; fields encoded as netns_lab.encoding says)
- `{"kind": "migration", "lab", "vm", "from", "to", "phase", "ms", "time"}`: a phase of a VM's
  migration (`nlab migrate`), followed in the lab's `migration.events`
- `{"kind": "team", ...}`, `{"kind": "team-member", ...}`, `{"kind": "team-error", ...}`: a team
  moved, a member failed or recovered, a move failed (`netns_lab.features.team.events`)
- `{"kind": "lost", "time", "source": "firewall"|"capture", "where", "count", "total"}` whenever
  this watch missed something: events the kernel could not queue while it was subscribed or
  that its hub queue had to drop, copies its socket had to drop.

A copy says which session made it: the skb->mark a capture on the analyzer's vSwitch port reads,
or the trailer of an encapsulated copy; the session's id is looked up in the lab's mirror ids.

One thread, one `poll()` over the hub connection and the capture sockets. Threads (one per source
feeding a queue) would buy nothing here: every source is a non-blocking fd, what arrived in one
tick is put in time order before it is printed (the pcap is written at the same moment, so it
holds exactly the mirror lines), Ctrl-C lands in one place, shutdown is immediate, and the GIL
would serialise the decoding anyway.
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from netns_lab import encoding
from netns_lab.features.migration import events as migration_events
from netns_lab.features.team import events as team_events
from netns_lab.lab import eventhub, fanout
from netns_lab.lab.fanout import lost_record
from netns_lab.lab.running import RunningLab
from netns_lab.observe import pktdecode, subscription
from netns_lab.observe.capture import DEFAULT_RCVBUF, Capture, Frame, PcapWriter

log = logging.getLogger(__name__)

LOSS_CHECK_S = 1.0  # how often the loss counters are read (a few map lookups and getsockopts)
TICK_MS = 200


class TapLike(Protocol):
    """What `netns_lab.features.mirror.plan.Tap` provides (the contract with the mirroring module)."""

    session: str
    namespace: str
    ifname: str
    sources: tuple[str, ...]
    encapsulated: bool
    marked: bool


def resolve_taps(lab: str, session: str | None) -> list[TapLike]:
    """The taps of every mirror session of the lab, or of the one named (KeyError if unknown)."""
    from netns_lab.features.mirror import live as mirror_live

    return list(mirror_live.taps(lab, session))


@dataclass(frozen=True)
class Filter:
    """What the user asked to see.

    VMs: verdicts of those VMs, copies of sessions that mirror one of them. `denied`: only
    denials among verdicts, and no copies unless a session is named. `mirror`: only that
    session's copies, and no verdicts unless VMs are named too. `team`: the team events of that
    team ("": of every team), and neither verdicts nor copies unless VMs, `denied` or a session
    are named too. Without any of these: everything, team events included.
    """

    vms: frozenset[str] = frozenset()
    denied: bool = False
    mirror: str | None = None
    team: str | None = None

    @property
    def wants_verdicts(self) -> bool:
        return bool(self.vms) or (self.mirror is None and (self.team is None or self.denied))

    @property
    def wants_mirrors(self) -> bool:
        return self.mirror is not None or (not self.denied and (self.team is None or bool(self.vms)))

    @property
    def wants_teams(self) -> bool:
        return self.team is not None or (not self.vms and not self.denied and self.mirror is None)

    def hub_filter(self) -> fanout.Filter:
        """What to ask the event hub for."""
        teams = None if not self.wants_teams else frozenset({self.team} if self.team else ())
        return fanout.Filter(self.vms, self.denied, self.wants_verdicts, teams)

    def keep_verdict(self, ev: dict[str, Any]) -> bool:
        return (not self.denied or ev["verdict"] == "deny") and (not self.vms or ev["vm"] in self.vms)

    def keep_tap(self, tap: TapLike) -> bool:
        if self.mirror is not None and tap.session != self.mirror:
            return False
        return not self.vms or bool(self.vms & set(tap.sources))


def direction(d: pktdecode.Decoded, macs: frozenset[str]) -> str:
    """`out` if the mirrored VM sent it, `in` if it was sent to it (or to a group), `?` otherwise."""
    if d.src_mac in macs:
        return "out"
    if d.dst_mac in macs or (d.dst_mac and int(d.dst_mac[:2], 16) & 1):
        return "in"
    return "?"


def mirror_record(session: str, frame: Frame, d: pktdecode.Decoded, way: str) -> dict[str, Any]:
    return {
        "kind": "mirror",
        "time": round(frame.time_ns / 1e9, 6),
        "session": session,
        "direction": way,
        "summary": d.summary(),
        "proto": d.proto,
        "src": d.src,
        "dst": d.dst,
        **encoding.flow_fields(d.proto, d.sport, d.dport, d.icmp_type, d.icmp_id),
        "len": frame.wire_len,
        "vlan": d.vlans[0] if d.vlans else None,
        "info": d.info,
    }


DIRECTIONS = {1: "out", 2: "in"}  # NLAB_MIRROR_DIR_* in a copy's mark and trailer
SessionName = Callable[[int], "str | None"]


def mirrored(
    taps: list[TapLike],
    macs: dict[str, frozenset[str]],
    frame: Frame,
    decapsulate: Any = None,
    name_of: SessionName | None = None,
) -> tuple[dict[str, Any], Frame] | None:
    """The record of a frame that reached a destination shared by `taps`, and the frame to keep
    (the inner one for an encapsulated tap); None if it is not a mirror copy, or the copy of a
    session that is not watched here."""
    sid, way = None, None
    if frame.mark:
        sid, way = frame.mark & 0xFF, DIRECTIONS.get(frame.mark >> 8 & 3)
    elif taps[0].encapsulated and decapsulate is not None:
        inner = decapsulate(frame.data)
        if inner is None:
            return None  # not a mirror copy (the analyzer's network carries other traffic too)
        sid, way, data = inner
        frame = Frame(frame.time_ns, data, len(data), None)
    d = pktdecode.decode(frame.data)
    if sid is not None and name_of is not None:  # the copy says whose it is
        tap = next((t for t in taps if t.session == name_of(sid)), None)
        if tap is None:
            return None
    else:  # a capture without marks: the session whose VM the frame concerns
        tap = next((t for t in taps if d.src_mac in macs[t.session] or d.dst_mac in macs[t.session]), taps[0])
    return mirror_record(tap.session, frame, d, way or direction(d, macs[tap.session])), frame


@dataclass
class Destination:
    """One capture socket and the sessions whose copies arrive on it."""

    capture: Capture
    taps: list[TapLike]
    macs: dict[str, frozenset[str]]  # session -> MACs of its source VMs
    reported_drops: int = 0


@dataclass
class Stats:
    counts: Counter[str] = field(default_factory=Counter)
    events_lost: int = 0
    copies_dropped: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        c = self.counts
        seconds = time.monotonic() - self.started
        moved = f", {c['migration']} migration phases" if c["migration"] else ""
        teams = f", {c['team']} team events" if c["team"] else ""
        return (
            f"{c['allow'] + c['deny'] + c['mirror'] + c['migration'] + c['team']} lines in {seconds:.1f} s: "
            f"{c['allow']} allowed, {c['deny']} denied, {c['mirror']} mirrored{moved}{teams}; lost: "
            f"{self.events_lost} firewall events, {self.copies_dropped} mirrored copies"
        )


def _counted(record: dict[str, Any]) -> str:
    """The count of `Stats` a shown record adds to."""
    if record["kind"] == "verdict":
        return str(record["verdict"])
    return "team" if record["kind"] in team_events.WATCHED else str(record["kind"])


class Watch:
    """Opened sources of one lab; `stream()` yields records until count or duration is reached."""

    def __init__(
        self,
        live: RunningLab,
        taps: Iterable[TapLike],
        flt: Filter,
        pcap: PcapWriter | None = None,
        rcvbuf: int | None = DEFAULT_RCVBUF,
        queue: int | None = None,
    ) -> None:
        """`rcvbuf`: the capture sockets' buffer; `queue`: this watch's queue at the event hub."""
        self.live, self.flt, self.pcap = live, flt, pcap
        self.stats = Stats()
        self._stack = contextlib.ExitStack()
        self._decapsulate: Any = None
        self._names: dict[int, str] = {}
        self._firewall_lost: list[dict[str, Any]] = []  # the hub's loss records, shown by losses()
        self.migrations = migration_events.Follower(live.lab)
        try:
            self.follower = (
                self._stack.enter_context(subscription.Subscription(live.lab, flt.hub_filter(), queue))
                if flt.wants_verdicts or flt.wants_teams
                else None
            )
            chosen = [t for t in taps if flt.keep_tap(t)] if flt.wants_mirrors else []
            self.destinations = self._open(chosen, rcvbuf)
        except BaseException:
            self._stack.close()
            raise

    def _open(self, taps: list[TapLike], rcvbuf: int | None) -> list[Destination]:
        macs_of = {v.name: frozenset(n.mac.lower() for n in v.nics) for v in self.live.topo.vms}
        grouped: dict[tuple[str, str], list[TapLike]] = {}
        for tap in taps:
            grouped.setdefault((tap.namespace, tap.ifname), []).append(tap)
        found = []
        for (namespace, ifname), group in grouped.items():
            capture = Capture(namespace, ifname, rcvbuf, marked=any(t.marked for t in group))
            self._stack.callback(capture.close)
            macs = {t.session: frozenset().union(*(macs_of.get(s, ()) for s in t.sources)) for t in group}
            found.append(Destination(capture, group, macs))
        if any(t.encapsulated for t in taps):
            from netns_lab.features.mirror import plan as mirror

            self._decapsulate = mirror.decapsulate
        return found

    def session_name(self, sid: int) -> str | None:
        """The session of a mirror id (read again for a session added since the watch began)."""
        if sid not in self._names:
            from netns_lab.features.mirror import live as mirror_live

            self._names = {i: name for name, i in mirror_live.read_ids(self.live.lab).items()}
        return self._names.get(sid)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop ------------------------------------------------------------------------------
    def stream(self, count: int | None = None, duration: float | None = None) -> Iterator[dict[str, Any]]:
        """Records as they come; stops after `count` verdict/mirror records or `duration` seconds."""
        deadline = None if duration is None else time.monotonic() + duration
        poller = select.poll()
        if self.follower is not None:
            poller.register(self.follower.fileno(), select.POLLIN)
        by_fd = {dest.capture.fileno(): dest for dest in self.destinations}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        emitted, next_check = 0, time.monotonic() + LOSS_CHECK_S
        while True:
            wait = TICK_MS
            if deadline is not None:
                wait = max(0, min(TICK_MS, int((deadline - time.monotonic()) * 1000)))
            ready = {fd for fd, _ in poller.poll(wait)}
            for record, frame in self._drain(ready, by_fd):
                if frame is not None and self.pcap is not None:
                    self.pcap.write(frame.time_ns, frame.data, frame.wire_len)
                yield record
                self.stats.counts[_counted(record)] += 1
                emitted += 1
                if count is not None and emitted >= count:
                    yield from self.finish(verdicts=False)
                    return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                yield from self.finish()
                return
            if now >= next_check:
                yield from self.losses()
                next_check = now + LOSS_CHECK_S

    def _drain(
        self, ready: set[int], by_fd: dict[int, Destination]
    ) -> list[tuple[dict[str, Any], Frame | None]]:
        """What arrived since the last tick, in time order across sources (copies with their frame,
        written to the pcap only when emitted: the pcap holds exactly the mirror lines)."""
        found: list[tuple[dict[str, Any], Frame | None]] = []
        if self.follower is not None:
            self._take(self.follower.read(0), found)  # cheap when empty: read each tick
        moves = self.migrations.read()
        if self.flt.team is None or self.flt.vms:  # `--team` alone: team events only
            found += [(r, None) for r in moves if not self.flt.vms or r["vm"] in self.flt.vms]
        for fd in ready & by_fd.keys():
            dest = by_fd[fd]
            for frame in dest.capture.read():
                copy = mirrored(dest.taps, dest.macs, frame, self._decapsulate, self.session_name)
                if copy is not None:
                    found.append(copy)
        return sorted(found, key=lambda pair: pair[0]["time"])

    def _take(self, records: list[dict[str, Any]], found: list[tuple[dict[str, Any], Frame | None]]) -> None:
        for record in records:
            if record["kind"] == "lost":
                self._firewall_lost.append(record)
            elif record["kind"] in team_events.WATCHED:
                found.append((record, None))  # the hub kept only the teams asked for
            elif self.flt.keep_verdict(record):
                found.append((record, None))

    def finish(self, verdicts: bool = True) -> Iterator[dict[str, Any]]:
        """The verdicts the hub still had for us (`verdicts`: at the end of a duration, they came
        within it), then every loss up to now, the hub's included."""
        if self.follower is not None:
            found: list[tuple[dict[str, Any], Frame | None]] = []
            with contextlib.suppress(eventhub.HubGone):
                self._take(self.follower.sync(2.0), found)
            for record, _ in found if verdicts else ():
                self.stats.counts[_counted(record)] += 1
                yield record
        yield from self.losses()

    def losses(self) -> Iterator[dict[str, Any]]:
        """A `lost` record for each loss since the last look: the hub's, then the captures'."""
        for record in self._firewall_lost:
            self.stats.events_lost += record["count"]
            yield record
        self._firewall_lost = []
        for dest in self.destinations:
            drops = dest.capture.drops()
            if drops > dest.reported_drops:
                where = f"{dest.capture.namespace}/{dest.capture.ifname}"
                yield lost_record("capture", where, drops - dest.reported_drops, drops)
                self.stats.copies_dropped += drops - dest.reported_drops
                dest.reported_drops = drops
