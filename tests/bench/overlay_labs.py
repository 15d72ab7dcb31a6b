"""labs/overlay.yaml built by `nlab up` for the overlay benchmarks, one lab per mode under a
name of its own (the mode set in the file's `overlay.mode`), down and checked for leftovers after.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from netns_lab.topology import loader
from netns_lab.topology.model import Topology
from tests.lab.conftest import REPO, Lab, running

OVERLAY = REPO / "labs" / "overlay.yaml"
MODE_LINE = "\n  mode: controller\n"


def variant(directory: Path, mode: str) -> Path:
    """labs/overlay.yaml with `overlay.mode` set to `mode`."""
    text = OVERLAY.read_text()
    assert text.count(MODE_LINE) == 1, "labs/overlay.yaml changed: update the benchmark"
    path = directory / f"overlay-{mode}.yaml"
    path.write_text(text.replace(MODE_LINE, f"\n  mode: {mode}\n"))
    return path


@contextlib.contextmanager
def overlay_up(directory: Path, mode: str) -> Iterator[tuple[Lab, Topology]]:
    """The overlay lab up in `mode`, with its topology as built (the lab's own MACs)."""
    path = variant(directory, mode)
    with running(path) as lab:
        yield lab, loader.load_text(path.read_text(), str(path), lab=lab.name)


def in_ns(lab: Lab, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", lab.ns(node), *argv], capture_output=True, text=True)


def ping(lab: Lab, vm: str, ip: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return in_ns(lab, vm, "ping", "-n", "-q", "-c", "1", "-W", "2", *extra, ip)
