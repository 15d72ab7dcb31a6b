"""Migration events: one JSON line per phase in the lab's state (``migration.events``), which
`nlab watch` follows beside the firewall's verdicts:

    {"kind": "migration", "lab", "vm", "from", "to", "phase", "ms", "time"}

``phase``: check, rules, mirror, conntrack, port, announce, cleanup, then done or rolled-back;
``ms``: how long the phase took (for done: the whole migration).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from netns_lab.lab.state import state_dir

FILE = "migration.events"


def path(lab: str) -> Path:
    return state_dir(lab) / FILE


def record(lab: str, vm: str, source: str, target: str, phase: str, ms: float) -> dict[str, Any]:
    return {
        "kind": "migration",
        "lab": lab,
        "vm": vm,
        "from": source,
        "to": target,
        "phase": phase,
        "ms": round(ms, 3),
        "time": round(time.time(), 6),
    }


def append(lab: str, rec: dict[str, Any]) -> None:
    """One line, written whole (O_APPEND): a follower never reads half of it."""
    try:
        with open(path(lab), "a") as out:
            out.write(json.dumps(rec) + "\n")
    except FileNotFoundError:
        pass  # the lab's state is gone (taken down meanwhile): nobody to tell


class Follower:
    """The events appended since it was made (`nlab watch`): reads whole lines only, and finds
    the file when the lab's first migration creates it."""

    def __init__(self, lab: str) -> None:
        self.path = path(lab)
        self._offset = self.path.stat().st_size if self.path.exists() else 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        found = []
        for text in lines:
            try:
                found.append(json.loads(text))
            except ValueError:
                continue  # not ours to judge: a line some other writer mangled
        return found
