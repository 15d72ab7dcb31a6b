"""Live migration's cost to the VM's traffic (tests/lab/migration.yaml): srv migrated between hv1
and hv2 again and again, back and forth, while cli sends it a sequence-numbered UDP stream and
keeps one TCP connection doing a round trip every millisecond (tests/bench/migration_agent.py,
separate processes inside the VMs' namespaces).

Per migration: the UDP loss window (datagrams lost around it x the send interval), the TCP stall
(the longest gap between completed round trips), and the downtime the migration reports itself
(from the move of the port to its coming up). Medians over MIGRATIONS migrations; reported,
never asserted (asserted: the stream and the connection went through every migration).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.bench import record
from tests.lab.conftest import REPO, Lab, nlab, running

TOPOLOGY = REPO / "tests" / "lab" / "migration.yaml"
MIGRATIONS = 10 if record.quick() else 20
UDP_INTERVAL_US = 500
TCP_INTERVAL_US = 1000
SETTLE_S = 0.6  # after each migration: the next one starts once its losses are over
SRV = "10.0.0.2"
REPORT_FILE = REPO / ".benchmarks" / "migration.json"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces and loads eBPF")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running(TOPOLOGY) as built:
        for rule in (
            ["--id", "13", "--apply", "servers", "--direction", "in", "--peer", "vm:cli"],
            ["--id", "14", "--apply", "clients", "--direction", "out", "--peer", "vm:srv"],
        ):
            nlab(
                "fw",
                "add",
                *rule,
                "--proto",
                "udp",
                "--ports",
                "5001",
                "--action",
                "allow",
                "--lab",
                built.name,
                check=True,
            )
        yield built


class Agent:
    def __init__(self, ns: str, *args: str, ready: bool = False) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.bench.migration_agent", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        if ready:
            assert self.proc.stderr is not None
            assert self.proc.stderr.readline().strip() == "ready"

    def stop(self) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return json.loads(out)


def _percent(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def test_downtime_and_tcp_stall_of_a_migration(benchmark: Any, lab: Lab, bench_record: Any) -> None:
    """One pytest-benchmark round around all the migrations (`make bench` runs benchmarks only)."""
    found: dict[str, Any] = {}
    benchmark.group = "migration"
    benchmark.pedantic(lambda: found.update(_measure(lab)), rounds=1, iterations=1)
    benchmark.extra_info.update(found)
    baseline = "the downtime the migration reports (the port's move to its coming up)"
    bench_record("migration", figures=found["figures"], ratios=found["ratios"], baseline=baseline)


def _measure(lab: Lab) -> dict[str, Any]:
    from netns_lab.features.migration import live as migration

    recv = Agent(lab.ns("srv"), "udp-recv", "5001", ready=True)
    server = Agent(lab.ns("srv"), "tcp-serve", "80", ready=True)
    send = Agent(lab.ns("cli"), "udp-send", SRV, "5001", str(UDP_INTERVAL_US))
    echo = Agent(lab.ns("cli"), "tcp-echo", SRV, "80", str(TCP_INTERVAL_US))
    time.sleep(1.0)  # both streams under way
    windows = []
    try:
        for i in range(MIGRATIONS):
            t0 = time.monotonic()
            doc = migration.migrate(lab.name, "srv", "hv2" if i % 2 == 0 else "hv1")
            windows.append((t0, time.monotonic(), doc["downtime_ms"]))
            time.sleep(SETTLE_S)
    finally:
        sent, tcp = send.stop(), echo.stop()
        got, _ = recv.stop(), server.stop()
    interval = sent["interval_s"]
    arrived = {seq for seq, _, _ in got["received"]}
    sent_at = {seq: sent["start"] + seq * interval for seq in range(sent["sent"])}
    lost = [seq for seq in range(sent["sent"]) if seq not in arrived]
    rows = []
    for t0, t1, reported in windows:
        lost_here = [s for s in lost if t0 <= sent_at[s] < t1 + SETTLE_S]
        stalls = [b - a for a, b in tcp["gaps"] if t0 <= b < t1 + SETTLE_S]
        rows.append(
            {
                "udp_lost": len(lost_here),
                "loss_window_ms": round(len(lost_here) * interval * 1000, 2),
                "tcp_stall_ms": round(max(stalls, default=0.0) * 1000, 2),
                "reported_downtime_ms": reported,
                "migration_ms": round((t1 - t0) * 1000, 1),
            }
        )
    assert not tcp["closed"] and tcp["count"] > 0
    assert len(arrived) > sent["sent"] // 2, "the UDP stream did not go through"
    figures = {
        key: round(statistics.median(r[key] for r in rows), 2)
        for key in ("loss_window_ms", "tcp_stall_ms", "reported_downtime_ms", "migration_ms", "udp_lost")
    }
    figures |= {
        "migrations": len(rows),
        "loss_window_ms_max": max(r["loss_window_ms"] for r in rows),
        "tcp_stall_ms_max": max(r["tcp_stall_ms"] for r in rows),
        "udp_lost_outside_migrations": len(lost) - sum(r["udp_lost"] for r in rows),
        "udp_interval_us": UDP_INTERVAL_US,
    }
    ratios = {
        "loss_window/reported_downtime": round(figures["loss_window_ms"] / figures["reported_downtime_ms"], 2)
        if figures["reported_downtime_ms"]
        else None,
        "tcp_stall/loss_window": round(figures["tcp_stall_ms"] / figures["loss_window_ms"], 2)
        if figures["loss_window_ms"]
        else None,
    }
    REPORT_FILE.parent.mkdir(exist_ok=True)
    REPORT_FILE.write_text(json.dumps({"figures": figures, "ratios": ratios, "migrations": rows}, indent=2))
    print(f"\nmigration of srv hv1 <-> hv2, {len(rows)} migrations (medians; max)")
    print(f"{'loss window (UDP, ms)':<34}{figures['loss_window_ms']:>10}{figures['loss_window_ms_max']:>10}")
    print(f"{'TCP stall (ms)':<34}{figures['tcp_stall_ms']:>10}{figures['tcp_stall_ms_max']:>10}")
    print(f"{'reported downtime (move..up, ms)':<34}{figures['reported_downtime_ms']:>10}")
    print(f"{'whole migration (ms)':<34}{figures['migration_ms']:>10}")
    print(f"ratios: {ratios}")
    return {"figures": figures, "ratios": ratios, "migrations": rows}
