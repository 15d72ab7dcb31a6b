"""The report of test_fw_cost.py: rows of kernel ns per packet, the 10k/10 scaling, the breakdown
by part; printed at the end of the session and written to .benchmarks/fw-cost.json.

The test fills ROWS (one per rule count, packet, flow and method), PARTS (the breakdown) and
METHODS (how each method was run); nothing here is asserted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.bench import record

GOALS = {"new": 4.0, "established": 3.0}  # x floor, at most
SCALE_GOAL = 1.2  # cost at the most rules / cost at the fewest, at most
REPORT_FILE = Path(".benchmarks") / "fw-cost.json"

ROWS: list[dict[str, Any]] = []
PARTS: list[dict[str, Any]] = []
METHODS: dict[str, str] = {}


def row(
    rules: int, packet: str, flow: str, method: str, path_ns: float, floor_ns: float, **extra: Any
) -> dict:
    ratio = path_ns / floor_ns
    return {
        "rules": rules,
        "packet": packet,
        "flow": flow,
        "method": method,
        "path_ns": round(path_ns, 1),
        "floor_ns": round(floor_ns, 1),
        "extra_ns": round(path_ns - floor_ns, 1),
        "ratio": round(ratio, 2),
        "goal_max": GOALS[flow],
        "goal_met": ratio <= GOALS[flow],
        **extra,
    }


def scaling() -> list[dict[str, Any]]:
    """Cost at the most rules over cost at the fewest, per flow, packet and method (same run)."""
    by_key = {(r["flow"], r["packet"], r["method"], r["rules"]): r for r in ROWS if r.get("cache", True)}
    counts = sorted({r["rules"] for r in ROWS})
    if len(counts) < 2:
        return []
    low, high = counts[0], counts[-1]
    result = []
    for flow, packet, method, count in sorted(by_key):
        if count != low or (flow, packet, method, high) not in by_key:
            continue
        a, b = by_key[flow, packet, method, low], by_key[flow, packet, method, high]
        ratio = b["path_ns"] / a["path_ns"]
        result.append(
            {
                "flow": flow,
                "packet": packet,
                "method": method,
                "low_rules": low,
                "high_rules": high,
                "low_ns": a["path_ns"],
                "high_ns": b["path_ns"],
                "ratio": round(ratio, 3),
                "extra_ratio": round(b["extra_ns"] / a["extra_ns"], 3) if a["extra_ns"] > 0 else None,
                "goal_met": ratio <= SCALE_GOAL,
            }
        )
    return result


def headline() -> dict[str, float]:
    """The ratios a reader looks at first: each row's cost over the floor (repeat=1 runs, the
    last rule's peer) and the most rules over the fewest."""
    ratios = {
        f"{r['flow']}_x_floor_{r['rules']}_rules{'' if r.get('cache', True) else '_nocache'}": r["ratio"]
        for r in ROWS
        if r["method"] == "single" and r["packet"] == "last"
    }
    ratios |= {  # the warm figure the per-packet goals are read on
        f"{r['flow']}_warm_x_floor_{r['rules']}_rules{'' if r.get('cache', True) else '_nocache'}": r["ratio"]
        for r in ROWS
        if r["method"] != "single" and r["packet"] == "last"
    }
    ratios |= {
        f"{s['flow']}_{s['packet']}_{s['method']}_{s['high_rules']}_per_{s['low_rules']}_rules": s["ratio"]
        for s in scaling()
    }
    return ratios


def table() -> dict[str, Any]:
    return {
        "unit": "ns per packet, BPF_PROG_TEST_RUN duration (mean per run as the kernel reports it)",
        "program": "port_from_vm (ebpf/vswitch.c), 60-byte TCP frames",
        "floor": "nlab_empty, same object, measured the same way, in the same rotation",
        "policy": "N allow rules, one distinct /32 each, tcp/80, direction out, one endpoint; default deny;"
        " one loaded dataplane per N, all measured in rotation",
        "packets": {"first": "to the first-added rule's /32", "last": "to the last-added rule's /32"},
        "cache": "rows with cache false: the 10k-rule dataplane built without the flow and policy caches"
        " (-DNLAB_PROF_SKIP=NLAB_PROF_CACHE), measured in the same rotation",
        "methods": METHODS,
        "goals": {
            "established_ratio_max": GOALS["established"],
            "new_ratio_max": GOALS["new"],
            "scale_ratio_max": SCALE_GOAL,
        },
        "rows": ROWS,
        "scaling": scaling(),
        "breakdown": PARTS,
        "load_average_1min": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }


class FwCostSummary:
    """Prints the kernel-measured tables next to pytest-benchmark's own, and writes them as JSON."""

    name = "fw-cost-summary"

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter, config: pytest.Config
    ) -> None:
        if not ROWS and not PARTS:
            return
        tr = terminalreporter
        tr.section(
            "NIC firewall cost (port_from_vm) vs nlab_empty, kernel ns per packet"
            f" (goals: established <= {GOALS['established']:g}x, new <= {GOALS['new']:g}x,"
            f" most rules <= {SCALE_GOAL}x fewest)"
        )
        tr.write_line(
            f"{'rules':>10} {'packet':<6} {'flow':<11} {'method':<13} {'path':>7} {'floor':>7} {'extra':>7}"
            " ratio  goal"
        )
        order = {"new": 0, "established": 1}

        def key(r: dict) -> tuple:
            return (
                order[r["flow"]],
                r["method"] != "single",
                r["packet"],
                r["rules"],
                not r.get("cache", True),
            )

        for r in sorted(ROWS, key=key):
            rules = str(r["rules"]) if r.get("cache", True) else f"{r['rules']} off"
            tr.write_line(
                f"{rules:>10} {r['packet']:<6} {r['flow']:<11} {r['method']:<13} {r['path_ns']:>7.1f}"
                f" {r['floor_ns']:>7.1f} {r['extra_ns']:>7.1f} {r['ratio']:>5.2f}x"
                f"  <={r['goal_max']:g}x {'met' if r['goal_met'] else 'NOT met'}"
            )
        for s in scaling():
            extra = "-" if s["extra_ratio"] is None else f"{s['extra_ratio']:.2f}x"
            tr.write_line(
                f"{s['high_rules']} vs {s['low_rules']} rules, {s['flow']} {s['packet']} {s['method']}:"
                f" {s['high_ns']:.1f} / {s['low_ns']:.1f} ns = {s['ratio']:.2f}x (above the floor: {extra})"
                f"  <={SCALE_GOAL}x {'met' if s['goal_met'] else 'NOT met'}"
            )
        if PARTS:
            counts = list(PARTS[0]["ns_by_rules"])
            tr.write_line(
                "established ACK by part, warm, untagged trunk port (ns by rule count: "
                + ", ".join(map(str, counts))
                + "):"
            )
            for p in PARTS:
                ns = " ".join(f"{p['ns_by_rules'][c]:>6.0f}" for c in counts)
                tr.write_line(f"  {p['part']:<16} {ns}   floor {p['floor_ns']:.0f}")
        for method, text in METHODS.items():
            tr.write_line(f"{method}: {text}")
        data = table()
        record.record("test_fw_cost", "fw-cost", figures=data, ratios=headline(), baseline=data["floor"])
        out = config.rootpath / REPORT_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        tr.write_line(f"written to {out}")
