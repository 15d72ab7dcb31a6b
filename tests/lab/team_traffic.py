"""The test side of the streams (tests/lab/streams.py) that cross a team: each end a process in a
VM's namespace, read line by line; taps on the team's members that say through which member
each datagram of a stream arrived. Used by
tests/lab/test_team_lab.py and tests/bench/test_team_failover.py.

The ends' own lines are the barriers (`ready` once a receiver listens, `first` once the stream
flows, `resumed SEQ` once it flows again after a gap): no sleeps.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns_lab.kernel.packet import PACKET_STATISTICS, SOL_PACKET, packet_socket
from netns_lab.lab.state import LabState
from netns_lab.topology.loader import load_text
from netns_lab.topology.model import Topology

SCRIPT = Path(__file__).with_name("streams.py")
ETH_P_IP = 0x0800
SO_RCVBUFFORCE = 33
UDP_PORT, TCP_PORT = 5001, 5002
INTERVAL = 0.001  # one datagram a millisecond: the loss window in datagrams is in milliseconds


class End:
    """One end of a stream: `python3 streams.py MODE ...` in namespace `ns`."""

    def __init__(self, ns: str, *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(SCRIPT), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, prefix: str, timeout: float = 20) -> str:
        """The next line that starts with `prefix` (lines before it are passed over)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not select.select([self.proc.stdout], [], [], deadline - time.monotonic())[0]:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"{' '.join(self.args)}: no line {prefix!r} ({self._stderr()})")

    def result(self, timeout: float = 30) -> dict[str, Any]:
        """The JSON line it ends with (closing its stdin first: a sender stops on that)."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        line = self.expect("{", timeout)
        self.proc.wait(timeout)
        return dict(json.loads(line))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "still running"
        return self.proc.stderr.read().strip() or f"exit {self.proc.returncode}"


@contextlib.contextmanager
def ends(*made: End) -> Iterator[None]:
    try:
        yield
    finally:
        for end in made:
            end.kill()


@dataclass
class MemberTaps:
    """Taps on a team's members (before TC ingress: they see what arrives on the cable, also on
    a standby that drops it) collecting the sequence numbers of the UDP stream per member."""

    socks: dict[str, socket.socket]
    seqs: dict[str, list[int]] = field(default_factory=dict)
    tcp_bytes: dict[str, int] = field(default_factory=dict)

    @classmethod
    @contextlib.contextmanager
    def on(cls, ns: str, members: list[str]) -> Iterator[MemberTaps]:
        socks = {}
        try:
            for m in members:
                sock = packet_socket(ns, m, ETH_P_IP)
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
                sock.setblocking(False)
                socks[m] = sock
            yield cls(socks, {m: [] for m in members}, dict.fromkeys(members, 0))
        finally:
            for sock in socks.values():
                sock.close()

    def drain(self) -> None:
        """Read what the taps hold; AssertionError if a tap had to drop a frame."""
        for m, sock in self.socks.items():
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                self._frame(m, data)
            _, drops = struct.unpack("=II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            assert drops == 0, f"the tap on {m} dropped {drops} frames: its counts are not exact"

    def _frame(self, member: str, data: bytes) -> None:
        ip = data[14:]
        if len(ip) < 20:
            return
        ihl, proto = (ip[0] & 0xF) * 4, ip[9]
        l4 = ip[ihl:]
        if proto == socket.IPPROTO_UDP and len(l4) >= 16 and struct.unpack("!H", l4[2:4])[0] == UDP_PORT:
            self.seqs[member].append(struct.unpack("!Q", l4[8:16])[0])
        elif proto == socket.IPPROTO_TCP and len(l4) >= 20 and struct.unpack("!H", l4[2:4])[0] == TCP_PORT:
            total = struct.unpack("!H", ip[2:4])[0]
            self.tcp_bytes[member] += total - ihl - (l4[12] >> 4) * 4


def lab_topology(lab: str) -> Topology:
    """The topology a running lab was built from."""
    st = LabState.read(lab)
    assert st is not None, f"lab {lab} is not up"
    return load_text(st.topology_text() or "", st.source, lab=lab)
