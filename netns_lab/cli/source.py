"""Where a command's topology comes from: a topology file, a running lab (its recorded
topology), or the reference lab of the checkout."""

from __future__ import annotations

import argparse
from pathlib import Path

from netns_lab.cli.base import UsageError, chosen_lab, not_up, resolve_lab
from netns_lab.lab import state
from netns_lab.topology import loader
from netns_lab.topology.model import Topology

DEFAULT_TOPOLOGY = "labs/nist-800-125b.yaml"


def default_topology() -> str:
    """labs/nist-800-125b.yaml of the checkout, wherever nlab is called from."""
    here = Path(DEFAULT_TOPOLOGY)
    if here.exists():
        return str(here)
    return str(Path(__file__).resolve().parents[2] / DEFAULT_TOPOLOGY)


def load(path: str, name: str | None = None) -> tuple[Topology, str]:
    """The topology of a file (under lab ``name`` if given), and the file's text."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise UsageError(f"{path}: cannot read the topology file: {err.strerror}") from None
    return loader.load_text(text, path, lab=name), text


def running(lab: str) -> tuple[Topology, state.LabState]:
    """The topology a running lab was built from (one machine's part of it, for a part), and
    its state."""
    st = state.LabState.read(lab)
    text = st.topology_text() if st else None
    if st is None or text is None:
        raise not_up(lab)
    return st.topology(text, st.source or "topology.yaml"), st


def is_file(target: str | None) -> bool:
    return bool(target) and (target.endswith((".yaml", ".yml")) or Path(target).is_file())


def target(args: argparse.Namespace) -> tuple[Topology, bool]:
    """The topology of ``args.target`` (a file, or a lab by its positional name) or of
    ``--lab``; else of the chosen lab if any, else the reference lab. True when it runs."""
    given = None if is_file(args.target) else args.target
    if is_file(args.target) and getattr(args, "lab", None):
        raise UsageError(f"--lab {args.lab} and the topology file {args.target}: give one of them")
    if is_file(args.target):
        return load(args.target)[0], False
    lab = resolve_lab(chosen_lab(args, given), required=False)
    if lab:
        return running(lab)[0], True
    return load(default_topology())[0], False
