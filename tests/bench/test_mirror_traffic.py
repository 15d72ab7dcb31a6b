"""Cost of port mirroring under real traffic (NIST 5), measured on a small lab of its own.

    tor1 --- hv1.eth0 --- vs1: a 10.0.0.1 (mirrored or not) --- b 10.0.0.2
                          vsmon: ids (analyzer) <== copies of a, both directions (session bench)

Throughput: iperf3 TCP a -> b, one stream (ends pinned like tests/bench/fwtraffic.py), the same
VM unmirrored, mirrored straight to the analyzer's port, and mirrored through the host's mirror
port (the path of truncated and encapsulated copies), in alternating rounds of one run
(`nlab mirror add/del` between them); the ratios of the medians are reported (goal >= 0.85),
never asserted.
Copies delivered: 64-byte UDP from a to a discard socket in b, paced by a C sender at 25, 50
and 100 % of the peak rate a reaches unpaced; the fraction is the frames the analyzer's NIC
received (its rx counter) over the datagrams a sent (direction out only: one copy each).
Asserted: traffic flowed, copies arrived, and the root namespace's interfaces did not change.
Results are printed and written to .benchmarks/mirror-traffic.json.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netns_lab.kernel import netns
from tests.bench import fwtraffic, record, traffic
from tests.bench.fwtraffic import CLIENT_CPU, SERVER_CPU, TrafficError
from tests.lab.conftest import Lab, nlab, running

TOPOLOGY = """
lab: mbench
switches:
  tor1: {}
hosts:
  hv1:
    pnics:
      eth0: {switch: tor1, driver: ixgbe, pci_bus: "0000:03:00.0"}
    vswitches:
      vs1: {uplinks: [eth0]}
      vsmon: {}
vms:
  a:
    host: hv1
    nics: [{vswitch: vs1, ip: 10.0.0.1/24}]
  b:
    host: hv1
    nics: [{vswitch: vs1, ip: 10.0.0.2/24}]
  ids:
    host: hv1
    role: analyzer
    nics: [{vswitch: vsmon}]
