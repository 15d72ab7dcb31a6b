"""The suite's privilege levels as markers, applied by directory rather than by each module.

    tests/unit   no root: schema, loader, compiler, golden files
    tests/bpf    marked `root`: the real programs through BPF_PROG_TEST_RUN
    tests/lab    marked `root` and `lab`: real namespaces, each test lab under a name of its own
    tests/bench  marked `root` (and `lab` where they build labs): figures, never asserted

A `root` test is skipped, with the reason, when the suite does not run as root; CI runs as root
and must run them all. `-m "not lab"` leaves the lab tests out.

How the tests check, everywhere (the habits of this suite):
- a negative test (nothing leaked, nothing copied, nothing reached) carries its positive control
  in the same test and through the same tap: the same capture sees a frame that should arrive;
- no fixed sleep before "nothing arrived": a barrier frame, sent after the attack along a path
  the capture sees, is awaited; once it is there, anything sent before it would be too;
- exact counts and before/after deltas wherever the value is knowable (counters are never reset:
  snapshot, act, compare the difference); bounds only for what is random, and then tight;
- status and health are checked against the kernel (`ip`, `tc`, bpffs), not against the model
  they were made from, and a lab broken on purpose must come out unhealthy with its reason;
- every CLI command and its human output are run at least once, and the README's tour as printed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MARKS = {"bpf": ("root",), "lab": ("root", "lab"), "bench": ("root",)}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    not_root = pytest.mark.skip(reason="needs root (namespaces, eBPF): run the suite as root")
    for item in items:
        try:
            level = item.path.relative_to(HERE).parts[0]
        except ValueError:
            continue
        for name in MARKS.get(level, ()):
            item.add_marker(name)
        if item.get_closest_marker("root") is not None and os.geteuid() != 0:
            item.add_marker(not_root)
