"""The team monitor of one hypervisor: watches its team members and fails over.

One process per hypervisor with teams, living in the hypervisor's namespace (so `nlab down`
ends it with the lab's other processes, also after a crash) and ending by itself once the lab's
state is gone:

    python -m netns_lab.features.team.monitor --lab nist --host hv1 --netns nist-hv1
    log: /run/netns-lab/nist/team-hv1.log   events: team-hv1.events   active members: team-hv1.json

It feeds each team's detector (:mod:`netns_lab.features.team.detect`) with carrier changes from
rtnetlink link events (RTNLGRP_LINK, no polling), beacons it sends on every member each beacon
interval and receives on every member (a packet socket sees frames before TC ingress, so the
standby's receive drop does not hide them), counts of the other frames each member receives
(kept by the kernel on a tap that stores none: they prove a member's receive path) and, with an
ARP target, ARP probes through the active member.

A failover goes through :class:`TeamActions`: flip the dataplane to the new member, flush the
bridge FDB entries learned on the old one, announce every VM MAC behind the team on the new one.
Every member change and failover is a JSON line ``{"kind": "team", ...}`` in the events file.
If the monitor dies the dataplane keeps its active member; a restarted monitor asks the actions
(or its own state file) which member is active and goes on from there instead of flipping.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from netns_lab.features.team import events, frames
from netns_lab.features.team.detect import Failover, MemberChange, Output, TeamDetector
from netns_lab.features.team.plan import Tagged, TeamPlan
from netns_lab.kernel import netns
from netns_lab.kernel.linkwatch import LinkState, LinkWatch
from netns_lab.kernel.netlink import Netlink
from netns_lab.kernel.packet import arrived, packet_socket
from netns_lab.lab import processes
from netns_lab.lab.state import state_dir

log = logging.getLogger("netns_lab.team")

MAX_TICK = 0.25  # seconds between two looks at the detectors when no frame arrives
MIN_TICK = 0.004  # one kernel tick (HZ=250): finer timeouts are rounded up anyway
TICKS = 20  # looks per beacon interval


def events_path(lab: str, host: str) -> Path:
    return events.path(lab, host)


def state_path(lab: str, host: str) -> Path:
    return state_dir(lab) / f"team-{host}.json"


# -- the actions of a failover -------------------------------------------------------------------
class TeamActions(Protocol):
    def active(self, team: str) -> str | None:
        """The member the dataplane forwards through now, if it can tell."""

    def flip(self, team: str, member: str) -> None:
        """Make `member` the only active member of `team` in the dataplane."""

    def flush_fdb(self, bridge: str, port: str) -> None:
        """Forget what `bridge` learned on `port`."""

    def announce(self, member: str, macs: Sequence[Tagged], count: int = 3) -> None:
        """Send `count` RARP frames from each MAC (tagged with its VLAN) out of `member`."""


class KernelActions:
    """Flushes and announcements for real, in namespace `ns`; flipping is the dataplane's and is
    given as callables (`flip(team, member)`, `active(team)`) by whoever holds the dataplane."""

    def __init__(
        self,
        ns: str | None,
        flip: Callable[[str, str], None],
        active: Callable[[str], str | None] | None = None,
    ) -> None:
        self.ns = ns
        self._flip = flip
        self._active = active

    def active(self, team: str) -> str | None:
        return self._active(team) if self._active is not None else None

    def flip(self, team: str, member: str) -> None:
        self._flip(team, member)

    def flush_fdb(self, bridge: str, port: str) -> None:
        with Netlink(self.ns) as nl:
            nl.flush_fdb(port)

    def announce(self, member: str, macs: Sequence[Tagged], count: int = 3) -> None:
        with packet_socket(self.ns, member, frames.ETH_P_RARP) as sock:
            for _ in range(count):
                for mac, vlan in macs:
                    sock.send(frames.rarp(mac, vlan))


# -- the monitor ---------------------------------------------------------------------------------
class _Team:
    """One team's detector, sockets and counters."""

    def __init__(self, plan: TeamPlan, det: TeamDetector, now: float) -> None:
        self.plan, self.det = plan, det
        self.s = plan.settings()
        self.seq = 0
        self.next_beacon = now
        self.next_probe = now
        self.own_rx = dict.fromkeys(plan.members, 0)  # our team's beacons received, per member


