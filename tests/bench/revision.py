"""Cost benchmarks of the working tree's programs against a base revision's, in one run.

`base_tree` writes `git show BASE:ebpf/` into a directory, `load` compiles a SwitchDataplane
from it (or from the working tree) with only the maps its source declares, and `interleaved`
runs several loaded programs in turn, round after round, on one frame: the medians of their ns
and of each round's ratios, so that drift of this shared machine cancels out of the ratios.
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

REPO = Path(__file__).resolve().parents[2]
PORT = 1  # the loopback's ifindex: test-run only names it


def base_tree(base: str, into: Path) -> None:
    """`base`'s ebpf/ as files under `into` (ebpf/vswitch.c, ebpf/include/...)."""

    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=True).stdout

    for name in git("ls-tree", "-r", "--name-only", base, "ebpf").decode().split():
        path = into / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(git("show", f"{base}:{name}"))


def same_as_worktree(base: str) -> bool:
    diff = subprocess.run(["git", "diff", "--quiet", base, "--", "ebpf"], cwd=REPO, check=False)
    return diff.returncode == 0


def load(
    ebpf_dir: Path | None,
    monkeypatch: pytest.MonkeyPatch,
    like: SwitchDataplane | None = None,
    vm_ports: bool = True,
) -> SwitchDataplane:
    """A dataplane compiled from `ebpf_dir` (None: the working tree's), with the maps and the
    programs loaded on demand of ours its source declares (a base may lack some)."""
    from dataplane import bpf, switch
    from dataplane.switch import SwitchDataplane

    with monkeypatch.context() as m:
        if ebpf_dir is not None:
            m.setattr(bpf, "EBPF_DIR", ebpf_dir)
            m.setattr(bpf, "INCLUDE_DIR", ebpf_dir / "include")
            source = (ebpf_dir / switch.SOURCE).read_text()
            for names in ("MAPS", "SWITCH_MAPS"):
                declared = tuple(n for n in getattr(switch, names) if re.search(rf"[(\s]{n}\s*,", source))
                m.setattr(switch, names, declared)
            later = tuple(n for n in switch.ON_DEMAND if re.search(rf"\bint\s+{n}\s*\(", source))
            m.setattr(switch, "ON_DEMAND", later)
        return SwitchDataplane.load(vm_ports=vm_ports, like=like)


Loader = Callable[["Path | None", pytest.MonkeyPatch, "SwitchDataplane | None"], "SwitchDataplane"]


@contextlib.contextmanager
def planes(tmp: Path, loader: Loader, copies: tuple[str, ...]) -> Iterator[dict[str, SwitchDataplane]]:
    """ "base" (the ebpf/ of $NLAB_COST_BASE, default main, written under `tmp`), "now" (the
    working tree's) and `copies` of now (its programs, maps of their own), each made by
    `loader(ebpf_dir, monkeypatch, like)`, all closed at the end. Skips when the base's ebpf/ is
    the working tree's."""
    base = os.environ.get("NLAB_COST_BASE", "main")
    if same_as_worktree(base):
        pytest.skip(f"ebpf/ of {base} is the working tree's: nothing to compare")
    base_tree(base, tmp)
    monkeypatch = pytest.MonkeyPatch()
    loaded: dict[str, SwitchDataplane] = {}
    try:
        loaded["base"] = loader(tmp / "ebpf", monkeypatch, None)
        loaded["now"] = loader(None, monkeypatch, None)
        for name in copies:
            loaded[name] = loader(None, monkeypatch, loaded["now"])
        yield loaded
    finally:
        for dp in loaded.values():
            dp.close()
        monkeypatch.undo()


def interleaved(
    programs: dict[str, int],
    floor: int,
    frame: bytes,
    rounds: int,
    repeat: int,
    ratios: dict[str, tuple[str, str]],
) -> dict[str, float]:
    """Median ns of each program (fd by name) and of the floor over `rounds` rounds of `repeat`
    warm iterations each (the kernel's mean per iteration), every program once per round in a
    rotating order; and for each name of `ratios`, the median of each round's a/b."""
    from dataplane import testrun

    names = list(programs)
    samples: dict[str, list[int]] = {name: [] for name in ("floor", *names)}
    for i in range(rounds):
        order = names[i % len(names) :] + names[: i % len(names)]  # none always runs first
        samples["floor"].append(testrun.run(floor, frame, ifindex=PORT, repeat=repeat).ns_per_run)
        for name in order:
            result = testrun.run(programs[name], frame, ifindex=PORT, repeat=repeat)
            assert result.passed, f"{name}: dropped ({result.retval})"
            samples[name].append(result.ns_per_run)
    medians = {name: float(statistics.median(s)) for name, s in samples.items()}
    for name, (a, b) in ratios.items():
        medians[name] = statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))
    return medians
