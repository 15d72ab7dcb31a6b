"""What every `nlab` command shares: exit codes, usage errors, the JSON error document, output
files given on the command line, and problems of a live change reported at the flag the user typed.

The error document (docs/cli.md) is what a command run with ``--json`` prints on stdout, alone,
when it fails: ``{"error": {"code", "message", "problems": [{"file", "path", "reason"}]}}``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import IO, Any, NoReturn

from netns_lab.errors import Issue, TopologyError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NONCOMPLIANT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
COMMAND_LINE = "(command line)"  # the ``file`` of a problem with an argument rather than a file


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


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
