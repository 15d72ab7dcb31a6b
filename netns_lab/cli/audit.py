"""`nlab audit`: every NIST SP 800-125B recommendation and the switch-security settings of a
topology file or a running lab, statically (netns_lab/features/compliance/)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from netns_lab.cli.base import EXIT_NONCOMPLIANT, emit, json_option, lab_option
from netns_lab.cli.render import out
from netns_lab.cli.source import target
from netns_lab.features.compliance import audit as compliance
from netns_lab.features.compliance.recommendations import BY_ID

_COLOUR = {"met": "green", "not met": "red", "not applicable": "yellow"}


def cmd_audit(args: argparse.Namespace) -> int:
    """Exit 0 when everything is met or does not apply, 3 when something is not met."""
    topo, _ = target(args)
    doc = compliance.audit(topo)
    emit(args, doc, render)
    return 0 if compliance.compliant(doc) else EXIT_NONCOMPLIANT


def _status(status: str) -> str:
    return f"[{_COLOUR[status]}]{status}[/]"


def _detail(row: dict[str, Any]) -> str:
    objects = "".join(f"\n  - {escape(o)}" for o in row["objects"])
    return escape(row["reason"]) + objects


def render(doc: dict[str, Any]) -> None:
    rows = [*doc["recommendations"], *doc["settings"]]
    counts = {s: sum(r["status"] == s for r in rows) for s in _COLOUR}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    verdict = "[green]compliant[/]" if compliance.compliant(doc) else "[red]NOT compliant[/]"
    out.print(f"[bold]audit[/] of lab {doc['lab']}: {verdict} ({summary})")
    _table(
        "recommendations",
        ("id", "NIST", "recommendation", "status", "why (and what)"),
        [
            (
                r["id"],
                BY_ID[r["id"]].section,
                f'"{escape(BY_ID[r["id"]].title)}"',
                _status(r["status"]),
                _detail(r),
            )
            for r in doc["recommendations"]
        ],
    )
    _table(
        "switch-security settings",
        ("setting", "status", "why (and what)"),
        [(s["id"], _status(s["status"]), _detail(s)) for s in doc["settings"]],
    )


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = Table(*columns, title=title, title_justify="left", show_lines=True)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def register(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog="exit status 3 when a recommendation or a setting is not met, 2 on bad input",
    )
    p.set_defaults(fn=cmd_audit)
    json_option(p)
    p.add_argument("target", nargs="?", help="a topology file, or a lab (the same as --lab)")
    lab_option(p)
