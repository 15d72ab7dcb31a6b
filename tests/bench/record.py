"""What the benchmarks of one `make bench` session recorded, by suite (module), until the
session's end writes it to $BENCH_OUT (netns_lab.features.compliance.report.bench).

Tests record through the `bench_record` fixture (tests/bench/conftest.py); the summaries that
compute their table at the session's end call `record` directly.
"""

from __future__ import annotations

from typing import Any

from netns_lab.features.compliance.report.bench import Result, quick

__all__ = ["RESULTS", "quick", "record"]

RESULTS: dict[str, list[Result]] = {}


def record(
    suite: str,
    name: str,
    *,
    figures: dict[str, Any] | None = None,
    ratios: dict[str, float | None] | None = None,
    baseline: str | None = None,
) -> None:
    """Keep one result of ``suite``; a second record of the same name replaces the first."""
    results = RESULTS.setdefault(suite, [])
    results[:] = [r for r in results if r.name != name]
    results.append(Result(name, dict(figures or {}), dict(ratios or {}), baseline))
