"""`nlab migrate VM HOST`: move a VM of a running lab to another host, its kernel firewall rules,
connection entries, port security, VLAN policy and mirror sessions with it
(`netns_lab.features.migration`). Exit 2 when refused (nothing touched), 1 when it failed and
was rolled back (the VM runs on its source host)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from netns_lab.cli.base import (
    EXIT_FAIL,
    emit,
    emit_json,
    error_document,
    json_option,
    lab_option,
    running_lab,
)
from netns_lab.cli.render import out

DESCRIPTION = (
    "Move a VM of a running lab to another host with its kernel firewall rules, connection"
    " entries, port security, VLAN policy and mirror sessions. Exit 2 when refused (nothing"
    " touched), 1 when it failed and was rolled back (the VM runs on its source host)."
)


def render(doc: dict[str, Any]) -> None:
    carried = doc["connections"]["copied"]
    out.print(
        f"{doc['vm']}: {doc['from']} -> {doc['to']}  (downtime {doc['downtime_ms']:.1f} ms,"
        f" {carried} connection{'s' if carried != 1 else ''} carried)"
    )
    for nic in doc["nics"]:
        vswitch = nic["vswitch"]
        moved = f"{vswitch['from']} -> {vswitch['to']}" if vswitch["from"] != vswitch["to"] else vswitch["to"]
        where = f"segment {nic['segment']}" if nic["segment"] else f"vSwitch {moved}"
        vlan = f", VLAN {nic['vlan']}" if nic["vlan"] is not None else ""
        fw = ", kernel firewall" if nic["kernel_firewall"] else ""
        out.print(f"  {nic['nic']}: {where}{vlan}{fw}")
    if doc["kernel_rules"]:
        out.print(f"  rules followed: {', '.join(str(r) for r in doc['kernel_rules'])}")
    if doc["mirrors"]:
        out.print(f"  mirror sessions followed: {', '.join(doc['mirrors'])}")
    out.print("  " + "  ".join(f"{p['phase']} {p['ms']:.1f}" for p in doc["phases"]) + " (ms)")
    for warning in doc["warnings"]:
        out.print(f"warning: {warning}")
    for problem in doc["problems"]:
        out.print(f"problem: {problem}")


def cmd_migrate(args: argparse.Namespace) -> int:
    from netns_lab.features.migration import live

    lab = running_lab(args)
    try:
        doc = live.migrate(lab, args.vm, args.host)
    except live.Failed as err:
        print(f"nlab migrate: {err}", file=sys.stderr)
        if args.json:
            emit_json({**error_document(EXIT_FAIL, err), "migration": err.report})
        return EXIT_FAIL
    emit(args, doc, render)
    return 0


def register(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(name, help=summary, description=DESCRIPTION)
    p.set_defaults(fn=cmd_migrate)
    json_option(p)
    lab_option(p)
    p.add_argument("vm", metavar="VM", help="the VM to move")
    p.add_argument("host", metavar="HOST", help="the host it moves to")
