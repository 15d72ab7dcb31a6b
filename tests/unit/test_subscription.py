"""A subscriber's side of the event hub's protocol, over a socket pair (no hub, no root)."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from netns_lab.lab.eventhub import HubGone
from netns_lab.observe import subscription


def line(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode() + b"\n"


def subscriber(sock: socket.socket) -> subscription.Subscription:
    sub = subscription.Subscription.__new__(subscription.Subscription)  # as if connected
    sub.lab, sub.lost, sub._buf, sub._token, sub._pending, sub.sock = "l", 0, b"", 0, [], sock
    sock.setblocking(False)
    return sub


def verdict(n: int) -> dict[str, Any]:
    return {"kind": "verdict", "sport": n, "count": 1}


def test_records_after_a_sync_in_the_same_read_are_kept_for_the_next_read() -> None:
    ours, hub = socket.socketpair()
    with ours, hub:
        sub = subscriber(ours)
        lost = {"kind": "lost", "count": 3, "total": 3}
        sync = line({"kind": "sync", "token": 1})
        hub.sendall(line(verdict(1)) + line(lost) + sync + line(verdict(2)) + line(verdict(3))[:9])
        assert sub.sync(5) == [verdict(1), lost]
        assert json.loads(hub.recv(100)) == {"sync": 1}
        hub.sendall(line(verdict(3))[9:] + line(verdict(4)))
        assert sub.read(1000) == [verdict(2), verdict(3), verdict(4)]
        assert sub.lost == 3


def test_a_hub_that_ends_is_an_error_never_an_empty_stream() -> None:
    ours, hub = socket.socketpair()
    with ours:
        sub = subscriber(ours)
        hub.close()
        with pytest.raises(HubGone, match="the event hub of lab 'l' ended"):
            sub.read(100)
