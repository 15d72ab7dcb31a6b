"""`nlab`: the command line. A table of commands, each in the module of its verb group, imported
only when that command runs (or its --help is asked for); `nlab --help` lists them from the table.

Exit codes: 0 success; 1 a failure of the system (rolled back); 2 bad input (topology file,
argument, a refusal such as a lab that is already up); 3 a check ran and found a problem: the
design non-compliant (`nlab vlans`), the lab not healthy (`nlab status`), a traced packet that
does not arrive (`nlab trace`), VTEP tables that differ from the model (`nlab overlay check`).
With --json, stdout carries exactly one JSON document; progress and messages go to stderr.

A group module has ``register(sub, name, summary)``, which adds the parser of command ``name``
(with its handler as ``fn``) to the subparsers ``sub``; it imports `netns_lab.cli.base`, never
this package's ``__init__``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from typing import NamedTuple

from netns_lab.cli.base import (
    EXIT_USAGE,
    ArgumentError,
    Parser,
    UsageError,
    emit_json,
    error_document,
    run,
)

__all__ = ["COMMANDS", "UsageError", "main"]


class Command(NamedTuple):
    module: str  # under netns_lab.cli
    summary: str


# The order is the order of `nlab --help`.
COMMANDS: dict[str, Command] = {
    "up": Command("lab", "build a lab from a topology file"),
    "down": Command("lab", "remove a lab and everything it owns"),
    "status": Command("lab", "show a lab and check it against the kernel"),
    "exec": Command("lab", "run a command (none: a shell) in a node's namespace"),
    "validate": Command("lab", "check a topology file without building it"),
    "graph": Command("lab", "draw a lab or a topology file (Graphviz)"),
    "trace": Command("trace", "run a crafted packet through the real programs of every port it crosses"),
    "fw": Command("fw", "the NIC firewall of a running lab (NIST 4.3)"),
    "mirror": Command("mirror", "port-mirroring sessions of a running lab (NIST 5)"),
    "watch": Command("watch", "live firewall verdicts and mirrored packets (NIST 5)"),
    "vlans": Command("vlans", "check VLAN trunks against switch ports (NIST VM-VN-R1)"),
    "audit": Command(
        "audit", "every NIST SP 800-125B recommendation and switch-security setting, statically"
    ),
    "overlay": Command("overlay", "VXLAN segments, VTEPs and their tables; check them (NIST 2.5)"),
    "fail": Command("faults", "inject a fault on a cable of a running lab (NIST 3)"),
    "heal": Command("faults", "end an injected fault (or --all)"),
    "teams": Command("teams", "NIC teams, their members' state and the VM-MP checks (NIST 3)"),
    "verify": Command("verify", "check a running lab against its model with real packets (NIST 2-5)"),
    "report": Command("report", "write the compliance report of a lab: HTML and Markdown (NIST 2.6-5.3)"),
    "migrate": Command(
        "migrate", "move a VM to another host with its firewall rules and connections (NIST 4.3)"
    ),
    "placement": Command("placement", "the same workload through each firewall placement (NIST 4)"),
}
_TOP_OPTIONS = ("-v", "--verbose")


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of `nlab`. Every command's own parser when ``only`` is None (for tests and
    docs); else only that command's, the others listed by name and summary without importing
    their modules."""
    p = Parser(prog="nlab", description="netns-lab: a virtual data center in namespaces")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        if only is None or name == only:
            group = importlib.import_module(f"netns_lab.cli.{command.module}")
            group.register(sub, name, command.summary)
        else:
            sub.add_parser(name, help=command.summary, add_help=False)
    return p


def _command_word(argv: list[str]) -> str:
    """The command named in ``argv`` ("" when none is, or an unknown one: argparse says so)."""
    for word in argv:
        if word not in _TOP_OPTIONS:
            return word if word in COMMANDS else ""
    return ""


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # lets the builder's undo stack run on `kill`


def _wants_json(argv: list[str]) -> bool:
    """--json among the options (not in the command `exec` runs after `--`)."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parser(only=_command_word(argv)).parse_args(argv)
    except ArgumentError as err:
        sys.stderr.write(err.usage)
        print(f"{err.prog}: error: {err}", file=sys.stderr)
        if _wants_json(argv):
            emit_json(error_document(EXIT_USAGE, err))
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, _sigterm)
    code, failure = run(args)
    if failure is not None and getattr(args, "json", False):
        emit_json(error_document(code, failure))
    return code
