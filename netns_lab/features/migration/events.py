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
    with open(path(lab), "a") as out:
        out.write(json.dumps(rec) + "\n")
