"""Fan-out of a lab's verdict events to its subscribers: filters, queues, losses, aggregation.

Pure logic (no sockets, no kernel): the event hub (`netns_lab.lab.eventhub`) feeds it the decoded
events of every host and the kernel's ring-buffer losses, and sends each subscriber what its
queue holds.

- Each subscriber has its own filter and its own bounded queue. An event that finds the queue
  full is dropped for that subscriber only and counted; the count reaches it as a `lost` record
  as soon as its queue has room again.
- Events the kernel could not queue (its ring buffer was full) are reported to every subscriber
  present when the hub saw the kernel's counter move: they fell in its window, whatever its
  filter (nobody knows what the lost events were).
- A subscriber's `lost` = the events it did not get since it subscribed: kernel losses in its
  window plus its own queue's drops. Never 0 while something was missed.
- Team records (a team's member failed or recovered, the team moved) are rare and go to every
  subscriber that asked for them, whatever its queue holds.
- Repeated denials of one flow are aggregated before the fan-out: the first is sent at once
  (`count: 1`), the others that follow within `AGGREGATE_WINDOW_S` of it make one record when the
  window closes, `count` saying how many packets it stands for (the fields are those of the last).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

AGGREGATE_WINDOW_S = 1.0
MAX_WINDOWS = 16384  # flows aggregated at once; beyond it denials go out one by one
DEFAULT_QUEUE = 32768  # records that may wait for one subscriber (its queue holds references)
MAX_QUEUE = 1 << 20
FLOW_FIELDS = (
    "port",
    "direction",
    "reason",
    "rule",
    "proto",
    "src",
    "dst",
    "sport",
    "dport",
    "icmp_type",
    "icmp_id",
)

Record = dict[str, Any]


def lost_record(source: str, where: str, count: int, total: int) -> Record:
    """`count` items lost at `where` just now; `total` of this reader since it started."""
    return {
        "kind": "lost",
        "time": round(time.time(), 6),
        "source": source,
        "where": where,
        "count": count,
        "total": total,
    }


@dataclass(frozen=True)
class Filter:
    """Which records a subscriber wants: verdicts (unless `verdicts` is false) of `vms` (all:
    empty), only denials if `denied`; team records (`netns_lab.features.team.events`) of the
    teams named in `teams` (all: empty; none: None, the default)."""

    vms: frozenset[str] = frozenset()
    denied: bool = False
    verdicts: bool = True
    teams: frozenset[str] | None = None

    def keep(self, ev: Record) -> bool:
        return (
            self.verdicts
            and (not self.denied or ev["verdict"] == "deny")
            and (not self.vms or ev["vm"] in self.vms)
        )

    def keep_team(self, record: Record) -> bool:
        return self.teams is not None and (not self.teams or record["team"] in self.teams)

    def doc(self) -> Record:
        doc: Record = {"vms": sorted(self.vms), "denied": self.denied}
        if not self.verdicts:
            doc["verdicts"] = False
        if self.teams is not None:
            doc["teams"] = sorted(self.teams)
        return doc

    @classmethod
    def from_doc(cls, doc: Any) -> Filter:
        """ValueError naming the field for anything but {"vms": [names], "denied": bool,
        "verdicts": bool, "teams": [names] | null}."""
        vms, denied = doc.get("vms", []), doc.get("denied", False)
        verdicts, teams = doc.get("verdicts", True), doc.get("teams")
        if not isinstance(vms, list) or not all(isinstance(v, str) for v in vms):
            raise ValueError(f"vms: {vms!r} is not a list of VM names")
        for name, value in (("denied", denied), ("verdicts", verdicts)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: {value!r} is not true or false")
        if teams is not None and (not isinstance(teams, list) or not all(isinstance(t, str) for t in teams)):
            raise ValueError(f"teams: {teams!r} is not a list of team names")
        return cls(frozenset(vms), denied, verdicts, None if teams is None else frozenset(teams))


@dataclass
class Subscriber:
    """One reader: its filter, its queue (at most `limit` events waiting) and its losses."""

    flt: Filter
    limit: int = DEFAULT_QUEUE
    since_ns: int = 0  # events older than this (the dataplane's clock) came before it
    since_time: float = field(default_factory=time.time)  # the same for team records (wall clock)
    queue: deque[Record] = field(default_factory=deque)
    queued: int = 0  # events in `queue` (lost and sync records do not count against the limit)
    delivered: int = 0
    dropped: int = 0  # events its full queue refused
    kernel_lost: int = 0  # ring-buffer losses in its window
    _unreported: int = 0

    @property
    def lost(self) -> int:
        return self.dropped + self.kernel_lost

    def offer(self, ev: Record, time_ns: int) -> None:
        if time_ns < self.since_ns or not self.flt.keep(ev):
            return
        if self.queued >= self.limit:
            self.dropped += 1
            self._unreported += 1
            return
        self.report_drops()
        self.queue.append(ev)
        self.queued += 1
        self.delivered += 1

    def offer_team(self, record: Record) -> None:
        """A team record: rare, so never refused (it does not count against the limit)."""
        if record["time"] >= self.since_time and self.flt.keep_team(record):
            self.queue.append(record)

    def report_drops(self, now: bool = False) -> None:
        """A `lost` record for the drops not yet reported, once the queue has room for events
        (`now`: at once, for a subscriber that asked for everything up to now)."""
        if self._unreported and (now or self.queued < self.limit):
            self.queue.append(lost_record("firewall", "subscriber queue", self._unreported, self.lost))
            self._unreported = 0

    def kernel_loss(self, count: int) -> None:
        if not self.flt.verdicts:
            return  # the lost events were verdicts, which it did not ask for
        self.kernel_lost += count
        self.queue.append(lost_record("firewall", "ring buffer", count, self.lost))

    def take(self, most: int) -> list[Record]:
        """Up to `most` records to send, oldest first."""
        taken = []
        while self.queue and len(taken) < most:
            record = self.queue.popleft()
            if record["kind"] == "verdict":
                self.queued -= 1
            taken.append(record)
        self.report_drops()
        return taken


@dataclass
class _Window:
    opened: float
    count: int = 0
    last: tuple[Record, int] | None = None


class Aggregator:
    """Repeated denials of a flow within `window` seconds of its first become one record."""

    def __init__(self, window: float = AGGREGATE_WINDOW_S, capacity: int = MAX_WINDOWS) -> None:
        self.window, self.capacity = window, capacity
        self._open: OrderedDict[tuple[Any, ...], _Window] = OrderedDict()  # oldest window first

    def add(self, ev: Record, time_ns: int, now: float) -> list[tuple[Record, int]]:
        """The records to send now (with their times): those of the windows closed by `now`, then
        this event's own unless it joins an open window."""
        found = self.expired(now)
        if ev["verdict"] != "deny":
            return [*found, ({**ev, "count": 1}, time_ns)]
        key = tuple(ev[f] for f in FLOW_FIELDS)
        w = self._open.get(key)
        if w is not None:
            w.count += 1
            w.last = (ev, time_ns)
            return found
        if len(self._open) < self.capacity:
            self._open[key] = _Window(now)
        return [*found, ({**ev, "count": 1}, time_ns)]

    def expired(self, now: float) -> list[tuple[Record, int]]:
        """The records of the windows that closed by `now` (those that aggregated something)."""
        found = []
        while self._open:
            key, w = next(iter(self._open.items()))
            if now - w.opened < self.window:
                break
            del self._open[key]
            if w.last is not None:
                ev, time_ns = w.last
                found.append(({**ev, "count": w.count}, time_ns))
        return found


