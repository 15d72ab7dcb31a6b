"""Real traffic between two lab namespaces for benchmarks: iperf3 TCP throughput and ping RTT.

Every process runs inside a lab namespace through `ip netns exec NS ...` (which execs the
tool, so the pid we hold is the tool's own) and is waited for or killed by that pid. Only
addresses of lab VMs are ever targeted: callers pass them.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import time
from dataclasses import dataclass

IPERF_PORT = 5201  # inside the server VM's own namespace: nothing else listens there
LISTEN_TIMEOUT_S = 5.0
PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")
PING_REPLY = re.compile(r"time=([\d.]+) ms")


class TrafficError(AssertionError):
    pass


@dataclass(frozen=True)
class Rtt:
    avg_us: float
    mdev_us: float  # as ping computes it: the population standard deviation
    median_us: float
    sent: int
    received: int


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def ifindex(ns: str, ifname: str) -> int:
    out = subprocess.run(
        ["ip", "-n", ns, "-j", "link", "show", "dev", ifname], capture_output=True, text=True, check=True
    )
    return int(json.loads(out.stdout)[0]["ifindex"])


def _listening(ns: str, port: int) -> bool:
    out = subprocess.run(
        in_ns(ns, "ss", "-Hltn", f"sport = :{port}"), capture_output=True, text=True, check=False
    )
    return bool(out.stdout.strip())


def _wait_listening(ns: str, port: int, server: subprocess.Popen[str]) -> None:
    """Poll for the listening socket: a test connection would use up the one-off server."""
    deadline = time.monotonic() + LISTEN_TIMEOUT_S
    while not _listening(ns, port):
        if server.poll() is not None:
            raise TrafficError(f"iperf3 server in {ns} exited {server.returncode}: {server.stderr.read()}")
        if time.monotonic() > deadline:
            raise TrafficError(f"iperf3 server in {ns} not listening after {LISTEN_TIMEOUT_S} s")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def tcp_throughput(
    client_ns: str,
    server_ns: str,
    server_ip: str,
    seconds: int,
    server_args: tuple[str, ...] = (),
    client_args: tuple[str, ...] = (),
) -> float:
    """Bits per second received by a one-off iperf3 server in `server_ns`, one TCP stream;
    `server_args`/`client_args` are extra iperf3 options (e.g. CPU pinning with -A)."""
    server = subprocess.Popen(
        in_ns(server_ns, "iperf3", "-s", "-1", "-B", server_ip, "-p", str(IPERF_PORT), *server_args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_listening(server_ns, IPERF_PORT, server)
        client = subprocess.run(
            in_ns(
                client_ns,
                "iperf3",
                "-c",
                server_ip,
                "-p",
                str(IPERF_PORT),
                "-t",
                str(seconds),
                "-J",
                *client_args,
            ),
            capture_output=True,
            text=True,
            timeout=seconds + 15,  # run() kills the client by its pid on timeout
            check=False,
        )
        server.wait(timeout=5)
    finally:
        _stop(server)
    try:
        result = json.loads(client.stdout)
    except json.JSONDecodeError:
        raise TrafficError(f"iperf3 client in {client_ns}: no JSON: {client.stderr.strip()}") from None
    if "error" in result:
        raise TrafficError(f"iperf3 client in {client_ns}: {result['error']}")
    return float(result["end"]["sum_received"]["bits_per_second"])


def ping(client_ns: str, ip: str, count: int, interval: float) -> Rtt:
    """Mean, mdev and median of the round trips, in µs, from ping's per-reply lines.

    Not from the `-q` summary: it prints the mean in ms with 3 decimals, a 1 µs step, coarse
    against the short round trips of a veth path; the mean of the replies (each to 1 µs)
    resolves a fraction of a step.
    """
    out = subprocess.run(
        in_ns(client_ns, "ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", ip),
        capture_output=True,
        text=True,
        timeout=count * interval + 15,
        check=False,
    )
    summary = PING_SUMMARY.search(out.stdout)
    if summary is None:
        raise TrafficError(f"ping from {client_ns} to {ip}: {out.stdout.strip()} {out.stderr.strip()}")
    sent, received = int(summary[1]), int(summary[2])
    replies = [float(t) * 1e3 for t in PING_REPLY.findall(out.stdout)]
    if not replies:
        return Rtt(math.nan, math.nan, math.nan, sent, received)
    return Rtt(
        statistics.fmean(replies), statistics.pstdev(replies), statistics.median(replies), sent, received
    )
