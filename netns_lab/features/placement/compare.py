"""The same workload through each placement of a running lab, side by side: round-trip time
(ping), TCP request/response rate (one byte each way) and TCP throughput (iperf3), from one
unfiltered VM to a VM of each placement on the same host, and to an unfiltered VM as the
baseline ("none"). Rounds alternate the order of the placements; medians; ratios to "none"
from one run. The lab's cables are veths: the hairpin costs its extra hops and switch port
programs, not the wire and switch latency a real physical firewall adds.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from netns_lab.features.placement.truth import Probe, address, expected
from netns_lab.kernel import netns
from netns_lab.topology import names
from netns_lab.topology.model import Topology

ORDER = ("none", "kernel", "subnet", "physical")
SPARE_PORT = 5201


@dataclass(frozen=True)
class Pair:
    placement: str
    src: str
    dst: str
    port: int  # a TCP port the policy allows from src to dst


def pairs(topo: Topology) -> list[Pair]:
    """One pair per placement present, all from one client: a VM no rule applies to, to a VM of
    each placement on the client's host (for "none", another such VM), on a port the policy lets
    through."""
    where = topo.placements()
    plain = [vm for vm in topo.vms if vm.role == "none" and where[vm.name] == "none" and vm.nics[0].ip]
    tcp = {lo for r in topo.firewall.rules if r.proto == "tcp" for lo, _ in r.ports}
    ports = [*sorted(tcp), SPARE_PORT]
    found: list[Pair] = []
    for client in plain:
        for placement in ORDER:
            servers = [
                vm
                for vm in (plain if placement == "none" else topo.vms)
                if vm.host == client.host
                and vm.name != client.name
                and vm.nics[0].ip
                and (placement == "none" or where[vm.name] == placement)
            ]
            for server in servers:
                probes = [Probe(client.name, server.name, "tcp", port) for port in ports]
                allowed = [p.port for p, v in expected(topo, probes).items() if v == "allow"]
                if allowed:
                    found.append(Pair(placement, client.name, server.name, allowed[0]))
                    break
        if len(found) > 1:
            return found
        found = []
    return found


def rtt_us(ns: str, dst: str, count: int = 200) -> float:
    with netns.inside(ns):
        proc = subprocess.run(
            ["ping", "-n", "-q", "-c", str(count), "-i", "0.002", dst],
            capture_output=True,
            text=True,
            check=False,
        )
    found = re.search(r"= [\d.]+/([\d.]+)/", proc.stdout)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"ping {dst} from {ns} failed: {proc.stdout.strip()} {proc.stderr.strip()}")
    return float(found.group(1)) * 1000


@contextlib.contextmanager
def echo_server(ns: str, ip: str, port: int) -> Iterator[None]:
    with netns.inside(ns):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((ip, port))
    listener.listen(4)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while data := conn.recv(1):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        listener.close()
        thread.join(timeout=5)


def rr_rate(src_ns: str, dst_ns: str, ip: str, port: int, seconds: float = 1.0) -> float:
    """One-byte requests answered by one-byte responses over one TCP connection, per second."""
    with echo_server(dst_ns, ip, port):
        with netns.inside(src_ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(3)
            sock.connect((ip, port))
            done, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                sock.sendall(b"x")
                sock.recv(1)
                done += 1
    return done / elapsed


def throughput_gbps(src_ns: str, dst_ns: str, ip: str, port: int, seconds: int = 2) -> float:
    """iperf3, one stream; the server serves one test and exits."""
    with netns.inside(dst_ns):
        server = subprocess.Popen(
            ["iperf3", "-s", "-1", "-B", ip, "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        for _ in range(50):  # the server listens within milliseconds: retry a refused connect
            with netns.inside(src_ns):
                proc = subprocess.run(
                    ["iperf3", "-c", ip, "-p", str(port), "-t", str(seconds), "-J"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
            doc = json.loads(proc.stdout or "{}")
            if "end" in doc and "error" not in doc:
                return doc["end"]["sum_received"]["bits_per_second"] / 1e9
            time.sleep(0.05)
        raise RuntimeError(f"iperf3 to {ip}:{port} failed: {doc.get('error', proc.stderr)}")
    finally:
        server.kill()
        server.wait()


def measure(topo: Topology, rounds: int = 3, seconds: float = 1.0) -> dict[str, object]:
    """Figures per placement (medians of `rounds` alternated rounds) and ratios to "none"."""
    chosen = pairs(topo)
    samples: dict[str, dict[str, list[float]]] = {
        p.placement: {"rtt_us": [], "rr_per_s": [], "gbps": []} for p in chosen
    }
    for pair in chosen:  # neighbours resolved and listeners' paths warm before the clock runs
        rtt_us(names.namespace(topo.lab, pair.src), str(address(topo, pair.dst)), count=3)
    for round_ in range(rounds):
        for pair in chosen if round_ % 2 == 0 else chosen[::-1]:
            src, dst = names.namespace(topo.lab, pair.src), names.namespace(topo.lab, pair.dst)
            ip = str(address(topo, pair.dst))
            got = samples[pair.placement]
            got["rtt_us"].append(rtt_us(src, ip))
            got["rr_per_s"].append(rr_rate(src, dst, ip, pair.port, seconds))
            got["gbps"].append(throughput_gbps(src, dst, ip, pair.port, max(1, round(seconds * 2))))
    figures = {p: {k: round(statistics.median(v), 2) for k, v in s.items()} for p, s in samples.items()}
    base = figures.get("none")
    ratios = {
        p: {k: round(v / base[k], 3) for k, v in f.items()} for p, f in figures.items() if base is not None
    }
    return {
        "lab": topo.lab,
        "rounds": rounds,
        "pairs": [pair.__dict__ for pair in chosen],
        "figures": figures,
        "ratios_to_none": ratios,
    }
