"""What every `nlab` command shares: exit codes, usage errors, the JSON error document, the choice
of a lab (``--lab``/``-l``, ``NLAB_LAB``, the only lab up), JSON or rendered output, flags with one
meaning under one name, output files given on the command line, the mapping of errors to exit
codes, and problems of a live change reported at the flag the user typed.

Group modules import this module, never the package's ``__init__``; it imports nothing that
touches the kernel, so that `nlab --help` and `nlab validate` stay light.

The error document (docs/cli.md) is what a command run with ``--json`` prints on stdout, alone,
when it fails: ``{"error": {"code", "message", "problems": [{"file", "path", "reason"}]}}``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable
from typing import IO, Any, NoReturn

from netns_lab.lab import state
from netns_lab.topology.errors import Issue, TopologyError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NONCOMPLIANT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
COMMAND_LINE = "(command line)"  # the ``file`` of a problem with an argument rather than a file


LAB_ENV = "NLAB_LAB"  # the lab of every command that acts on one, when --lab is not given


class UsageError(Exception):
    """Bad input from the user: printed as one line after the command's name, exit code 2."""


class Refused(UsageError):
    """Bad input that names its own place (``file: path: reason``): printed as it is, exit code 2."""


class ArgumentError(UsageError):
    """An argument argparse refused (missing, unknown, wrong choice); ``usage`` goes with it."""

    def __init__(self, message: str, usage: str, prog: str) -> None:
        super().__init__(message)
        self.usage, self.prog = usage, prog


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so that `--json` still gets its document."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(message, self.format_usage(), self.prog)


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def error_document(code: int, err: BaseException | str) -> dict[str, Any]:
    """The one JSON document of a failed command: its exit code, a message and each problem."""
    if isinstance(err, TopologyError):
        problems = [{"file": i.source, "path": i.path, "reason": i.reason} for i in err.errors]
        files = sorted({i.source for i in err.errors})
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        message = f"{count} in {', '.join(files)}"
    else:
        problems, message = [], str(err) or type(err).__name__
    return {"error": {"code": code, "message": message, "problems": problems}}


# -- output files --------------------------------------------------------------------------------
def open_output(path: str, flag: str, mode: str = "wb") -> IO[Any]:
    """``path`` opened for writing, or a UsageError naming the flag, the path and why not."""
    try:
        return open(path, mode)
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot write: {err.strerror or err}") from None


