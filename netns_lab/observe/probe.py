"""Real traffic between lab nodes: TCP listeners and connect probes, pings, ARP requests.

Sockets are opened while the thread sits in the node's namespace (kernel/netns.inside), so
they belong to that namespace for their whole life; no helper processes are left behind.
Only addresses inside the lab are ever probed: callers pass lab node addresses.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import select
import selectors
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Literal

from netns_lab.kernel import netns

Outcome = Literal["open", "refused", "timeout", "unreachable"]


@contextlib.contextmanager
def listening(ns: str, endpoints: Iterable[tuple[str, int]]) -> Iterator[None]:
    """TCP listeners in `ns` that accept and close every connection, for as long as the block runs."""
    sockets = []
    with netns.inside(ns):
        for ip, port in endpoints:
            sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ip, port))
            sock.listen(64)
            sock.setblocking(False)
    stop = threading.Event()
    thread = threading.Thread(target=_accept_loop, args=(sockets, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for sock in sockets:
            sock.close()


def _accept_loop(sockets: list[socket.socket], stop: threading.Event) -> None:
    with selectors.DefaultSelector() as sel:
        for sock in sockets:
            sel.register(sock, selectors.EVENT_READ)
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.05):
                with contextlib.suppress(OSError):
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    conn.close()


def tcp(ns: str, dst: str, port: int, timeout: float = 1.0) -> Outcome:
    """Connect from `ns` to dst:port: open, refused (RST), timeout (dropped) or unreachable."""
    with netns.inside(ns):
        sock = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((dst, port))
        except TimeoutError:
            return "timeout"
        except ConnectionRefusedError:
            return "refused"
        except OSError as err:
            if err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return "unreachable"
            raise
        return "open"


def ping(ns: str, dst: str, count: int = 1, timeout: float = 1.0) -> bool:
    """ICMP echo with the real ping(8), run inside `ns`."""
    with netns.inside(ns):
        proc = subprocess.run(
            ["ping", "-n", "-q", "-c", str(count), "-W", str(timeout), "-i", "0.2", dst],
            capture_output=True,
            check=False,
        )
    return proc.returncode == 0


ETH_P_ARP = 0x0806
ARP_REQUEST, ARP_REPLY = 1, 2


def _arp(op: int, src_mac: bytes, src_ip: bytes, dst_mac: bytes, dst_ip: bytes) -> bytes:
    eth_dst = b"\xff" * 6 if op == ARP_REQUEST else dst_mac
    header = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op)  # Ethernet, IPv4, address lengths
    body = header + src_mac + src_ip + (b"\0" * 6 if op == ARP_REQUEST else dst_mac) + dst_ip
    return eth_dst + src_mac + struct.pack("!H", ETH_P_ARP) + body


def arp(ns: str, ifname: str, src: str, dst: str, timeout: float = 1.0, tries: int = 2) -> bool:
    """Does `dst` answer an ARP request sent from `ns`'s `ifname` with source address `src`?

    ARP crosses a VLAN like any frame but is judged by no firewall (port security lets a VM's
    own ARP through, NIC firewalls and nftables' inet tables never see it): an answer proves
    the path carries the VLAN in both directions, whatever the policy allows."""
    with netns.inside(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    with sock:
        sock.bind((ifname, ETH_P_ARP))
        mac = sock.getsockname()[4]
        request = _arp(
            ARP_REQUEST, mac, ipaddress.IPv4Address(src).packed, b"", ipaddress.IPv4Address(dst).packed
        )
        want = ipaddress.IPv4Address(dst).packed
        for _ in range(tries):
            sock.send(request)
            deadline = time.monotonic() + timeout / tries
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                frame = sock.recv(128)
                if len(frame) >= 42 and frame[20:22] == b"\x00\x02" and frame[28:32] == want:
                    return True
    return False