"""
A_IP, B_IP = "10.0.0.1", "10.0.0.2"
QUICK = record.quick()
ROUNDS = 1 if QUICK else 5
IPERF_SECONDS = 1 if QUICK else 3
UDP_SECONDS = 0.5 if QUICK else 1.0
LOADS = (0.5, 1.0) if QUICK else (0.25, 0.5, 1.0)
THROUGHPUT_GOAL = 0.85
RESULTS = Path(".benchmarks") / "mirror-traffic.json"
FIGURES: dict[str, Any] = {}  # this session's (the file above may hold an older run's too)


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds a lab and loads eBPF"),
    *(
        pytest.mark.skipif(shutil.which(tool) is None, reason=f"needs {tool} (apt-get install {tool})")
        for tool in ("iperf3", "gcc")
    ),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")
    root_links = socket.if_nameindex()
    directory = tmp_path_factory.mktemp("mbench")
    (directory / "mbench.yaml").write_text(TOPOLOGY)
    sender = fwtraffic.build_sender(directory)
    with running(directory / "mbench.yaml") as built:
        sink = _sink(built)
        try:
            yield built, sender
        finally:
            sink.close()
    assert socket.if_nameindex() == root_links, "the root namespace's interfaces changed"


def _sink(lab: Lab) -> socket.socket:
    """A UDP socket in b that is never read: datagrams reach UDP, then its full buffer."""
    with netns.inside(lab.ns("b")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((B_IP, 9))
    return sock


def _mirror(lab: Lab, on: bool, direction: str = "both", *extra: str) -> None:
    if on:
        nlab("mirror", "--lab", lab.name, "add", "bench", "--source", "a", "--direction", direction,
             "--dest", "ids", *extra, check=True)  # fmt: skip
    else:
        nlab("mirror", "--lab", lab.name, "del", "bench", check=True)


def _rx_packets(lab: Lab, vm: str) -> int:
    out = subprocess.run(
        ["ip", "-n", lab.ns(vm), "-s", "-j", "link", "show", "dev", "eth0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def _send(lab: Lab, sender: Path, pps: float) -> tuple[int, float]:
    proc = subprocess.run(
        traffic.in_ns(lab.ns("a"), str(sender), B_IP, "9", str(UDP_SECONDS), "18", str(int(pps))),
        capture_output=True,
        text=True,
        timeout=UDP_SECONDS + 15,
        check=False,
    )
    if proc.returncode != 0:
        raise TrafficError(f"udpflood exited {proc.returncode}: {proc.stderr.strip()}")
    sent, elapsed, _ = proc.stdout.split()
    return int(sent), float(elapsed)


def _report(capsys: pytest.CaptureFixture[str], bench_record: Any, key: str, value: object) -> None:
    path = Path.cwd() / RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc[key] = value
    path.write_text(json.dumps(doc, indent=2) + "\n")
    FIGURES[key] = value
    ratios = {
        f"gbps_{k}_per_unmirrored": v for k, v in FIGURES.get("throughput", {}).get("ratio", {}).items()
    }
    for row in FIGURES.get("copies", {}).get("rows", []):
        ratios[f"copies_delivered_at_{row['load']:g}_of_peak"] = row["fraction"]
    bench_record("mirror", figures=FIGURES, ratios=ratios, baseline="the VM unmirrored; copies: packets sent")
    with capsys.disabled():
        print(f"\nmirror bench {key}: {json.dumps(value)}")


# how `a` is mirrored in each configuration: not at all, copies straight to the analyzer's port,
# or through the host's mirror port (the path of truncated and encapsulated copies; a snaplen
# no frame reaches only routes them there)
CONFIGS: dict[str, tuple[str, ...] | None] = {
    "unmirrored": None,
    "direct": (),
    "via-mirror-port": ("--snaplen", "65535"),
}


def test_throughput_of_a_mirrored_vm(
    benchmark: Any, lab: tuple[Lab, Path], capsys: pytest.CaptureFixture[str], bench_record: Any
) -> None:
    benchmark.group = "mirror throughput (all rounds)"
    benchmark.pedantic(_throughput, args=(lab[0], capsys, bench_record), rounds=1)


def _throughput(built: Lab, capsys: pytest.CaptureFixture[str], bench_record: Any) -> None:
    runs: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for round_ in range(ROUNDS):
        for name in list(CONFIGS) if round_ % 2 == 0 else list(CONFIGS)[::-1]:
            extra = CONFIGS[name]
            if extra is not None:
                _mirror(built, True, "both", *extra)
            try:
                runs[name].append(
                    traffic.tcp_throughput(
                        built.ns("a"),
                        built.ns("b"),
                        B_IP,
                        IPERF_SECONDS,
                        server_args=("-A", str(SERVER_CPU)),
                        client_args=("-A", str(CLIENT_CPU)),
                    )
                )
            finally:
                if extra is not None:
                    _mirror(built, False)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    assert all(m > 0 for m in medians.values())
    plain = medians["unmirrored"]
    _report(
        capsys,
        bench_record,
        "throughput",
        {
            "gbps": {name: round(m / 1e9, 2) for name, m in medians.items()},
            "ratio": {name: round(m / plain, 3) for name, m in medians.items() if name != "unmirrored"},
            "goal": THROUGHPUT_GOAL,
            "met": all(m / plain >= THROUGHPUT_GOAL for m in medians.values()),
            "rounds": ROUNDS,
        },
    )


def test_fraction_of_copies_delivered_by_load(
    benchmark: Any, lab: tuple[Lab, Path], capsys: pytest.CaptureFixture[str], bench_record: Any
) -> None:
    benchmark.group = "mirror copies delivered (all loads)"
    benchmark.pedantic(_copies_by_load, args=(*lab, capsys, bench_record), rounds=1)


def _copies_by_load(built: Lab, sender: Path, capsys: pytest.CaptureFixture[str], bench_record: Any) -> None:
    _mirror(built, True, direction="out")
    try:
        sent, elapsed = _send(built, sender, 0)  # warm-up and peak: flat out, mirrored
        peak = sent / elapsed
        rows = []
        for load in LOADS:
            before = _rx_packets(built, "ids")
            sent, elapsed = _send(built, sender, peak * load)
            time.sleep(0.3)  # copies still in veth backlogs reach the analyzer's counter
            copies = _rx_packets(built, "ids") - before
            rows.append(
                {
                    "load": load,
                    "offered_kpps": round(sent / elapsed / 1e3, 1),
                    "sent": sent,
                    "copies": copies,
                    "fraction": round(min(copies, sent) / sent, 4) if sent else None,
                }
            )
        doc = json.loads(nlab("mirror", "--lab", built.name, "list", "--json", check=True).stdout)
        counters = next(s["counters"] for s in doc["sessions"] if s["name"] == "bench")
    finally:
        _mirror(built, False)
    assert all(r["sent"] > 0 and r["copies"] > 0 for r in rows)
    _report(
        capsys, bench_record, "copies", {"peak_kpps": round(peak / 1e3, 1), "rows": rows, "session": counters}
    )
