"""The benchmark session: results written as JSON with plots at its end, the quick option, and
the scale benchmark's bookkeeping.

Every benchmark records its figures with `bench_record(name, figures=..., ratios=...,
baseline=...)`; at the session's end each module's results go to $BENCH_OUT/<module>.json
(default bench-results/ in the checkout) with a description of the machine, and the plots are
drawn from those files into $BENCH_OUT/plots/. `--quick` (or BENCH_QUICK=1, `make bench QUICK=1`)
makes the modules run fewer rounds and sizes: for a look, not for figures to quote.

Scale benchmarks put their mean (seconds) into `MEANS`, keyed (VMs, "up"|"down", "ours"|"batch");
`pytest_terminal_summary` turns them into ours/baseline ratios and ms per VM, prints them and
writes them to .benchmarks/scale-ratios.json. The figures are reported, never asserted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netns_lab.features.compliance.report import bench, plots
from tests.bench import ipbatch, record

Key = tuple[int, str, str]
MEANS: dict[Key, float] = {}

UP_RATIO_GOAL = 1.5  # ours / ip -batch
MS_PER_VM_GOAL = 5.0  # at the largest size
RATIOS_FILE = Path(".benchmarks") / "scale-ratios.json"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--quick", action="store_true", help="fewer rounds and sizes (BENCH_QUICK=1)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--quick", default=False):
        os.environ[bench.QUICK_ENV] = "1"  # read by the modules when they are imported, after this


Recorder = Callable[..., None]


@pytest.fixture
def bench_record(request: pytest.FixtureRequest) -> Recorder:
    """record(name, figures=..., ratios=..., baseline=...) into this module's results file."""
    suite = request.module.__name__.rsplit(".", 1)[-1]

    def recorder(
        name: str,
        figures: dict[str, Any] | None = None,
        ratios: dict[str, float | None] | None = None,
        baseline: str | None = None,
    ) -> None:
        record.record(suite, name, figures=figures, ratios=ratios, baseline=baseline)

    return recorder


@pytest.hookimpl(trylast=True)  # after the modules' own summaries, which record their tables
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    _scale_summary(terminalreporter, config)
    if not record.RESULTS:
        return
    out = bench.results_dir(config.rootpath)
    written = bench.write(out, record.RESULTS)
    tr = terminalreporter
    tr.section("benchmark results")
    for path in written:
        tr.write_line(f"written {path}")
    try:
        drawn = plots.plots(out)
    except ImportError as err:
        tr.write_line(f"no plots: {err} (apt-get install python3-matplotlib)")
        return
    for path in drawn:
        tr.write_line(f"plot {path}")


@pytest.fixture
def scale_means() -> dict[Key, float]:
    return MEANS


def _row(vms: int, phase: str) -> dict[str, float | None]:
    ours, batch = MEANS.get((vms, phase, "ours")), MEANS.get((vms, phase, "batch"))
    return {
        "ours_ms": None if ours is None else round(ours * 1e3, 2),
        "batch_ms": None if batch is None else round(batch * 1e3, 2),
        "ratio": None if ours is None or not batch else round(ours / batch, 2),
        "ours_ms_per_vm": None if ours is None else round(ours * 1e3 / vms, 3),
    }


def _table() -> dict:
    sizes = sorted({vms for vms, _, _ in MEANS})
    rows = [{"vms": vms, "up": _row(vms, "up"), "down": _row(vms, "down")} for vms in sizes]
    loads = {vms: MEANS[vms, "load", "ours"] for vms in sizes if (vms, "load", "ours") in MEANS}
    for row in rows:
        if row["vms"] in loads:
            row["load_ms"] = round(loads[row["vms"]] * 1e3, 2)
    largest = rows[-1] if rows else None
    goals = {
        "up_ratio_max": UP_RATIO_GOAL,
        "up_ms_per_vm_max_at_largest": MS_PER_VM_GOAL,
        "up_ratio_met": all(r["up"]["ratio"] is not None and r["up"]["ratio"] <= UP_RATIO_GOAL for r in rows),
        "up_ms_per_vm_met": bool(
            largest
            and largest["up"]["ours_ms_per_vm"] is not None
            and largest["up"]["ours_ms_per_vm"] <= MS_PER_VM_GOAL
        ),
    }
    return {
        "hosts": 4,
        "unit": "mean of the rounds, ms",
        "baseline": "one `ip -force -batch` process (tests/bench/ipbatch.py)",
        "baseline_omits": list(ipbatch.OMITTED),
        "rows": rows,
        "goals": goals,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _scale_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if not MEANS:
        return
    table = _table()
    ratios = {f"up_ours_per_batch_{r['vms']}vms": r["up"]["ratio"] for r in table["rows"]}
    record.record("test_scale", "scale", figures=table, ratios=ratios, baseline=table["baseline"])
    tr = terminalreporter
    tr.section("scale benchmark: ours vs one ip -batch (means, ms)")
    header = f"{'VMs':>4} {'phase':<5} {'ours':>9} {'ip -batch':>10} {'ours/batch':>11} {'ours ms/VM':>11}"
    tr.write_line(header)
    for row in table["rows"]:
        for phase in ("up", "down"):
            r = row[phase]
            tr.write_line(
                f"{row['vms']:>4} {phase:<5} {_fmt(r['ours_ms'], '9.1f')} {_fmt(r['batch_ms'], '10.1f')}"
                f" {_fmt(r['ratio'], '10.2f')}x {_fmt(r['ours_ms_per_vm'], '11.2f')}"
            )
    loads = ", ".join(f"{row['vms']} VMs {row['load_ms']:.1f}" for row in table["rows"] if "load_ms" in row)
    if loads:
        tr.write_line(f"loader (not in 'ours' up): {loads} ms")
    goals = table["goals"]
    tr.write_line(
        f"goals: up <= {UP_RATIO_GOAL}x ip -batch: {'met' if goals['up_ratio_met'] else 'NOT met'}; "
        f"<= {MS_PER_VM_GOAL} ms/VM at {table['rows'][-1]['vms']} VMs: "
        f"{'met' if goals['up_ms_per_vm_met'] else 'NOT met'}"
    )
    tr.write_line("the ip -batch baseline leaves out: " + "; ".join(ipbatch.OMITTED))
    out = config.rootpath / RATIOS_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=2) + "\n")
    tr.write_line(f"written to {out}")
