"""`nlab watch`: firewall verdicts and mirrored packets of a running lab, merged into one stream.

Sources: the verdict events of every host's NIC firewall (`fwlive.EventFollower`, the same
decoded events as `nlab fw events`) and, for each mirror session, the copies that reach its
destination interface (`capture.Capture`). Records come out as plain dicts, the JSON schema of
`nlab watch --json`:

- `{"kind": "verdict", <exactly the fields of nlab fw events --json>}`
- `{"kind": "mirror", "time", "session", "direction", "summary", "proto", "src", "dst", "sport",
  "dport", "icmp_type", "icmp_id", "len", "vlan", "info"}` (`direction` seen from the mirrored
  VM; fields encoded as netns_lab.encoding says)
- `{"kind": "lost", "time", "source": "firewall"|"capture", "where", "count", "total"}` whenever
  a loss counter moves: events the kernel could not queue, copies the socket had to drop.

One thread, one `poll()` over the ring buffers' epoll fd and the capture sockets. Threads (one
per source feeding a queue) would buy nothing here: every source is a non-blocking fd, what
arrived in one tick is put in time order before it is printed (the pcap is written at the same
moment, so it holds exactly the mirror lines), Ctrl-C lands in one place, shutdown is immediate,
and the GIL would serialise the decoding anyway.
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from netns_lab import encoding, pktdecode
from netns_lab.capture import DEFAULT_RCVBUF, Capture, Frame, PcapWriter
from netns_lab.fwlive import LiveFirewall

log = logging.getLogger(__name__)

LOSS_CHECK_S = 1.0  # how often the loss counters are read (a few map lookups and getsockopts)
TICK_MS = 200


class TapLike(Protocol):
    """What `netns_lab.mirror.Tap` provides (the contract with the mirroring module)."""

    session: str
    namespace: str
    ifname: str
    sources: tuple[str, ...]
    encapsulated: bool


class MirrorUnavailable(Exception):
    """This build has no mirror sessions (netns_lab.mirror is missing)."""


def resolve_taps(lab: str, session: str | None) -> list[TapLike]:
    """The taps of every mirror session of the lab, or of the one named (KeyError if unknown)."""
    try:
        from netns_lab import mirror  # lands with the mirroring issue; watch works without it
    except ImportError as err:
        if session is not None:
            raise MirrorUnavailable(str(err)) from None
        log.info("no mirror sessions in this build: verdicts only")
        return []
    return list(mirror.taps(lab, session))


@dataclass(frozen=True)
class Filter:
    """What the user asked to see.

    VMs: verdicts of those VMs, copies of sessions that mirror one of them. `denied`: only
    denials among verdicts, and no copies unless a session is named. `mirror`: only that
    session's copies, and no verdicts unless VMs are named too.
    """

    vms: frozenset[str] = frozenset()
    denied: bool = False
    mirror: str | None = None

    @property
    def wants_verdicts(self) -> bool:
        return self.mirror is None or bool(self.vms)

    @property
    def wants_mirrors(self) -> bool:
        return not self.denied or self.mirror is not None

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


def lost_record(source: str, where: str, count: int, total: int) -> dict[str, Any]:
    return {
        "kind": "lost",
        "time": round(time.time(), 6),
        "source": source,
        "where": where,
        "count": count,
        "total": total,
    }


def mirrored(
    taps: list[TapLike], macs: dict[str, frozenset[str]], frame: Frame, decapsulate: Any = None
) -> tuple[dict[str, Any], Frame] | None:
    """The record of a frame that reached a destination shared by `taps`, and the frame to keep
    (the inner one for an encapsulated tap); None if it is not a mirror copy."""
    tap, way = taps[0], None
    if tap.encapsulated and decapsulate is not None:
        inner = decapsulate(frame.data)
        if inner is None:
            return None  # not a mirror copy (the analyzer's network carries other traffic too)
        _sid, way, data = inner
        frame = Frame(frame.time_ns, data, len(data), None)
    d = pktdecode.decode(frame.data)
    for candidate in taps:  # several sessions may share a destination: the one whose VM it concerns
        if d.src_mac in macs[candidate.session] or d.dst_mac in macs[candidate.session]:
            tap = candidate
            break
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
        return (
            f"{c['allow'] + c['deny'] + c['mirror']} lines in {seconds:.1f} s: {c['allow']} allowed, "
            f"{c['deny']} denied, {c['mirror']} mirrored; lost: {self.events_lost} firewall events, "
            f"{self.copies_dropped} mirrored copies"
        )


class Watch:
    """Opened sources of one lab; `stream()` yields records until count or duration is reached."""

    def __init__(
        self,
        live: LiveFirewall,
        taps: Iterable[TapLike],
        flt: Filter,
        pcap: PcapWriter | None = None,
        rcvbuf: int | None = DEFAULT_RCVBUF,
    ) -> None:
        self.live, self.flt, self.pcap = live, flt, pcap
        self.stats = Stats()
        self._stack = contextlib.ExitStack()
        self._decapsulate: Any = None
        try:
            self.follower = self._stack.enter_context(live.follow()) if flt.wants_verdicts else None
            chosen = [t for t in taps if flt.keep_tap(t)] if flt.wants_mirrors else []
            self.destinations = self._open(chosen, rcvbuf)
        except BaseException:
            self._stack.close()
            raise
        self._lost_base = live.events_lost()  # losses before we came are not ours to report

    def _open(self, taps: list[TapLike], rcvbuf: int | None) -> list[Destination]:
        macs_of = {v.name: frozenset(n.mac.lower() for n in v.nics) for v in self.live.topo.vms}
        grouped: dict[tuple[str, str], list[TapLike]] = {}
        for tap in taps:
            grouped.setdefault((tap.namespace, tap.ifname), []).append(tap)
        found = []
        for (namespace, ifname), group in grouped.items():
            capture = Capture(namespace, ifname, rcvbuf)
            self._stack.callback(capture.close)
            macs = {t.session: frozenset().union(*(macs_of.get(s, ()) for s in t.sources)) for t in group}
            found.append(Destination(capture, group, macs))
        if any(t.encapsulated for t in taps):
            from netns_lab import mirror

            self._decapsulate = mirror.decapsulate
        return found

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
                self.stats.counts[record["verdict"] if record["kind"] == "verdict" else "mirror"] += 1
                emitted += 1
                if count is not None and emitted >= count:
                    yield from self.losses()
                    return
            now = time.monotonic()
            if now >= next_check or (deadline is not None and now >= deadline):
                yield from self.losses()
                next_check = now + LOSS_CHECK_S
            if deadline is not None and now >= deadline:
                return

    def _drain(
        self, ready: set[int], by_fd: dict[int, Destination]
    ) -> list[tuple[dict[str, Any], Frame | None]]:
        """What arrived since the last tick, in time order across sources (copies with their frame,
        written to the pcap only when emitted: the pcap holds exactly the mirror lines)."""
        found: list[tuple[dict[str, Any], Frame | None]] = []
        if self.follower is not None:
            for ev in self.follower.read(0):  # cheap when empty: polled each tick, not only when ready
                if self.flt.keep_verdict(ev):
                    found.append(({"kind": "verdict", **ev}, None))
        for fd in ready & by_fd.keys():
            dest = by_fd[fd]
            for frame in dest.capture.read():
                copy = mirrored(dest.taps, dest.macs, frame, self._decapsulate)
                if copy is not None:
                    found.append(copy)
        return sorted(found, key=lambda pair: pair[0]["time"])

    def losses(self) -> Iterator[dict[str, Any]]:
        """A `lost` record for each counter that moved since the last look."""
        lost = self.live.events_lost() - self._lost_base if self.follower is not None else 0
        if lost > self.stats.events_lost:
            yield lost_record("firewall", "ring buffer", lost - self.stats.events_lost, lost)
            self.stats.events_lost = lost
        for dest in self.destinations:
            drops = dest.capture.drops()
            if drops > dest.reported_drops:
                where = f"{dest.capture.namespace}/{dest.capture.ifname}"
                yield lost_record("capture", where, drops - dest.reported_drops, drops)
                self.stats.copies_dropped += drops - dest.reported_drops
                dest.reported_drops = drops
