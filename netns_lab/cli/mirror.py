"""`nlab mirror ...`: port-mirroring sessions of a running lab (NIST 5), on every host."""

from __future__ import annotations

import argparse
from typing import Any

from netns_lab.cli.base import (
    at_flags,
    key_flags,
    verb_group,
)
from netns_lab.cli.render import line
from netns_lab.features.mirror import live as mirror_live
from netns_lab.lab import running
from netns_lab.topology.errors import TopologyError

SESSION_FLAGS = ("source", "dest", "direction", "tap", "snaplen", "sample", "vlan")


def cmd_list(args: argparse.Namespace, lab: str) -> dict[str, Any]:
    with running.opened(lab) as live:
        return {"lab": lab, "sessions": mirror_live.documents(live)}


def _sources(text: str) -> list[str] | str:
    items = [item.strip() for item in text.split(",") if item.strip()]
    return items[0] if len(items) == 1 else items


def cmd_add(args: argparse.Namespace, lab: str) -> dict[str, Any]:
    uplink = args.dest.removeprefix("uplink:") if args.dest.startswith("uplink:") else None
    session: dict[str, Any] = {
        "source": _sources(args.source),
        "dest": {"uplink": uplink} if uplink is not None else args.dest,
        "direction": args.direction,
    }
    if args.tap:
        session["tap"] = args.tap
    if args.snaplen is not None:
        session["snaplen"] = args.snaplen
    if args.sample is not None:
        session["sample"] = args.sample
    if args.vlan is not None:
        session["vlan"] = args.vlan

    def edit(data: dict[str, Any]) -> None:
        sessions = data.get("mirrors") or {}
        if args.name in sessions:
            raise ValueError(f"name: a session {args.name!r} exists (delete it first)")
        sessions[args.name] = session
        data["mirrors"] = sessions

    with running.opened(lab) as live:
        try:
            live.change(edit)
        except TopologyError as err:
            raise at_flags(err, "mirror add", f"mirrors.{args.name}", key_flags(SESSION_FLAGS)) from None
        return {"lab": lab, "added": args.name, "session": session}


def cmd_del(args: argparse.Namespace, lab: str) -> dict[str, Any]:
    def edit(data: dict[str, Any]) -> None:
        sessions = data.get("mirrors") or {}
        if args.name not in sessions:
            names = ", ".join(sessions) or "none"
            raise ValueError(f"name: no session {args.name!r} (sessions: {names})")
        del sessions[args.name]
        data["mirrors"] = sessions or None

    with running.opened(lab) as live:
        live.change(edit)
        return {"lab": lab, "deleted": args.name}


def render(verb: str, doc: dict[str, Any]) -> None:
    if verb != "list":
        what = "added" if "added" in doc else "deleted"
        line(f"mirror session {doc[what]!r} {what} on every host of lab {doc['lab']}")
        return
    if not doc["sessions"]:
        line(f"lab {doc['lab']}: no mirror sessions")
        return
    head = ("session", "sources", "dest", "dir", "tap", "packets", "bytes", "dropped")
    line("{:<24} {:<20} {:<16} {:<5} {:<7} {:>9} {:>11} {:>8}".format(*head))
    for s in doc["sessions"]:
        c = s["counters"]
        extra = "".join(
            f" {k}={v}" for k, v in (("snaplen", s["snaplen"]), ("sample", s["sample"])) if v not in (None, 1)
        )
        line(
            f"{s['name']:<24} {','.join(s['sources']):<20} {s['dest']:<16} {s['direction']:<5} {s['tap']:<7}"
            f" {c['packets']:>9} {c['bytes']:>11} {c['dropped']:>8}{extra}"
        )


def register(sub: Any, name: str, summary: str) -> None:
    description = "copies of VM ports' frames to analyzer VMs: add, delete, list with counters"
    verb = verb_group(sub, name, summary, description, running.NotRunning, render)
    verb("list", cmd_list, "sessions (promiscuous NICs included) with their counters")
    add = verb("add", cmd_add, "add a session on every host at once")
    add.add_argument("name")
    add.add_argument("--source", required=True, help="VM[,VM...] or VM.ethN")
    add.add_argument("--direction", required=True, choices=("in", "out", "both"))
    add.add_argument("--dest", required=True, help="an analyzer VM, or uplink:NETWORK / uplink:HOST.PNIC")
    add.add_argument("--vlan", help="the mirror VLAN, when copies leave their host")
    add.add_argument("--tap", choices=("before", "after"), help="before (default) or after the firewall")
    add.add_argument("--snaplen", type=int, help="truncate copies to N bytes (64..65535)")
    add.add_argument("--sample", type=int, help="copy 1 frame in N")
    verb("del", cmd_del, "delete a session on every host at once").add_argument("name")
