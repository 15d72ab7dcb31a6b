"""Real traffic between lab nodes: TCP listeners and connect probes, pings.

Sockets are opened while the thread sits in the node's namespace (kernel/netns.inside), so
they belong to that namespace for their whole life; no helper processes are left behind.
Only addresses inside the lab are ever probed: callers pass lab node addresses.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import subprocess
import threading
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
