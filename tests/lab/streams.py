"""Traffic streams for lab tests, run inside a VM's namespace (`ip netns exec NS python3 streams.py
...`); stdlib only, one process per end.

    udp-recv PORT [--lines]         prints `ready`, `first` at the first datagram, `resumed SEQ`
                                    after each gap of GAP or more sequence numbers, and at the
                                    END marker (or IDLE seconds of silence) one JSON line:
                                    {"received", "unique", "duplicates", "missing", "gaps": [[a, b]]};
                                    --lines: also `gap A B TIME` for every gap as it closes and
                                    `at SEQ TIME` every PROGRESS datagrams (TIME: time.time())
    udp-send HOST PORT INTERVAL     numbered datagrams every INTERVAL seconds (on a schedule, so
                                    a slow moment does not shift the rest) until stdin closes, then
                                    END; prints {"sent": N}
    tcp-recv PORT                   prints `ready`, then {"bytes", "sha256"} when the peer closes
    tcp-send HOST PORT BYTES SECS   BYTES of a fixed pattern spread over SECS, then close;
                                    prints {"bytes", "sha256"}

A datagram is `<8-byte sequence number><padding>` (64 bytes); END is b"END".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import select
import socket
import struct
import sys
import threading
import time

GAP = 3
PROGRESS = 100
IDLE = 20.0
CHUNK = 16 << 10


def _say(text: str) -> None:
    print(text, flush=True)


def udp_recv(port: int, lines: bool = False) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("0.0.0.0", port))
    _say("ready")
    seen: list[int] = []
    while select.select([sock], [], [], IDLE)[0]:
        data = sock.recv(2048)
        if data == b"END":
            break
        (seq,) = struct.unpack("!Q", data[:8])
        if not seen:
            _say("first")
            top = seq
        else:
            if lines and seq > top + 1:
                _say(f"gap {top + 1} {seq - 1} {time.time():.6f}")
            if seq >= top + GAP:
                _say(f"resumed {seq}")
            top = max(top, seq)
        seen.append(seq)
        if lines and len(seen) % PROGRESS == 0:
            _say(f"at {seq} {time.time():.6f}")
    unique = set(seen)
    top = max(unique, default=-1)
    gaps: list[list[int]] = []
    for s in range(top + 1):
        if s not in unique:
            if gaps and gaps[-1][1] == s - 1:
                gaps[-1][1] = s
            else:
                gaps.append([s, s])
    doc = {
        "received": len(seen),
        "unique": len(unique),
        "duplicates": len(seen) - len(unique),
        "missing": top + 1 - len(unique),
        "last": top,
        "gaps": gaps,
    }
    _say(json.dumps(doc))


def udp_send(host: str, port: int, interval: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    start, seq = time.monotonic(), 0
    while not stop.is_set():
        with contextlib.suppress(OSError):  # no neighbour for a moment: lost, as on a wire
            sock.sendto(struct.pack("!Q", seq).ljust(64, b"\0"), (host, port))
        seq += 1
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for _ in range(5):
        sock.sendto(b"END", (host, port))
        time.sleep(0.01)
    _say(json.dumps({"sent": seq}))


def _pattern(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "big")).digest() * (CHUNK // 32)


def tcp_recv(port: int) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(1)
    _say("ready")
    conn, _ = server.accept()
    digest, total = hashlib.sha256(), 0
    while data := conn.recv(1 << 16):
        digest.update(data)
        total += len(data)
    _say(json.dumps({"bytes": total, "sha256": digest.hexdigest()}))


def tcp_send(host: str, port: int, size: int, seconds: float) -> None:
    sock = socket.create_connection((host, port), timeout=30)
    digest, sent, n = hashlib.sha256(), 0, 0
    chunks = max(1, size // CHUNK)
    start = time.monotonic()
    while sent < size:
        data = _pattern(n)[: size - sent]
        sock.sendall(data)
        digest.update(data)
        sent, n = sent + len(data), n + 1
        delay = start + n * seconds / chunks - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # until the receiver has read everything and closed
    _say(json.dumps({"bytes": sent, "sha256": digest.hexdigest()}))


def main(argv: list[str]) -> None:
    mode, *rest = argv
    if mode == "udp-recv":
        udp_recv(int(rest[0]), "--lines" in rest)
    elif mode == "udp-send":
        udp_send(rest[0], int(rest[1]), float(rest[2]))
    elif mode == "tcp-recv":
        tcp_recv(int(rest[0]))
    elif mode == "tcp-send":
        tcp_send(rest[0], int(rest[1]), int(rest[2]), float(rest[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
