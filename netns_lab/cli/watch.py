"""`nlab watch`: the live view of a lab's firewall verdicts, mirrored packets and team events.

Argument checks, opening the sources, and the terminal / JSON-lines output; the merging and
filtering live in `netns_lab.observe.watch`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any, TextIO

from netns_lab import encoding
from netns_lab.cli.base import (
    UsageError,
    chosen_lab,
    lab_option,
    open_output,
    positive,
    resolve_lab,
    stop_options,
)
from netns_lab.features.team import events as team_events
from netns_lab.lab import running
from netns_lab.observe import watch
from netns_lab.observe.capture import PcapWriter

EPILOG = """\
what is shown:
  default            every verdict (allowed new flows, denied packets), every mirror session's copies
                     and every NIC team's events (a member failed or recovered, the team moved)
  VM...              verdicts of those VMs, and copies of the sessions that mirror one of them
  --denied           only denials among the verdicts; copies only if a session is named with --mirror
  --mirror NAME      only that session's copies; no verdicts unless VMs are named too
  --team [TEAM]      team events (of TEAM, HOST.VSWITCH, if named); nothing else unless VMs,
                     --denied or --mirror ask for it too
losses (firewall events the kernel could not queue, copies the capture socket dropped) are always
shown, as they happen and in the summary on stderr at the end: what THIS watch missed since it
started. Stop with Ctrl-C, --count or --duration. Any number of watches and `nlab fw events` may
run at once: each is a subscriber of the lab's event hub with its own filter and losses.
"""

COLOURS = {"deny": "31", "allow": "32", "mirror": "36", "lost": "1;33", "migration": "35", "team": "1;35"}
WIDTH_WHO, WIDTH_WHAT, WIDTH_ENDPOINTS = 10, 18, 40


def register(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        help=summary,
        description="live view of firewall verdicts, mirrored packets and team events, one line each",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(fn=cmd_watch, streams=True)
    p.add_argument("vms", nargs="*", metavar="VM", help="only these VMs")
    p.add_argument("--denied", action="store_true", help="only denials (see below)")
    p.add_argument("--mirror", metavar="NAME", help="only this mirror session's copies (see below)")
    p.add_argument("--team", nargs="?", const="", metavar="TEAM", help="team events (see below)")
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    p.add_argument("--pcap", metavar="FILE", help="also write the mirrored packets to FILE (pcap)")
    lab_option(p)
    stop_options(p, "lines", timeout_alias=True)


def cmd_watch(args: argparse.Namespace) -> int:
    count, duration = positive(args, "count", int), positive(args, "duration", float)
    try:
        lab = resolve_lab(chosen_lab(args))
    except UsageError as err:
        raise UsageError(f"lab: {err}") from None
    assert lab is not None
    flt = watch.Filter(frozenset(args.vms), args.denied, args.mirror, args.team)
    with contextlib.ExitStack() as stack:
        try:
            w = stack.enter_context(_open(lab, flt, args.pcap))
        except ValueError as err:
            raise UsageError(str(err)) from None
        show = Printer(sys.stdout, args.json, sys.stdout.isatty() and not args.json)
        if _follow(w, show, count, duration):
            print(f"nlab watch: {w.stats.line()}", file=sys.stderr)
    return 0


def _follow(w: watch.Watch, show: Printer, count: int | None, duration: float | None) -> bool:
    """Print records until done or Ctrl-C, then a last look at the losses; False if stdout closed."""
    try:
        try:
            for record in w.stream(count, duration):
                show(record)
        except KeyboardInterrupt:
            pass
        for record in w.finish(verdicts=False):  # losses since the last look, also after Ctrl-C
            show(record)
    except BrokenPipeError:  # `nlab watch | head`: the reader left
        sys.stderr.close()
        return False
    return True


@contextlib.contextmanager
def _open(lab: str, flt: watch.Filter, pcap_path: str | None) -> Any:
    """The lab's sources, opened; ValueError (`field: reason`) for bad input, nothing left open."""
    with contextlib.ExitStack() as stack:
        try:
            live = stack.enter_context(running.opened(lab))
        except running.NotRunning:
            raise ValueError(f"lab: lab {lab!r} is not up") from None
        known = {v.name for v in live.topo.vms}
        if unknown := sorted(flt.vms - known):
            names = ", ".join(sorted(known))
            raise ValueError(f"vm: no VM {', '.join(unknown)} in lab {lab!r} (VMs: {names})")
        _check_team(live, flt)
        taps = _taps(lab, flt)
        w = stack.enter_context(watch.Watch(live, taps, flt))
        if pcap_path is not None:
            try:
                out = stack.enter_context(open_output(pcap_path, "--pcap"))
            except UsageError as err:
                raise ValueError(str(err)) from None
            w.pcap = PcapWriter(out)
            if not w.destinations:
                print("nlab watch: pcap: no mirror session is watched: no packets to write", file=sys.stderr)
        yield w


