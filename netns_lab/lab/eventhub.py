"""The event hub of a lab: the one reader of every host's verdict ring buffer (and of the team
monitors' event files), serving subscribers.

A ring buffer has one consumer position: two readers of it share its records, each seeing a part
and neither knowing. So a lab has exactly one reader, this process, started by `nlab up` in the
first hypervisor's namespace (so `nlab down` ends it with the lab's other processes, also after a
crash) and ending by itself once the lab's pins are gone. It decodes every event, aggregates
repeated denials and fans them out (`netns_lab.lab.fanout`) to any number of subscribers connected to
its unix socket, each with its own filter, queue and loss count. `nlab fw events` and `nlab watch`
are subscribers (`netns_lab.observe.subscription`). The team monitors' events (a member failed,
the team moved) are read from the files the monitors append to, and go to the subscribers that
ask for them (`"teams"` in the filter).

    python -m netns_lab.lab.eventhub --lab nist --netns nist-hv1     (log: /run/netns-lab/nist/eventhub.log)

Protocol on /run/netns-lab/<lab>/events.sock, one JSON object per line each way:
  -> {"subscribe": {"vms": [...], "denied": false, "verdicts": true, "teams": [...]}, "queue": 32768}
     (queue, verdicts, teams: optional; teams [] is every team, absent none)
  <- {"kind": "subscribed", "window_s": 1.0}, then verdict and lost records as they come
  -> {"sync": N}   <- every record the kernel had queued before it, its losses, {"kind": "sync", "token": N}
A subscriber that cannot connect (no hub: it crashed) starts a new one; a lock file keeps it one.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from netns_lab.lab import fanout, processes
from netns_lab.lab.state import pin_dir, state_dir
from netns_lab.topology import names

log = logging.getLogger("netns_lab.lab.eventhub")

SOCKET, LOCK, LOG = "events.sock", "eventhub.lock", "eventhub.log"
TICK_MS = 100  # kernel loss counters and aggregation windows are looked at this often
BATCH = 256  # records moved from a subscriber's queue to its socket at once
SNDBUF = 64 << 10  # the kernel's share of a subscriber's backlog: most of it waits in its queue


def socket_path(lab: str) -> Path:
    return state_dir(lab) / SOCKET


def start(lab: str, namespace: str) -> subprocess.Popen[bytes]:
    """The lab's hub in `namespace`, detached from our session (a Ctrl-C must not reach it)."""
    return processes.spawn(lab, "netns_lab.lab.eventhub", ["--lab", lab, "--netns", namespace], "eventhub")


stop = processes.stop


def wait_ready(lab: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the hub started as `proc` serves (it is then inside its namespace, so teardown finds
    it); RuntimeError naming its log if it ends or does not answer."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(socket_path(lab)))
                return
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.02)
    raise RuntimeError(f"the event hub did not start (see {state_dir(lab) / LOG})")


class HubGone(OSError):
    """The hub is not there or ended while we were subscribed."""

    def __str__(self) -> str:
        return str(self.strerror)


# -- the hub process ---------------------------------------------------------------------------
class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.inbuf, self.outbuf = sock, b"", b""
        self.sub: fanout.Subscriber | None = None