class Fanout:
    """The subscribers of one lab and what reaches each."""

    def __init__(self, aggregator: Aggregator | None = None) -> None:
        self.aggregator = aggregator or Aggregator()
        self.subscribers: dict[int, Subscriber] = {}

    def join(self, key: int, flt: Filter, limit: int = DEFAULT_QUEUE, since_ns: int = 0) -> Subscriber:
        if not 1 <= limit <= MAX_QUEUE:
            raise ValueError(f"queue: {limit} is not in 1..{MAX_QUEUE}")
        sub = self.subscribers[key] = Subscriber(flt, limit, since_ns)
        return sub

    def leave(self, key: int) -> None:
        self.subscribers.pop(key, None)

    def event(self, ev: Record, time_ns: int, now: float) -> None:
        """A decoded verdict event (the fields of `nlab fw events --json`) as it came."""
        for record, at in self.aggregator.add(ev, time_ns, now):
            self._fan(record, at)

    def tick(self, now: float) -> None:
        for record, time_ns in self.aggregator.expired(now):
            self._fan(record, time_ns)

    def team(self, record: Record) -> None:
        """A team monitor's record (`netns_lab.features.team.events.watch_record`)."""
        for sub in self.subscribers.values():
            sub.offer_team(record)

    def kernel_lost(self, count: int) -> None:
        for sub in self.subscribers.values():
            sub.kernel_loss(count)

    def _fan(self, record: Record, time_ns: int) -> None:
        verdict = {"kind": "verdict", **record}
        for sub in self.subscribers.values():
            sub.offer(verdict, time_ns)