def _check_team(live: running.RunningLab, flt: watch.Filter) -> None:
    if not flt.team:
        return
    from netns_lab.features.team.plan import teams

    known = [p.name for p in teams(live.topo)]
    if flt.team not in known:
        listed = ", ".join(known) or "none"
        raise ValueError(f"team: no team {flt.team!r} in lab {live.lab!r} (teams, HOST.VSWITCH: {listed})")


def _taps(lab: str, flt: watch.Filter) -> list[watch.TapLike]:
    if not flt.wants_mirrors:
        return []
    try:
        return watch.resolve_taps(lab, flt.mirror)
    except KeyError:
        raise ValueError(f"mirror: no mirror session {flt.mirror!r} in lab {lab!r}") from None


class Printer:
    """Writes records as JSON lines or as aligned terminal lines (coloured on a terminal)."""

    def __init__(self, out: TextIO, as_json: bool, colour: bool) -> None:
        self.out, self.as_json, self.colour = out, as_json, colour

    def __call__(self, record: dict[str, Any]) -> None:
        if self.as_json:
            text = json.dumps(record)
        else:
            text, key = line(record)
            if self.colour:
                text = f"\x1b[{COLOURS[key]}m{text}\x1b[0m"
        self.out.write(text + "\n")
        self.out.flush()


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def _endpoints(r: dict[str, Any]) -> str:
    def side(addr: Any, port: Any) -> str:
        if addr is None:
            return "-"
        if port is None or r["proto"] not in ("tcp", "udp"):
            return str(addr)
        return f"[{addr}]:{port}" if ":" in str(addr) else f"{addr}:{port}"

    return f"{side(r['src'], r['sport'])} → {side(r['dst'], r['dport'])}"


def line(r: dict[str, Any]) -> tuple[str, str]:
    """The terminal line of a record, and its colour key."""
    if r["kind"] == "lost":
        what = "events" if r["source"] == "firewall" else "mirrored copies"
        text = f"{r['count']} {r['source']} {what} were lost at {r['where']} ({r['total']} so far)"
        return f"{_clock(r['time'])}  LOST    {text}", "lost"
    if r["kind"] == "migration":
        text = f"{r['from']} -> {r['to']}  {r['phase']} {r['ms']:.1f} ms"
        return f"{_clock(r['time'])}  {'migrate':<6}  {r['vm']:<{WIDTH_WHO}} {text}", "migration"
    if r["kind"].startswith("team"):
        return f"{_clock(r['time'])}  TEAM    {r['team']:<{WIDTH_WHO}} {team_events.describe(r)}", "team"
    if r["kind"] == "verdict":
        kind, who, key = ("DENY" if r["verdict"] == "deny" else "allow"), r["vm"], r["verdict"]
        if r["rule"] == encoding.DEFAULT_RULE and r["reason"] == "policy":
            what = encoding.rule_text(r["rule"])
        else:
            what = f"{encoding.rule_text(r['rule'])} {r['reason']}" if r["rule"] is not None else r["reason"]
        info, length = "", ""
    else:
        kind, who, key = "mirror", r["session"], "mirror"
        what = f"copy vlan {r['vlan']}" if r["vlan"] is not None else "copy"
        info, length = r["info"], str(r["len"])
    return (
        f"{_clock(r['time'])}  {kind:<6}  {who:<{WIDTH_WHO}} {r['direction']:<3}  {what:<{WIDTH_WHAT}} "
        f"{r['proto']:<6} {_endpoints(r):<{WIDTH_ENDPOINTS}} {length:>5}  {info}"
    ).rstrip(), key
