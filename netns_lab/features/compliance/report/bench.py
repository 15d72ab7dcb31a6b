"""Benchmark results as files: one JSON document per benchmark module, written at the end of a
`make bench` session and read back by the plots and by `nlab report`.

    {"suite": "test_fw_cost", "machine": {...}, "time": "2026-...Z", "quick": false,
     "results": [{"name": ..., "figures": {...}, "ratios": {name: value}, "baseline": ...}]}

The machine description is taken when the document is written: ratios are comparable within
one document, figures only on the same machine under the same load.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_DIR = "bench-results"
OUT_ENV = "BENCH_OUT"
QUICK_ENV = "BENCH_QUICK"


def quick() -> bool:
    """True when the session runs the short version (`make bench QUICK=1`)."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


def results_dir(root: Path) -> Path:
    """$BENCH_OUT if set (relative to ``root``), else bench-results/ in ``root``."""
    return root / os.environ.get(OUT_ENV, DEFAULT_DIR)


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def _bcc_version() -> str | None:
    try:
        import bcc  # only where the benchmarks run
    except ImportError:
        return None
    return getattr(bcc, "__version__", None)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "model": _cpu_model(),
        "load": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "bcc": _bcc_version(),
        "argv": sys.argv[1:],
    }


@dataclass
class Result:
    """One benchmark's figures (its own shape), its headline ratios, and what they are relative to."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    baseline: str | None = None

    def doc(self) -> dict[str, Any]:
        return {"name": self.name, "figures": self.figures, "ratios": self.ratios, "baseline": self.baseline}


def document(suite: str, results: list[Result], *, now: datetime | None = None) -> dict[str, Any]:
    when = (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "suite": suite,
        "machine": machine(),
        "time": when,
        "quick": quick(),
        "results": [r.doc() for r in results],
    }


def write(directory: Path, suites: dict[str, list[Result]]) -> list[Path]:
    """One <suite>.json per suite with results; the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for suite, results in sorted(suites.items()):
        if not results:
            continue
        path = directory / f"{suite}.json"
        path.write_text(json.dumps(document(suite, results), indent=2, default=str) + "\n")
        written.append(path)
    return written


class ResultsError(ValueError):
    """A results file that cannot be read or has not the shape above (the message names it)."""


def load(directory: Path) -> list[dict[str, Any]]:
    """Every results document of ``directory``, by suite name."""
    docs = []
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ResultsError(f"{path}: not a results document: {err}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            raise ResultsError(f"{path}: results: missing (not a benchmark results document)")
        doc.setdefault("suite", path.stem)
        docs.append(doc)
    return docs
