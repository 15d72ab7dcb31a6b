"""A subscriber of a lab's event hub (`netns_lab.lab.eventhub`): what `nlab fw events` and `nlab
watch` read verdict events through, each with its own filter, queue and losses."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable
from typing import Any

from netns_lab.lab import fanout
from netns_lab.lab.eventhub import LOG, HubGone, encode, socket_path, start
from netns_lab.lab.state import LabState, state_dir
from netns_lab.topology import names


class Subscription:
    """One subscriber of a lab's hub: `read()` its records, `sync()` for everything up to now.

    `lost` is this subscriber's losses since it subscribed (the sum of its `lost` records)."""

    def __init__(self, lab: str, flt: fanout.Filter, queue: int | None = None, timeout: float = 10.0) -> None:
        self.lab, self.lost, self._buf, self._token = lab, 0, b"", 0
        self._pending: list[dict[str, Any]] = []
        self.sock = _connect(lab, timeout)
        try:
            self.sock.setblocking(False)
            hello: dict[str, Any] = {"subscribe": flt.doc()}
            if queue is not None:
                hello["queue"] = queue
            self.sock.sendall(encode(hello))
            first = self._wait(lambda r: r["kind"] in ("subscribed", "error"), timeout)
            if first[-1]["kind"] == "error":
                raise ValueError(first[-1]["message"])
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, timeout_ms: int = 0) -> list[dict[str, Any]]:
        """The records that arrived (verdicts and losses), waiting up to `timeout_ms` for one."""
        if timeout_ms and not self._pending:
            select.select([self.sock], [], [], timeout_ms / 1000)
        while self._receive():
            pass
        found, self._pending = self._pending, []
        return found

    def sync(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every record the hub has for us up to now: what the kernel had queued, and our losses."""
        self._token += 1
        token = self._token
        self.sock.sendall(encode({"sync": token}))
        found = self._wait(lambda r: r["kind"] == "sync" and r["token"] == token, timeout)
        return [r for r in found if r["kind"] != "sync"]

    def _wait(self, done: Callable[[dict[str, Any]], bool], timeout: float) -> list[dict[str, Any]]:
        """The records up to the first that is `done` (included); those after it stay pending."""
        deadline = time.monotonic() + timeout
        while not any(done(r) for r in self._pending):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HubGone(0, f"the event hub of lab {self.lab!r} did not answer in {timeout:.0f} s")
            select.select([self.sock], [], [], remaining)
            self._receive()
        end = next(i for i, r in enumerate(self._pending) if done(r)) + 1
        found, self._pending = self._pending[:end], self._pending[end:]
        return found

    def _receive(self) -> bool:
        """What the socket holds (never blocks), parsed into pending records; False if nothing."""
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return False
        if not data:
            raise HubGone(0, f"the event hub of lab {self.lab!r} ended (see {state_dir(self.lab) / LOG})")
        *lines, self._buf = (self._buf + data).split(b"\n")
        records = [json.loads(line) for line in lines if line]
        self.lost += sum(r["count"] for r in records if r["kind"] == "lost")
        self._pending += records
        return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(lab: str, timeout: float) -> socket.socket:
    """A connection to the lab's hub, starting one if none answers (it crashed, or was never
    started: a lab built before hubs existed)."""
    deadline, started = time.monotonic() + timeout, False
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(socket_path(lab)))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
        state = LabState.read(lab)
        if state is None:
            raise HubGone(0, f"lab {lab!r} is not up")
        if not started:
            topo_hosts = _first_host(state)
            start(lab, names.namespace(lab, topo_hosts))
            started = True
        if time.monotonic() > deadline:
            raise HubGone(0, f"the event hub of lab {lab!r} did not start (see {state_dir(lab) / LOG})")
        time.sleep(0.05)


def _first_host(state: LabState) -> str:
    from netns_lab.topology import loader

    text = state.topology_text() or ""
    topo = loader.load_text(text, state.source or "topology.yaml", lab=state.lab)
    return topo.hosts[0].name