class Monitor:
    """The teams of one host namespace `ns` (None: this thread's namespace)."""

    def __init__(
        self,
        lab: str,
        ns: str | None,
        plans: Sequence[TeamPlan],
        actions: TeamActions,
        events: Path,
        state: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        topology: Path | None = None,
        replan: Callable[[], Sequence[TeamPlan]] | None = None,
    ) -> None:
        self.lab, self.ns, self.actions, self.clock = lab, ns, actions, clock
        # A live change (a VM migrated in or out) changes the MACs a failover announces: the
        # topology file is watched by its stamp, re-read off the failover path.
        self.topology, self.replan = topology, replan
        self.stamp = self._stamp()
        self.host = plans[0].host if plans else None
        self.events_file, self.state_file = events, state
        self.watch = LinkWatch(ns)
        now = clock()
        links = self.watch.snapshot()
        saved = self._saved()
        self.teams: dict[str, _Team] = {}
        self.sockets: dict[int, tuple[_Team, str, int]] = {}  # fd -> (team, member, ethertype)
        self.socks: dict[tuple[str, str, int], socket.socket] = {}  # (team, member, ethertype) ->
        self.counters: dict[tuple[str, str], socket.socket] = {}  # (team, member) -> other frames
        self.macs: dict[str, str] = {}
        for p in plans:
            active = actions.active(p.name) or saved.get(p.name) or p.members[0]
            carriers = {m: links[m].carrier if m in links else False for m in p.members}
            team = _Team(p, TeamDetector(p.settings(), now, active, carriers), now)
            self.teams[p.name] = team
            for member in p.members:
                self.macs[member] = (links[member].mac if member in links else None) or "02:00:00:00:00:00"
                self._open(team, member, frames.ETH_P_BEACON)
                self.counters[(p.name, member)] = packet_socket(
                    self.ns, member, frames.ETH_P_BEACON, count_others=True
                )
                if p.team.arp_target is not None:
                    self._open(team, member, frames.ETH_P_ARP)
            self._event(event="state", team=p.name, active=active, members=team.det.state())
        self._save()

    def _open(self, team: _Team, member: str, proto: int) -> None:
        sock = packet_socket(self.ns, member, proto)
        sock.setblocking(False)
        self.sockets[sock.fileno()] = (team, member, proto)
        self.socks[(team.plan.name, member, proto)] = sock

    def close(self) -> None:
        for sock in [*self.socks.values(), *self.counters.values()]:
            sock.close()
        self.watch.close()

    # -- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event | Callable[[], bool]) -> None:
        stopped = stop.is_set if isinstance(stop, threading.Event) else stop
        poller = select.poll()
        for fd in [self.watch.fileno(), *self.sockets]:
            poller.register(fd, select.POLLIN)
        # Judging a few times per beacon interval keeps a detection within a small fraction of
        # an interval of its deadline; beacons leave on time, not on the next tick.
        tick = min([MAX_TICK, *(max(MIN_TICK, t.s.beacon_interval / TICKS) for t in self.teams.values())])
        next_dump = last_count = self.clock()
        while not stopped():
            due = min((t.next_beacon for t in self.teams.values() if t.s.beacon), default=math.inf)
            wait = max(0.0, min(tick, due - self.clock()))
            ready = poller.poll(math.ceil(wait * 1000))
            now = self.clock()
            for fd, _ in ready:
                if fd == self.watch.fileno():
                    self._links(self.watch.poll(), now)
                else:
                    self._frames(fd, now)
            if now >= next_dump:  # receive-path evidence; a dump resyncs after event overruns
                self._refresh()
                self._count_others(last_count)
                self.watch.request_dump()
                last_count, next_dump = now, now + max(tick * 4, 0.05)
            for team in self.teams.values():
                self._send(team, now)
                self._handle(team, team.det.tick(now))

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.topology.stat() if self.topology is not None else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino) if st is not None else None

    def _refresh(self) -> None:
        """The MACs behind each team as the lab's topology now says (its members cannot change
        in a running lab: a team whose members differ keeps its plan)."""
        stamp = self._stamp()
        if self.replan is None or stamp == self.stamp:
            return
        self.stamp = stamp
        try:
            plans = {p.name: p for p in self.replan()}
        except (OSError, ValueError) as err:  # a topology being replaced: the next stamp retries
            log.warning("cannot re-read the lab's teams: %s", err)
            self.stamp = None
            return
        for name, team in self.teams.items():
            new = plans.get(name)
            if new is not None and new.members == team.plan.members and new.macs != team.plan.macs:
                log.info("%s: %d MACs behind the team now", name, len(new.macs))
                team.plan = new

    def _links(self, states: list[LinkState], now: float) -> None:
        for st in states:
            for team in self.teams.values():
                if st.name in team.plan.members:
                    self._handle(team, team.det.link(st.name, st.carrier and not st.gone, now))

    def _count_others(self, since: float) -> None:
        """Frames other than beacons that arrived on a member since `since` prove that it receives
        (the detector's two-member rule); they are stamped `since`, when they had not yet come."""
        for team in self.teams.values():
            for member in team.plan.members:
                if arrived(self.counters[(team.plan.name, member)]):
                    team.det.traffic(member, since)
            team.det.counted(since)

    def _frames(self, fd: int, now: float) -> None:
        team, member, proto = self.sockets[fd]
        sock = self.socks[(team.plan.name, member, proto)]
        while True:
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                return
            if proto == frames.ETH_P_ARP:
                target = team.plan.team.arp_target
                if target is not None and frames.is_arp_reply(data, target):
                    self._handle(team, team.det.arp_reply(member, now))
                continue
            b = frames.parse_beacon(data)
            if b is None:
                continue
            if (b.lab, b.host, b.vswitch) == (self.lab, team.plan.host, team.plan.vswitch):
                if b.member in team.plan.members and b.member != member:
                    team.own_rx[member] += 1
                    self._handle(team, team.det.beacon(b.member, member, now))
            else:  # another team's beacon: still proof that this member receives
                team.det.traffic(member, now)

    def _send(self, team: _Team, now: float) -> None:
        p = team.plan
        if team.s.beacon and now >= team.next_beacon:
            team.seq += 1
            team.next_beacon = max(team.next_beacon + team.s.beacon_interval, now)  # no drift
            for member in p.members:
                frame = frames.beacon(
                    frames.Beacon(self.lab, p.host, p.vswitch, member, team.seq), self.macs[member]
                )
                self._transmit(team, member, frames.ETH_P_BEACON, frame)
        if p.team.arp_target is not None and now >= team.next_probe:
            team.next_probe = now + team.s.beacon_interval
            active = team.det.active
            probe = frames.arp_probe(self.macs[active], p.arp_source, p.team.arp_target, p.arp_vlan)
            self._transmit(team, active, frames.ETH_P_ARP, probe)

    def _transmit(self, team: _Team, member: str, proto: int, frame: bytes) -> None:
        with contextlib.suppress(OSError):  # no carrier, or a full queue: the beacon is missed
            self.socks[(team.plan.name, member, proto)].send(frame)

    # -- outputs -----------------------------------------------------------------------------
    def _handle(self, team: _Team, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, MemberChange):
                state = "ok" if out.healthy else "failed"
                self._event(event="member", team=out.team, member=out.member, state=state, cause=out.cause)
            elif isinstance(out, Failover):
                self._failover(team, out)

    def _failover(self, team: _Team, f: Failover) -> None:
        p = team.plan
        try:
            self.actions.flip(f.team, f.new)
        except Exception as err:  # the dataplane did not move: say so, keep watching
            log.error("%s: cannot make %s active: %s", f.team, f.new, err)
            self._event(event="error", team=f.team, to=f.new, reason=str(err))
            return
        latency = self.clock() - (f.t - f.latency) if f.cause != "failback" else f.latency
        for action in (
            lambda: self.actions.flush_fdb(p.vswitch, f.old),
            lambda: self.actions.announce(f.new, p.macs, p.team.announce),
        ):
            try:
                action()
            except Exception as err:  # the move is made: a failed flush or announcement only slows relearning
                log.error("%s: after the move to %s: %s", f.team, f.new, err)
        self._save()
        kind = "failback" if f.cause == "failback" else "failover"
        fields: dict[str, Any] = {"from": f.old, "to": f.new, "cause": f.cause}
        self._event(
            event=kind, team=f.team, **fields, latency_ms=round(latency * 1000, 3), ambiguous=f.ambiguous
        )
        log.info("%s: %s -> %s (%s, %.1f ms)", f.team, f.old, f.new, f.cause, latency * 1000)

    def _event(self, **fields: Any) -> None:
        record = {"kind": "team", "lab": self.lab, "host": self.host, "time": time.time(), **fields}
        with open(self.events_file, "a") as out:
            out.write(json.dumps(record) + "\n")

    def _saved(self) -> dict[str, str]:
        if self.state_file is None:
            return {}
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({name: t.det.active for name, t in self.teams.items()}))
        tmp.replace(self.state_file)


