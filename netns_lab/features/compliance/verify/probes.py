"""Real packets between the lab's own VMs, all at once: TCP connects, UDP datagrams, ICMP echoes.

Every socket is made while the thread sits in its VM's namespace (kernel/netns.inside) and then
driven from here: no helper process. One pass sends echoes first (they resolve the neighbours
every later probe needs), then every TCP connect and UDP datagram without waiting, and collects
answers until one deadline, so a run costs about one timeout whatever the number of pairs.

Verdicts: a TCP connect answered (accepted, or refused with a RST: the segment reached the
target's kernel) is `allow`; silence or an unreachable error is `deny`. A UDP datagram is
`allow` when the target's receiver got it; an echo when its reply came back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import secrets
import selectors
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from netns_lab.features.compliance.verify.expected import Probe
from netns_lab.kernel import netns
from netns_lab.topology import names

ICMP_ECHO, ICMP_ECHO_REPLY = 8, 0
WARM_UP = 0.3  # seconds between the echoes and the rest: the neighbours resolve meanwhile
TIMEOUT = 1.5  # seconds for every answer: below the first SYN retransmission plus its answer
ANSWERED = (0, errno.ECONNREFUSED)
ECHO_ANSWERS, DATAGRAMS = -1, -2  # selector data of the receiving sockets (a connect's: its probe)


@dataclass(frozen=True)
class Seen:
    verdict: str  # "allow" | "deny"
    detail: str  # open, refused, timeout, unreachable, received, lost, reply, no reply


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def _echo(ident: int, seq: int, token: bytes) -> bytes:
    head = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, _checksum(head + token), ident, seq) + token


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))


class Run:
    """One batch of probes in lab `lab`: the sockets it owns, closed by `close`."""

    def __init__(self, lab: str, probes: list[Probe]) -> None:
        self.lab, self.probes = lab, probes
        self.sockets: list[socket.socket] = []
        self.seen: dict[int, Seen] = {}
        self.token = secrets.token_bytes(8)
        self.ident = secrets.randbelow(0xFFFF) + 1

    def _socket(self, ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
        with netns.inside(ns):
            sock = socket.socket(family, kind, proto)
        self.sockets.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []

    # -- targets -----------------------------------------------------------------------------------
    def _receivers(self) -> list[socket.socket]:
        """A TCP listener and a UDP receiver on every address and port some probe aims at (in
        the target's namespace: tenants may use the same address); the UDP receivers."""
        udp: list[socket.socket] = []
        wanted = {(p.dst, p.dst_ip, p.proto, p.port) for p in self.probes if p.port is not None}
        for vm, ip, proto, port in sorted(wanted, key=str):
            ns = names.namespace(self.lab, vm)
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            sock = self._socket(ns, socket.AF_INET, kind)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((ip, port))
            except OSError:
                continue  # something of the VM's own holds it: a TCP RST or no datagram still tells
            if proto == "tcp":
                sock.listen(256)  # never accepted: the kernel completes the handshakes
            else:
                sock.setblocking(False)
                udp.append(sock)
        return udp

    # -- senders -----------------------------------------------------------------------------------
    def _echoes(self, by_src: dict[str, list[int]]) -> dict[str, socket.socket]:
        raw: dict[str, socket.socket] = {}
        for src, indexes in by_src.items():
            icmp = [i for i in indexes if self.probes[i].proto == "icmp"]
            if not icmp:
                continue
            sock = self._socket(
                names.namespace(self.lab, src), socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP
            )
            sock.setblocking(False)
            raw[src] = sock
            for i in icmp:
                self._send(sock, _echo(self.ident, i & 0xFFFF, self.token), self.probes[i].dst_ip, i)
        return raw

    def _send(self, sock: socket.socket, data: bytes, ip: str, i: int, port: int = 0) -> None:
        try:
            sock.sendto(data, (ip, port))
        except OSError as err:
            self.seen[i] = Seen("deny", f"unreachable ({err.strerror})")

    def _connects(self, sel: selectors.BaseSelector, by_src: dict[str, list[int]]) -> None:
        for src, indexes in by_src.items():
            ns = names.namespace(self.lab, src)
            for i in indexes:
                p = self.probes[i]
                if p.proto == "tcp":
                    sock = self._socket(ns, socket.AF_INET, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    code = sock.connect_ex((p.dst_ip, p.port))
                    if code in (errno.EINPROGRESS, 0):
                        sel.register(sock, selectors.EVENT_WRITE, i)
                    else:
                        self.seen[i] = Seen("deny", f"unreachable ({os.strerror(code)})")
                elif p.proto == "udp":
                    sock = self._socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
                    self._send(sock, self.token + struct.pack("!I", i), p.dst_ip, i, p.port or 0)

    # -- answers -----------------------------------------------------------------------------------
    def _replies(self, raw: Iterable[socket.socket]) -> None:
        for sock in raw:
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                ihl = (data[0] & 0x0F) * 4
                kind, _, _, ident, seq = struct.unpack_from("!BBHHH", data, ihl)
                if kind == ICMP_ECHO_REPLY and ident == self.ident and data[ihl + 8 : ihl + 16] == self.token:
                    self.seen.setdefault(seq, Seen("allow", "reply"))

    def _datagrams(self, udp: Iterable[socket.socket]) -> None:
        for sock in udp:
            while True:
                try:
                    data = sock.recv(64)
                except BlockingIOError:
                    break
                if len(data) == 12 and data[:8] == self.token:
                    self.seen.setdefault(struct.unpack("!I", data[8:])[0], Seen("allow", "received"))

    def _connected(self, sel: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
        code = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # type: ignore[union-attr]
        detail = "open" if code == 0 else ("refused" if code == errno.ECONNREFUSED else "unreachable")
        self.seen[key.data] = Seen("allow" if code in ANSWERED else "deny", detail)
        sel.unregister(key.fileobj)

    def run(self, timeout: float = TIMEOUT) -> list[Seen]:
        """Send every probe, then wait for answers until all came or `timeout` has passed."""
        _raise_fd_limit(2 * len(self.probes) + 256)
        by_src: dict[str, list[int]] = {}
        for i, p in enumerate(self.probes):
            by_src.setdefault(p.src, []).append(i)
        udp = self._receivers()
        raw = self._echoes(by_src)
        time.sleep(WARM_UP)
        with selectors.DefaultSelector() as sel:
            for sock in raw.values():  # answers, read as they come
                sel.register(sock, selectors.EVENT_READ, ECHO_ANSWERS)
            for sock in udp:
                sel.register(sock, selectors.EVENT_READ, DATAGRAMS)
            self._connects(sel, by_src)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0 and len(self.seen) < len(self.probes):
                for key, _ in sel.select(min(left, 0.1)):
                    if key.data == ECHO_ANSWERS:
                        self._replies([key.fileobj])  # type: ignore[list-item]
                    elif key.data == DATAGRAMS:
                        self._datagrams([key.fileobj])  # type: ignore[list-item]
                    else:
                        self._connected(sel, key)
            for key in list(sel.get_map().values()):
                if key.data >= 0:
                    self.seen.setdefault(key.data, Seen("deny", "timeout"))
        self._replies(raw.values())
        self._datagrams(udp)
        lost = {"udp": "lost", "icmp": "no reply", "tcp": "timeout"}
        return [self.seen.get(i, Seen("deny", lost[p.proto])) for i, p in enumerate(self.probes)]


@contextlib.contextmanager
def batch(lab: str, probes: list[Probe]) -> Iterator[Run]:
    run = Run(lab, probes)
    try:
        yield run
    finally:
        run.close()


def observe(lab: str, probes: list[Probe], timeout: float = TIMEOUT) -> list[Seen]:
    """What each probe met, in order."""
    with batch(lab, probes) as run:
        return run.run(timeout)
