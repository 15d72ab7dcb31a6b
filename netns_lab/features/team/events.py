"""The team monitors' events as the rest of the lab reads them: `nlab watch` (through the lab's
event hub), `nlab status` and `nlab teams`.

Each host's monitor appends JSON lines to ``/run/netns-lab/<lab>/team-<host>.events`` (the file
is the record: it outlives a watch and a hub restart). Its ``event`` says what happened:
``state`` (the monitor started, the members' states), ``member`` (a member failed or recovered),
``failover`` / ``failback`` (the active member moved) and ``error`` (the dataplane refused a
move). What a watcher sees of them:

- ``{"kind": "team", "lab", "host", "team", "event": "failover"|"failback", "from", "to", "cause",
  "latency_ms", "ambiguous", "time"}``: the team moved (exactly one per move);
- ``{"kind": "team-member", "lab", "host", "team", "member", "state": "failed"|"ok", "cause",
  "time"}``: a member's health changed (a silent standby is only ever this);
- ``{"kind": "team-error", "lab", "host", "team", "to", "reason", "time"}``.

A ``state`` line is the monitor's own bookkeeping and reaches nobody.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from netns_lab.lab.state import state_dir

PREFIX, SUFFIX = "team-", ".events"
KINDS = {"failover": "team", "failback": "team", "member": "team-member", "error": "team-error"}
WATCHED = frozenset(KINDS.values())

Record = dict[str, Any]


def path(lab: str, host: str) -> Path:
    return state_dir(lab) / f"{PREFIX}{host}{SUFFIX}"


def read(lab: str, host: str) -> list[Record]:
    """Every line the host's monitor wrote (none if it wrote nothing yet); torn lines skipped."""
    try:
        text = path(lab, host).read_text()
    except OSError:
        return []
    return [r for r in map(_parse, text.splitlines()) if r is not None]


def watch_record(raw: Record, lab: str, host: str) -> Record | None:
    """What a watcher sees of a monitor's line (None for its bookkeeping)."""
    kind = KINDS.get(raw.get("event", ""))
    if kind is None or "team" not in raw:
        return None
    record: Record = {"kind": kind, "lab": raw.get("lab", lab), "host": raw.get("host", host)}
    record["team"] = raw["team"]
    if kind == "team":
        record.update(
            {
                "event": raw["event"],
                "from": raw.get("from"),
                "to": raw.get("to"),
                "cause": raw.get("cause"),
                "latency_ms": raw.get("latency_ms"),
                "ambiguous": bool(raw.get("ambiguous", False)),
            }
        )
    elif kind == "team-member":
        record.update(member=raw.get("member"), state=raw.get("state"), cause=raw.get("cause"))
    else:
        record.update(to=raw.get("to"), reason=raw.get("reason"))
    record["time"] = raw.get("time", 0.0)
    return record


def last_move(lab: str, host: str, team: str) -> Record | None:
    """The team's latest failover or failback, as a watcher sees it."""
    for raw in reversed(read(lab, host)):
        if raw.get("team") == team and KINDS.get(raw.get("event", "")) == "team":
            return watch_record(raw, lab, host)
    return None


def member_states(lab: str, host: str, team: str) -> dict[str, str]:
    """member -> ``ok`` or ``failed (CAUSE)`` as the team's monitor last said (since it last
    started: its ``state`` line, then each ``member`` line); empty before it said anything."""
    states: dict[str, str] = {}
    for raw in read(lab, host):
        if raw.get("team") != team:
            continue
        if raw.get("event") == "state":
            states = {m: "ok" if not s.startswith("failed") else s for m, s in raw.get("members", {}).items()}
        elif raw.get("event") == "member":
            states[raw["member"]] = "ok" if raw.get("state") == "ok" else f"failed ({raw.get('cause')})"
    return states


def describe(r: Record) -> str:
    """A watch record in words: `failover eth0 → eth1 (carrier, detected in 0.95 ms)`."""
    if r["kind"] == "team-member":
        return f"{r['member']} {r['state']}" + (f" ({r['cause']})" if r.get("cause") else "")
    if r["kind"] == "team-error":
        return f"cannot make {r['to']} active: {r['reason']}"
    if r["event"] == "failback":
        how = f"failback, after {r['latency_ms']:g} ms of hold-down"
    else:
        ambiguous = ", ambiguous" if r.get("ambiguous") else ""
        how = f"{r['cause']}{ambiguous}, detected in {r['latency_ms']:g} ms"
    return f"{r['event']} {r['from']} → {r['to']} ({how})"


class Tail:
    """The lines every monitor of a lab appends from now on (files that appear later are read
    from their start: everything in them is new), as watch records."""

    def __init__(self, lab: str) -> None:
        self.lab = lab
        self.offsets: dict[Path, int] = {}
        self.partial: dict[Path, bytes] = {}
        for p in self._files():
            with contextlib.suppress(OSError):
                self.offsets[p] = p.stat().st_size

    def _files(self) -> list[Path]:
        return sorted(state_dir(self.lab).glob(f"{PREFIX}*{SUFFIX}"))

    def poll(self) -> list[Record]:
        found: list[Record] = []
        for p in self._files():
            try:
                with open(p, "rb") as f:
                    f.seek(self.offsets.get(p, 0))
                    data = self.partial.pop(p, b"") + f.read()
                    self.offsets[p] = f.tell()
            except OSError:
                continue
            *lines, rest = data.split(b"\n")
            if rest:
                self.partial[p] = rest  # the monitor is still writing that line
            host = p.name[len(PREFIX) : -len(SUFFIX)]
            for line in lines:
                raw = _parse(line.decode(errors="replace"))
                record = watch_record(raw, self.lab, host) if raw is not None else None
                if record is not None:
                    found.append(record)
        return sorted(found, key=lambda r: r["time"])


def _parse(line: str) -> Record | None:
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    return raw if isinstance(raw, dict) else None
