"""The report of test_fw_traffic.py: per config the median of its rounds and the ratio to no
filter, printed at the end of the session and written to .benchmarks/fw-traffic.json.

The test fills RESULTS (metric -> config -> samples, in round order) and INFO (what ran, what our
programs counted, the load average); nothing here is asserted.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

import pytest

from tests.bench import record

CONFIGS = ("none", "ours", "ours-nocache", "iptables", "nft-linear", "nft-set")
BASELINE = "none"
GOAL = 0.9  # ours / none for the rates, at least; for the RTT, none / ours
REPORT_FILE = Path(".benchmarks") / "fw-traffic.json"
METRICS = {  # metric: (unit, higher is better)
    "udp_kpps": ("64-byte UDP delivered to UDP in b, kpps (C sender, sendmmsg)", True),
    "sent_kpps": ("64-byte UDP accepted by the sender's socket, kpps", True),
    "tcp_gbps": ("Gbit/s received (iperf3 -t 3, one TCP stream)", True),
    "rtt_us": ("mean of ping's replies, µs", False),
    "rtt_median_us": ("median of ping's replies, µs", False),
}
GOAL_METRICS = ("udp_kpps", "tcp_gbps", "rtt_us")

RESULTS: dict[str, dict[str, list[float]]] = {}
INFO: dict[str, Any] = {}


def summary(metric: str) -> dict[str, Any]:
    """Per config: the median of its rounds, and `ratio`, the median over rounds of config / none
    within the round (neighbours in time, so drift of the shared machine cancels out better
    than in the ratio of the two medians, also given)."""
    samples = RESULTS[metric]
    base = samples[BASELINE]
    rows = {}
    for config in CONFIGS:
        values = samples.get(config) or []
        if not values:
            continue
        median, base_median = statistics.median(values), statistics.median(base)
        round_ratios = [v / b for v, b in zip(values, base, strict=True) if b]
        rows[config] = {
            "median": round(median, 3),
            "ratio": round(statistics.median(round_ratios), 3) if round_ratios else None,
            "ratio_of_medians": round(median / base_median, 3) if base_median else None,
            "round_ratios": [round(r, 3) for r in round_ratios],
            "samples": [round(v, 3) for v in values],
        }
    return rows


def goal_met(metric: str, ratio: float | None) -> bool | None:
    if ratio is None or metric not in GOAL_METRICS:
        return None
    return ratio >= GOAL if METRICS[metric][1] else ratio <= 1 / GOAL


PEERS = ("iptables", "nft-linear", "nft-set")  # the in-kernel peers ours must keep up with


def versus_best_peer(metric: str) -> dict[str, Any] | None:
    """Ours against the peer with the best median ratio to no filter: the median over rounds of
    ours / peer within the round (at least 1: as fast as the best peer, in the same run)."""
    samples, rows = RESULTS[metric], summary(metric)
    peers = [p for p in PEERS if rows.get(p, {}).get("ratio") is not None]
    if "ours" not in rows or not peers:
        return None
    best = max(peers, key=lambda p: rows[p]["ratio"])
    per_round = [o / b for o, b in zip(samples["ours"], samples[best], strict=True) if b]
    ours_over = statistics.median(per_round) if per_round else None
    return {
        "peer": best,
        "peer_ratio": rows[best]["ratio"],
        "ours_ratio": rows["ours"]["ratio"],
        "ours_over_peer": round(ours_over, 3) if ours_over is not None else None,
        "round_ratios": [round(r, 3) for r in per_round],
        "met": ours_over is not None and ours_over >= 1,
    }


def table() -> dict[str, Any]:
    metrics = {m: summary(m) for m in METRICS if m in RESULTS}
    goals = {
        m: goal_met(m, rows.get("ours", {}).get("ratio")) for m, rows in metrics.items() if m in GOAL_METRICS
    }
    return {
        "unit": {m: METRICS[m][0] for m in metrics},
        "configs": {
            "none": "no filter",
            "ours": "port_from_vm/port_to_vm on the receiver's veth end (the sender's vSwitch port),"
            " untagged trunk, port security + 10k-rule policy (stateful: one lookup per flow)",
            "ours-nocache": "ours built without the flow and policy caches (-DNLAB_PROF_SKIP=0x200):"
            " every packet through the connection table",
            "iptables": f"{INFO.get('iptables', 'iptables')}: INPUT of the receiver, 10k rules, linear",
            "nft-linear": "nftables input chain of the receiver, 10k rules, linear",
            "nft-set": "nftables: one rule, a set of 9,999 (daddr, proto, port) + the ICMP rule",
        },
        "method": "one namespace pair per config; rounds alternating the order of the configs;"
        " median of each config's rounds; ratio = median over rounds of config / none in that round;"
        " traffic matches only the last 3 of the 10k rules",
        "goal": f"ours >= {GOAL}x none (UDP, TCP); RTT ours <= {1 / GOAL:.2f}x none",
        "goal_met": goals,
        "versus_best_peer": {
            m: versus_best_peer(m) for m in ("udp_kpps", "tcp_gbps") if m in RESULTS and versus_best_peer(m)
        },
        "metrics": metrics,
        **INFO,
        "cpus": os.cpu_count(),
    }


def _cell(rows: dict[str, Any], config: str, key: str, width: int, spec: str) -> str:
    value = rows.get(config, {}).get(key)
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


class FwTrafficSummary:
    name = "fw-traffic-summary"

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter, config: pytest.Config
    ) -> None:
        if not RESULTS:
            return
        data = table()
        tr, metrics = terminalreporter, data["metrics"]
        tr.section(
            "Firewall with 10k rules on a veth, end to end: medians, and ratios to no filter"
            " (median of the per-round ratios)"
        )
        tr.write_line(
            f"{'config':<12} {'UDP kpps':>9} {'ratio':>6} {'sent kpps':>9}   {'TCP Gbit/s':>10} {'ratio':>6}"
            f"   {'RTT µs':>7} {'ratio':>6} {'median':>7}"
        )
        udp, sent, tcp, rtt, med = (
            metrics.get(m, {}) for m in ("udp_kpps", "sent_kpps", "tcp_gbps", "rtt_us", "rtt_median_us")
        )
        for c in CONFIGS:
            tr.write_line(
                f"{c:<12} {_cell(udp, c, 'median', 9, '.1f')} {_cell(udp, c, 'ratio', 5, '.2f')}x"
                f" {_cell(sent, c, 'median', 9, '.1f')}   {_cell(tcp, c, 'median', 10, '.2f')}"
                f" {_cell(tcp, c, 'ratio', 5, '.2f')}x   {_cell(rtt, c, 'median', 7, '.1f')}"
                f" {_cell(rtt, c, 'ratio', 5, '.2f')}x {_cell(med, c, 'median', 7, '.1f')}"
            )
        verdicts = ", ".join(
            f"{m} {'-' if ok is None else 'met' if ok else 'NOT met'}" for m, ok in data["goal_met"].items()
        )
        tr.write_line(f"goal {data['goal']}: {verdicts} (reported, not asserted)")
        for metric, v in data["versus_best_peer"].items():
            tr.write_line(
                f"{metric}: ours {v['ours_ratio']:.3f}x none vs the best peer,"
                f" {v['peer']}, {v['peer_ratio']:.3f}x;"
                f" ours / {v['peer']} per round, median {v['ours_over_peer']:.3f}"
                f" (goal >= 1: {'met' if v['met'] else 'NOT met'})"
            )
        for metric, counts in INFO.get("ours_counts", {}).items():
            grown = ", ".join(f"{k} +{v}" for k, v in counts.items())
            tr.write_line(f"ours counted during {metric}: {grown}")
        load = INFO.get("load_average_1min", {})
        tr.write_line(
            f"{data['configs']['iptables']}; 1-min load average "
            + " -> ".join(f"{v:.2f}" for v in load.values())
            + f" on {os.cpu_count()} CPUs; UDP sender: one process, sendmmsg batches of 64"
        )
        ratios = {
            f"{metric}_{c}_per_none": row.get("ratio")
            for metric, rows in metrics.items()
            if metric in GOAL_METRICS
            for c, row in rows.items()
            if c != BASELINE
        }
        ratios |= {
            f"{m}_ours_per_{v['peer']}": v["ours_over_peer"] for m, v in data["versus_best_peer"].items()
        }
        record.record(
            "test_fw_traffic", "fw-traffic", figures=data, ratios=ratios, baseline="none (no filter)"
        )
        out = config.rootpath / REPORT_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        tr.write_line(f"written to {out}")