def write_output(path: str, flag: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (given by ``flag``), or a UsageError naming both and why not."""
    with open_output(path, flag) as out:
        try:
            out.write(data)
        except OSError as err:
            raise UsageError(f"{flag} {path}: cannot write: {err.strerror or err}") from None


# -- live changes --------------------------------------------------------------------------------
def at_flags(
    err: TopologyError, command: str, where: str, flags: Callable[[str], str | None]
) -> TopologyError:
    """The problems of a live change, those inside ``where`` (the key path of what the command
    wrote, e.g. ``firewall.rules[10]``) moved to the flag that gave them: ``flags`` maps the rest
    of the path (``.ports[0]``) to a flag (``--ports``), or None to keep the problem as it is."""
    moved = []
    for issue in err.errors:
        rest = issue.path[len(where) :] if issue.path.startswith(where) else None
        flag = flags(rest) if rest is not None and (rest == "" or rest[0] in ".[") else None
        moved.append(Issue(f"nlab {command}", flag, issue.reason) if flag else issue)
    return TopologyError(moved)


def first_key(rest: str) -> str:
    """``.ports[0]`` -> ``ports``; ``[1]`` -> ``""``."""
    match = re.match(r"\.([A-Za-z_]+)", rest)
    return match[1] if match else ""


def key_flags(known: Iterable[str]) -> Callable[[str], str | None]:
    """For `at_flags`: a path whose first key is one of ``known`` names the flag ``--KEY``."""
    keys = frozenset(known)

    def flag(rest: str) -> str | None:
        key = first_key(rest)
        return f"--{key}" if key in keys else None

    return flag


# -- choosing a lab ------------------------------------------------------------------------------
LAB_HELP = f"the lab (default: ${LAB_ENV}, else the only lab up)"


def lab_option(parser: argparse.ArgumentParser, *, alias: bool = False) -> None:
    """``--lab NAME`` / ``-l NAME`` on a command's own parser, so that it is accepted anywhere
    after the command words. ``alias``: on a group's parser (``nlab fw --lab X show``), hidden
    from help. The verb's own option has no default (SUPPRESS): argparse would otherwise
    overwrite the group's value with it."""
    parser.add_argument(
        "-l",
        "--lab",
        metavar="NAME",
        default=None if alias else argparse.SUPPRESS,
        help=argparse.SUPPRESS if alias else LAB_HELP,
    )


def chosen_lab(args: argparse.Namespace, positional: str | None = None) -> str | None:
    """The lab given by ``--lab`` or by the command's positional form (an alias); both given
    and different is a usage error."""
    flag = getattr(args, "lab", None)
    if flag and positional and flag != positional:
        raise UsageError(f"--lab {flag} and the positional LAB {positional} name different labs")
    return flag or positional


def resolve_lab(given: str | None, *, required: bool = True) -> str | None:
    """The lab named, else ``$NLAB_LAB``, else the only lab up; several up and none named, or
    none up when one is ``required``, is a usage error that names the labs up."""
    if given:
        return given
    if os.environ.get(LAB_ENV):
        return os.environ[LAB_ENV]
    up = state.labs()
    if len(up) == 1:
        return up[0]
    if not up:
        if required:
            raise UsageError("no lab is up (start one with `nlab up`)")
        return None
    raise UsageError(f"several labs are up ({', '.join(up)}): name one with --lab NAME or ${LAB_ENV}")


def running_lab(args: argparse.Namespace) -> str:
    """The lab chosen by ``args`` (as ``resolve_lab``), which must be up."""
    lab = resolve_lab(chosen_lab(args))
    assert lab is not None
    if state.LabState.read(lab) is None:
        raise not_up(lab)
    return lab


def not_up(lab: str) -> UsageError:
    """The one message for a lab that is not up, with the labs that are."""
    up = ", ".join(state.labs()) or "none"
    where = f" (from ${LAB_ENV})" if os.environ.get(LAB_ENV) == lab else ""
    return UsageError(f"lab {lab!r}{where} is not up (labs up: {up})")


# -- flags with one meaning under one name -------------------------------------------------------
class _Typed(argparse.Action):
    """Stores the value and which of the flag's names was typed, so errors can name that one."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        typed = dict(getattr(namespace, "typed_flags", None) or {})
        typed[self.dest] = option_string
        namespace.typed_flags = typed


def stop_options(parser: argparse.ArgumentParser, unit: str, *, timeout_alias: bool = False) -> None:
    """``--count N`` and ``--duration S``: how a command that follows a stream stops. Both are
    checked by ``positive`` when the command runs (a usage error naming the flag typed)."""
    parser.add_argument("--count", metavar="N", action=_Typed, help=f"stop after N {unit}")
    names = ("--duration", "--timeout") if timeout_alias else ("--duration",)
    parser.add_argument(*names, dest="duration", metavar="S", action=_Typed, help="stop after S seconds")


def positive(args: argparse.Namespace, dest: str, kind: type) -> Any:
    """The value of a ``stop_options`` flag, above 0, or a usage error naming the flag typed."""
    text = getattr(args, dest, None)
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not (value > 0 and math.isfinite(value)):
        typed = ((getattr(args, "typed_flags", None) or {}).get(dest) or dest).lstrip("-")
        what = "a whole number" if kind is int else "a number of seconds"
        raise UsageError(f"{typed}: {text!r} is not {what} above 0")
    return value


# -- output --------------------------------------------------------------------------------------
def json_option(parser: argparse.ArgumentParser, help_: str = "print one JSON document on stdout") -> None:
    parser.add_argument("--json", action="store_true", help=help_)


def emit(args: argparse.Namespace, doc: Any, render: Callable[[Any], None]) -> None:
    """The command's document: as JSON with --json, else rendered for people."""
    if getattr(args, "json", False):
        emit_json(doc)
    else:
        render(doc)


# -- running a command ---------------------------------------------------------------------------
def command_name(args: argparse.Namespace) -> str:
    """``nlab fw add``: the command and its verb, as typed."""
    return " ".join(w for w in ("nlab", args.cmd, getattr(args, "verb", None)) if w)


def _streams(args: argparse.Namespace) -> bool:
    """Commands that print as they go, stopped by Ctrl-C as a matter of course."""
    return bool(getattr(args, "streams", False))


def run(args: argparse.Namespace) -> tuple[int, BaseException | None]:
    """The command's exit code, and what made it fail (its message is on stderr already)."""
    try:
        return args.fn(args), None
    except TopologyError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE, err
    except UsageError as err:
        print(str(err) if isinstance(err, Refused) else f"{command_name(args)}: {err}", file=sys.stderr)
        return EXIT_USAGE, err
    except KeyboardInterrupt:
        if _streams(args):
            return EXIT_INTERRUPTED, None
        message = "interrupted; nothing was left half-built"
        print(f"{command_name(args)}: {message}", file=sys.stderr)
        return EXIT_INTERRUPTED, KeyboardInterrupt(message)
    except OSError as err:
        print(f"{command_name(args)}: {err}", file=sys.stderr)
        return EXIT_FAIL, err
    except Exception as err:
        if getattr(args, "json", False):  # the traceback follows on stderr, the document on stdout
            emit_json(error_document(EXIT_FAIL, f"{type(err).__name__}: {err}"))
        raise


# -- verb groups ---------------------------------------------------------------------------------
VerbFn = Callable[[argparse.Namespace, str], Any]  # (args, lab) -> document, or None if printed
Render = Callable[[str, Any], None]  # (verb, document)


def verb_group(
    sub: Any, name: str, summary: str, description: str, gone: type[Exception], render: Render
) -> Callable[[str, VerbFn, str], argparse.ArgumentParser]:
    """The parser of a group of verbs on a running lab (``nlab fw show``), --lab taken before
    the verb (an alias) or after it, --json on each verb; returns the function that adds a verb.
    ``gone``: what the group's library raises when the lab went down meanwhile."""
    group = sub.add_parser(name, help=summary, description=description)
    group.set_defaults(fn=functools.partial(run_verb, gone=gone, render=render))
    lab_option(group, alias=True)
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(verb_name: str, fn: VerbFn, help_: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(verb_name, help=help_, description=help_)
        p.set_defaults(verb_fn=fn)
        json_option(p, "machine-readable output on stdout")
        lab_option(p)
        return p

    return verb


def run_verb(args: argparse.Namespace, gone: type[Exception], render: Render) -> int:
    """Runs a verb on the chosen lab, which must be up; a ValueError (``field: reason``) is a
    usage error; the verb's document is emitted (None: a stream, printed as it went)."""
    lab = running_lab(args)
    try:
        doc = args.verb_fn(args, lab)
    except gone:
        raise not_up(lab) from None
    except ValueError as err:
        if isinstance(err, TopologyError):
            raise
        raise UsageError(str(err)) from None
    if doc is not None:
        emit(args, doc, functools.partial(render, args.verb))
    return 0
