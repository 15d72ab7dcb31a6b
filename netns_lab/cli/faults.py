"""`nlab fail` and `nlab heal`: faults injected on the cables of a running lab (NIST 3: what a
NIC team must survive). LINK is ``HOST.PNIC`` or ``SWITCH.PORT``; see
`netns_lab.features.team.faults` for what each fault does."""

from __future__ import annotations

import argparse
from typing import Any

from netns_lab.cli.base import UsageError, emit, json_option, lab_option, running_lab
from netns_lab.cli.render import out
from netns_lab.cli.source import running


def _link(topo: Any, text: str) -> Any:
    from netns_lab.features.team import faults

    try:
        return faults.resolve(topo, text)
    except ValueError as err:
        raise UsageError(f"LINK: {err}") from None


def cmd_fail(args: argparse.Namespace) -> int:
    from netns_lab.features.team import faults

    lab = running_lab(args)
    topo, _ = running(lab)
    link = _link(topo, args.link)
    mode, p, hz = "carrier", None, None
    if args.silent:
        mode = "silent"
    elif args.loss is not None:
        mode, p = "loss", args.loss
        if not 0.0 < p <= 1.0:
            raise UsageError(f"loss: {args.loss} is not a probability in (0, 1]")
    elif args.flap is not None:
        mode, hz = "flap", args.flap
        if not 0.0 < hz <= 100.0:
            raise UsageError(f"flap: {args.flap} is not a rate in (0, 100] Hz")
    try:
        entry = faults.fail(topo, link, mode, p, hz)
    except ValueError as err:
        raise UsageError(str(err)) from None
    emit(
        args,
        {"lab": lab, "failed": entry},
        lambda d: out.print(f"{d['failed']['link']}: {d['failed']['mode']}"),
    )
    return 0


def cmd_heal(args: argparse.Namespace) -> int:
    from netns_lab.features.team import faults

    lab = running_lab(args)
    topo, _ = running(lab)
    if args.all == (args.link is not None):
        raise UsageError("heal: name one LINK, or --all")
    link = None if args.all else _link(topo, args.link)
    try:
        healed = faults.heal(topo, link)
    except ValueError as err:
        raise UsageError(str(err)) from None

    def render(doc: dict[str, Any]) -> None:
        for f in doc["healed"]:
            out.print(f"{f['link']}: healed ({f['mode']})")
        if not doc["healed"]:
            out.print("no fault was injected")

    emit(args, {"lab": lab, "healed": healed}, render)
    return 0


def register(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(name, help=summary, description=summary)
    json_option(p)
    lab_option(p)
    if name == "fail":
        p.set_defaults(fn=cmd_fail)
        p.add_argument("link", metavar="LINK", help="HOST.PNIC or SWITCH.PORT")
        how = p.add_mutually_exclusive_group()
        how.add_argument("--silent", action="store_true", help="drop every frame both ways, carrier up")
        how.add_argument("--loss", type=float, metavar="P", help="drop a random fraction P of the frames")
        how.add_argument(
            "--flap", type=float, metavar="HZ", help="take the carrier down and up HZ times a second"
        )
    else:
        p.set_defaults(fn=cmd_heal)
        p.add_argument("link", metavar="LINK", nargs="?", help="HOST.PNIC or SWITCH.PORT")
        p.add_argument("--all", action="store_true", help="every injected fault")
