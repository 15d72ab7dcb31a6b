"""Traffic of the migration benchmark, run inside a VM's namespace (`ip netns exec NS python -m
tests.bench.migration_agent MODE ...`) until stdin closes, then one JSON document on stdout.

    udp-send DST PORT INTERVAL_US   datagrams carrying (seq, send time), one every INTERVAL_US
    udp-recv PORT                   (seq, send time, arrival time) of each datagram
    tcp-serve PORT                  TCP echo
    tcp-echo DST PORT INTERVAL_US   a round trip of 16 bytes on one connection every INTERVAL_US:
                                    the gaps between completions longer than GAP_S

Times are CLOCK_MONOTONIC, one clock for every namespace of the machine (one kernel).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import sys
import threading
import time

PAYLOAD = struct.Struct("!Qd")
GAP_S = 0.005


def _until_stdin_closes() -> threading.Event:
    done = threading.Event()

    def wait() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    return done


def udp_send(dst: str, port: int, interval_us: int) -> dict:
    done = _until_stdin_closes()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    seq, interval = 0, interval_us / 1e6
    start = time.monotonic()
    while not done.is_set():
        now = time.monotonic()
        with_pad = PAYLOAD.pack(seq, now).ljust(64, b"\0")
        with contextlib.suppress(OSError):  # refused while its NIC has no carrier: lost all the same
            s.sendto(with_pad, (dst, port))
        seq += 1
        time.sleep(max(0.0, start + seq * interval - time.monotonic()))  # hrtimer: not the 4 ms tick
    return {"sent": seq, "interval_s": interval, "start": start}


def udp_recv(port: int) -> dict:
    done = _until_stdin_closes()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    print("ready", file=sys.stderr, flush=True)
    got = []
    while not done.is_set():
        if select.select([s], [], [], 0.1)[0]:
            data = s.recv(2048)
            seq, sent = PAYLOAD.unpack_from(data)
            got.append((seq, sent, time.monotonic()))
    return {"received": got}


def tcp_echo(dst: str, port: int, interval_us: int) -> dict:
    """A round trip every INTERVAL_US on one connection; the gaps between completions longer
    than GAP_S (the stalls), with the time each ended."""
    done = _until_stdin_closes()
    s = socket.create_connection((dst, port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    gaps, count, last = [], 0, time.monotonic()
    while not done.is_set():
        s.sendall(b"x" * 16)
        got = 0
        while got < 16:
            chunk = s.recv(16 - got)
            if not chunk:
                return {"gaps": gaps, "count": count, "closed": True}
            got += len(chunk)
        now = time.monotonic()
        count += 1
        if now - last > GAP_S:
            gaps.append((last, now))
        last = now
        time.sleep(interval_us / 1e6)
    return {"gaps": gaps, "count": count, "closed": False}


def tcp_serve(port: int) -> dict:
    done = _until_stdin_closes()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(8)
    print("ready", file=sys.stderr, flush=True)

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    s.settimeout(0.1)
    while not done.is_set():
        try:
            conn, _ = s.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    return {}


def main(argv: list[str]) -> int:
    mode, *args = argv
    if mode == "udp-send":
        doc = udp_send(args[0], int(args[1]), int(args[2]))
    elif mode == "udp-recv":
        doc = udp_recv(int(args[0]))
    elif mode == "tcp-serve":
        doc = tcp_serve(int(args[0]))
    elif mode == "tcp-echo":
        doc = tcp_echo(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    json.dump(doc, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