# -- the process ---------------------------------------------------------------------------------
def start(lab: str, host: str, namespace: str) -> subprocess.Popen[bytes]:
    """The monitor of `host` in its namespace, detached (log: team-<host>.log)."""
    args = ["--lab", lab, "--host", host, "--netns", namespace]
    return processes.spawn(lab, "netns_lab.features.team.monitor", args, f"team-{host}")


stop = processes.stop


def _plans(lab: str, host: str) -> list[TeamPlan]:
    from netns_lab.features.team.plan import teams
    from netns_lab.lab.state import LabState
    from netns_lab.topology.loader import load_text

    state = LabState.read(lab)
    text = state.topology_text() if state is not None else None
    if state is None or text is None:
        raise OSError(f"lab {lab} has no state")
    return teams(load_text(text, state.source, lab=lab), host)


def main(argv: list[str] | None = None, actions: TeamActions | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m netns_lab.features.team.monitor", description=__doc__.splitlines()[0]
    )
    p.add_argument("--lab", required=True)
    p.add_argument("--host", required=True, help="the hypervisor whose teams to watch")
    p.add_argument("--netns", help="its namespace (default: <lab>-<host>)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s team %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    alive = state_dir(args.lab)
    try:
        netns.enter(args.netns or f"{args.lab}-{args.host}")
        plans = _plans(args.lab, args.host)
        if actions is None:
            actions = dataplane_actions(args.lab, args.host, plans)
        monitor = Monitor(
            args.lab,
            None,
            plans,
            actions,
            events_path(args.lab, args.host),
            state_path(args.lab, args.host),
            topology=alive / "topology.yaml",
            replan=lambda: _plans(args.lab, args.host),
        )
        monitor.run(lambda: not alive.exists())
    except (OSError, KeyboardInterrupt) as err:
        if alive.exists():
            log.error("%s: stopped: %s", args.host, err)
            return 1
    return 0


def dataplane_actions(lab: str, host: str, plans: Sequence[TeamPlan]) -> KernelActions:
    """Actions bound to the host's pinned dataplane (this process is in the host's namespace):
    a flip is `Team.activate`, one map write per member; the active member is read from the map,
    so a restarted monitor goes on from what the dataplane does."""
    from dataplane.switch import SwitchDataplane
    from netns_lab.lab.state import pin_dir

    team = SwitchDataplane.open(pin_dir(lab) / host).team  # open for the life of the process
    with Netlink(None) as nl:
        index = {m: nl.index(m) for p in plans for m in p.members}
    members = {p.name: [index[m] for m in p.members] for p in plans}

    def flip(name: str, member: str) -> None:
        team.activate(index[member], members[name])

    def active(name: str) -> str | None:
        state = team.members()
        return next((m for m in plans_by_name[name].members if state.get(index[m])), None)

    plans_by_name = {p.name: p for p in plans}
    return KernelActions(None, flip, active)


if __name__ == "__main__":
    sys.exit(main())
