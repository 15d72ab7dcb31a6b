"""What the migration tests and benchmark do inside a lab's VMs, from this process: sockets made
inside a VM's namespace stay there (they are the VM's), taps on a VM's own NIC that see what was
delivered to it, TCP echo servers.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from netns_lab.kernel import netns, packet

ETH_P_IP = 0x0800
TCP_SYN, TCP_ACK = 0x02, 0x10


def tcp(ns: str, dst: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection from inside `ns` (raises OSError if it cannot be made in `timeout`)."""
    with netns.inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
    except BaseException:
        s.close()
        raise
    return s


def udp(ns: str, bind: tuple[str, int] | None = None) -> socket.socket:
    with netns.inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if bind is not None:
        s.bind(bind)
    return s


def echo(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


@dataclass
class EchoServer:
    """TCP echo on `ports` inside `ns`, one thread per connection."""

    ns: str
    ports: tuple[int, ...]
    accepted: dict[int, int] = field(default_factory=dict)
    _socks: list[socket.socket] = field(default_factory=list)

    def start(self) -> EchoServer:
        for port in self.ports:
            with netns.inside(self.ns):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            s.listen(64)
            self._socks.append(s)
            self.accepted[port] = 0
            threading.Thread(target=self._accept, args=(s, port), daemon=True).start()
        return self

    def _accept(self, s: socket.socket, port: int) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            self.accepted[port] += 1
            self._socks.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@contextlib.contextmanager
def echo_server(ns: str, *ports: int) -> Iterator[EchoServer]:
    server = EchoServer(ns, ports).start()
    try:
        yield server
    finally:
        server.close()


class SynTap:
    """TCP SYNs delivered to a VM's NIC (a packet socket inside the VM: what its kernel got)."""

    def __init__(self, ns: str, ifname: str = "eth0") -> None:
        self.sock = packet.packet_socket(ns, ifname, ETH_P_IP)
        self.sock.setblocking(False)
        self.syns: dict[int, int] = {}

    def read(self) -> dict[int, int]:
        """Destination port -> SYNs seen so far."""
        while True:
            try:
                frame = self.sock.recv(65536)
            except BlockingIOError:
                return self.syns
            port = syn_port(frame)
            if port is not None:
                self.syns[port] = self.syns.get(port, 0) + 1

    def close(self) -> None:
        self.sock.close()


def syn_port(frame: bytes) -> int | None:
    """The destination port of a TCP SYN (no ACK) in an Ethernet/IPv4 frame, else None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0F) * 4
    tcp_at = 14 + ihl
    if len(frame) < tcp_at + 14:
        return None
    dport = struct.unpack_from("!H", frame, tcp_at + 2)[0]
    flags = frame[tcp_at + 13]
    return dport if flags & TCP_SYN and not flags & TCP_ACK else None


class Prober(threading.Thread):
    """Connects from `ns` to dst:port again and again until stopped (each attempt a new SYN)."""

    def __init__(self, ns: str, dst: str, port: int) -> None:
        super().__init__(daemon=True)
        self.ns, self.dst, self.port = ns, dst, port
        self.attempts = 0
        self.connected = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.attempts += 1
            try:
                tcp(self.ns, self.dst, self.port, timeout=0.05).close()
                self.connected += 1
            except OSError:
                pass

    def stop(self) -> None:
        self._halt.set()
        self.join()