class Hub:
    def __init__(self, lab: str) -> None:
        from dataplane.events import EventReader
        from netns_lab.features.firewall import live as fwlive
        from netns_lab.features.team import events as team_events
        from netns_lab.lab.running import RunningLab

        self.lab = lab
        self.live = RunningLab(lab)
        self.reader = EventReader()
        for h in self.live.hosts:
            self.reader.add(h.dataplane.maps["fw_events"], h.host)
        self.ports = {(h.host, idx): name for h in self.live.hosts for name, idx in h.ifindexes.items()}
        self.fanout = fanout.Fanout()
        self.teams = team_events.Tail(lab)
        self.conns: dict[int, _Conn] = {}
        self.seen_lost = fwlive.events_lost(self.live)  # losses before the hub came were nobody's
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = socket_path(lab)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a crashed hub's: the lock says no other hub is alive
        self.server.bind(str(path))
        self.server.listen(64)
        self.server.setblocking(False)

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.reader.fileno(), select.POLLIN)
        poller.register(self.server.fileno(), select.POLLIN)
        next_check = 0.0
        while True:
            for fd in self.conns:
                poller.modify(fd, select.POLLIN | (select.POLLOUT if self._backlog(fd) else 0))
            ready = dict(poller.poll(TICK_MS))
            self.drain()
            if self.server.fileno() in ready:
                self._accept(poller)
            for fd, what in ready.items():
                if fd in self.conns and what & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    self._receive(fd, poller)
            now = time.monotonic()
            if now >= next_check:
                if not (pin_dir(self.lab) / self.live.hosts[0].host).exists():
                    return  # the lab is gone
                self.check_losses()
                self.drain_teams()
                next_check = now + TICK_MS / 1000
            self.fanout.tick(now)
            for fd in list(self.conns):
                self._send(fd, poller)

    def drain(self) -> None:
        """Every event the kernel has queued, decoded and fanned out."""
        from netns_lab.features.firewall import live as fwlive

        now = time.monotonic()
        for host, ev in self.reader.poll(0):
            port = self.ports.get((host, ev.ifindex)) or self._port(host, ev.ifindex)
            self.fanout.event(fwlive.decode(ev, port), ev.time_ns, now)

    def drain_teams(self) -> None:
        """The team monitors' new lines (a few a minute: read each tick, not at every wake-up that
        a flood of verdicts makes)."""
        for record in self.teams.poll():
            self.fanout.team(record)

    def _port(self, host: str, ifindex: int) -> str:
        """A port made since the hub started (a live change): look the host's ports up again."""
        from netns_lab.kernel.netlink import Netlink

        with Netlink(names.namespace(self.lab, host)) as nl:
            self.ports.update({(host, link.index): link.name for link in nl.links()})
        return self.ports.setdefault((host, ifindex), f"{host}:{ifindex}")  # gone: look no more

    def check_losses(self) -> None:
        from netns_lab.features.firewall import live as fwlive

        lost = fwlive.events_lost(self.live)
        if lost > self.seen_lost:
            log.info("%d events lost in the kernel (ring buffer full)", lost - self.seen_lost)
            self.fanout.kernel_lost(lost - self.seen_lost)
            self.seen_lost = lost

    def _accept(self, poller: select.poll) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            self.conns[sock.fileno()] = _Conn(sock)
            poller.register(sock.fileno(), select.POLLIN)

    def _receive(self, fd: int, poller: select.poll) -> None:
        conn = self.conns[fd]
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(fd, poller)
            return
        conn.inbuf += data
        while b"\n" in conn.inbuf:
            line, conn.inbuf = conn.inbuf.split(b"\n", 1)
            try:
                self._request(conn, json.loads(line))
            except (ValueError, TypeError, AttributeError) as err:
                conn.outbuf += encode({"kind": "error", "message": str(err)})
                self._send(fd, poller)
                self._close(fd, poller)
                return

    def _request(self, conn: _Conn, msg: dict[str, Any]) -> None:
        if "subscribe" in msg and conn.sub is None:
            self._subscribe(conn, fanout.Filter.from_doc(msg["subscribe"]), msg.get("queue"))
        elif "sync" in msg and conn.sub is not None:
            self.drain()
            self.drain_teams()
            self.check_losses()
            conn.sub.report_drops(now=True)
            conn.sub.queue.append({"kind": "sync", "token": msg["sync"]})
        else:
            raise ValueError(f"unexpected request {sorted(msg)}")

    def _subscribe(self, conn: _Conn, flt: fanout.Filter, queue: Any) -> None:
        from dataplane.events import now_ns

        limit = fanout.DEFAULT_QUEUE if queue is None else queue
        if not isinstance(limit, int):
            raise ValueError(f"queue: {limit!r} is not a whole number")
        self.drain()  # what came before belongs to the subscribers already there
        self.drain_teams()
        self.check_losses()
        conn.sub = self.fanout.join(conn.sock.fileno(), flt, limit, now_ns())
        conn.outbuf += encode({"kind": "subscribed", "window_s": fanout.AGGREGATE_WINDOW_S})

    def _backlog(self, fd: int) -> bool:
        conn = self.conns[fd]
        return bool(conn.outbuf or (conn.sub is not None and conn.sub.queue))

    def _send(self, fd: int, poller: select.poll) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        if not conn.outbuf and conn.sub is not None and conn.sub.queue:
            conn.outbuf = b"".join(encode(r) for r in conn.sub.take(BATCH))
        if not conn.outbuf:
            return
        try:
            sent = conn.sock.send(conn.outbuf)
        except BlockingIOError:
            return
        except OSError:
            self._close(fd, poller)
            return
        conn.outbuf = conn.outbuf[sent:]

    def _close(self, fd: int, poller: select.poll) -> None:
        conn = self.conns.pop(fd, None)
        if conn is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            poller.unregister(fd)
        self.fanout.leave(fd)
        conn.sock.close()


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode() + b"\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns_lab.lab.eventhub", description=__doc__.splitlines()[0])
    p.add_argument("--lab", required=True)
    p.add_argument("--netns", required=True, help="the lab namespace to live in (its first hypervisor)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s eventhub %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        lock = open(state_dir(args.lab) / LOCK, "a")  # noqa: SIM115 - held for the process's life
    except FileNotFoundError:
        return 0  # the lab is gone
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another hub serves the lab
    try:
        from netns_lab.kernel import netns

        netns.enter(args.netns)
        hub = Hub(args.lab)
        log.info("serving %s: %d hosts", socket_path(args.lab), len(hub.live.hosts))
        hub.run()
    except (OSError, KeyboardInterrupt) as err:
        if pin_dir(args.lab).exists():  # the lab is still up: say why we stop
            log.error("stopped: %s", err)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
