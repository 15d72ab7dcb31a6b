"""`nlab verify`: a running lab checked live against its model, with real packets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from netns_lab.cli.base import (
    EXIT_NONCOMPLIANT,
    UsageError,
    emit,
    json_option,
    lab_option,
    not_up,
    running_lab,
)
from netns_lab.cli.render import out

STATUS_COLOUR = {"pass": "green", "fail": "red", "skipped": "yellow"}


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the dataplane does what the model says, 3 when a check fails."""
    lab = running_lab(args)
    from netns_lab.features.compliance.verify import VerifyError, verify
    from netns_lab.lab.running import NotRunning, RunningLab

    try:
        with RunningLab(lab) as running:
            doc = verify(running, Path(args.evidence) if args.evidence else None)
    except NotRunning:
        raise not_up(lab) from None
    except VerifyError as err:
        raise UsageError(str(err)) from None
    emit(args, doc, render)
    return 0 if doc["ok"] else EXIT_NONCOMPLIANT


def render(doc: dict[str, Any]) -> None:
    verdict = "[green]as modelled[/]" if doc["ok"] else "[red]differs from its model[/]"
    out.print(f"[bold]verify[/] lab {doc['lab']}: {verdict} ({doc['seconds']} s)")
    for c in doc["checks"]:
        colour = STATUS_COLOUR[c["status"]]
        out.print(
            f" [{colour}]{c['status']:<7}[/] [bold]{c['id']:<12}[/] [dim]{' '.join(c['recommendations'])}[/]"
        )
        out.print(f"         {c['reason']}")
        for f in c["findings"]:
            out.print(
                f"         [red]{f['what']}[/]: {f['where']}: "
                f"expected {f['expected']}, observed {f['observed']}"
            )
            trace = f.get("trace")
            if isinstance(trace, dict):
                out.print(f"           trace: {trace['why']}")
        if c["evidence"]:
            files = ", ".join(f"{kind} {path}" for kind, path in sorted(c["evidence"].items()))
            out.print(f"         [dim]evidence: {files}[/]")


def register(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog="exit status 3 when the dataplane differs from the model (a check failed)",
    )
    p.set_defaults(fn=cmd_verify)
    json_option(p)
    p.add_argument("--evidence", metavar="DIR", help="write a pcap and a counter snapshot per check into DIR")
    lab_option(p)
