"""`nlab report [--lab NAME] --out DIR [--bench DIR]`: the compliance report of a running lab (or,
with no lab up, of the reference topology: the static audit only) as DIR/index.html and
DIR/report.md, with the topology drawing, the benchmark plots and the verification's evidence."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from netns_lab.cli.base import UsageError, chosen_lab, emit, json_option, lab_option, resolve_lab
from netns_lab.cli.render import out as console
from netns_lab.cli.source import default_topology, load, running

REPO = Path(__file__).resolve().parents[2]


def _out_dir(given: str) -> Path:
    """The output folder, made if missing and proven writable before any work is done."""
    path = Path(given)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".nlab-report-"):
            pass
    except OSError as err:
        raise UsageError(f"--out {given}: cannot write there: {err.strerror or err}") from None
    return path


def _bench_dir(given: str | None) -> Path | None:
    from netns_lab.features.compliance.report import bench

    if given is None:
        default = bench.results_dir(REPO)
        return default if default.is_dir() else None
    path = Path(given)
    if not path.is_dir():
        raise UsageError(f"--bench {given}: no such folder (make bench writes {bench.DEFAULT_DIR}/)")
    return path


def cmd_report(args: argparse.Namespace) -> int:
    from netns_lab.features.compliance import report
    from netns_lab.features.compliance.report import bench, inputs

    out = _out_dir(args.out)
    bench_dir = _bench_dir(args.bench)
    lab = resolve_lab(chosen_lab(args), required=False)
    began = time.monotonic()
    if lab:
        try:
            topo, _ = running(lab)
        except UsageError as err:
            raise UsageError(f"--lab {lab}: {err}") from None
        source = f"lab {lab} (running)"
    else:
        path = default_topology()
        topo, source = load(path)[0], path
    try:
        gathered = inputs.gather(topo, running=bool(lab), source=source, out=out, bench_dir=bench_dir)
    except bench.ResultsError as err:
        raise UsageError(f"--bench {bench_dir}: {err}") from None
    pages = report.write(out, gathered)
    doc = {
        "lab": topo.lab,
        "out": str(out),
        "pages": [str(p) for p in pages],
        "notes": gathered.notes,
        "seconds": round(time.monotonic() - began, 2),
    }
    emit(args, doc, render)
    return 0


def render(doc: dict[str, Any]) -> None:
    for note in doc["notes"]:
        print(f"note: {note}", file=sys.stderr)
    console.print(f"report of lab {doc['lab']}: " + ", ".join(doc["pages"]) + f" ({doc['seconds']} s)")


def register(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(name, help=summary, description=summary)
    p.set_defaults(fn=cmd_report)
    json_option(p)
    lab_option(p)
    p.add_argument("--out", required=True, help="the folder to write index.html and report.md into")
    p.add_argument("--bench", help="benchmark results folder (default: bench-results/ of the checkout)")
