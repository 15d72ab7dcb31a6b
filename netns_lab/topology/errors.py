"""Errors a user can fix by editing a topology file: each issue names the file, the place and why."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One problem in a topology file.

    ``path`` is where it is: a key path such as ``vms.web1.nics[0].vlan``, ``line 3, column 5``
    for YAML syntax, ``(file)`` for the file as a whole, ``(top)`` for the top-level mapping, or
    ``--name`` for the lab name given on the command line.
    """

    source: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}: {self.reason}"


class TopologyError(Exception):
    """A topology file that cannot be loaded, with every issue found in it."""

    def __init__(self, errors: Iterable[Issue]) -> None:
        self.errors: list[Issue] = list(errors)
        super().__init__("\n".join(str(issue) for issue in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.errors)


class Found:
    """The issues found so far in one file."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.issues: list[Issue] = []

    def add(self, path: str, reason: str) -> None:
        self.issues.append(Issue(self.source, path, reason))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"did you mean 'web'? "`` when one of ``choices`` is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f"did you mean {close[0]!r}? " if close else ""


def listing(kind: str, owner: str, names: Iterable[str]) -> str:
    """``"vSwitches of hv1: vs1, vs2"``, or ``"hv1 has no vSwitches"``."""
    names = list(names)
    return f"{kind} of {owner}: {', '.join(names)}" if names else f"{owner} has no {kind}"


def unknown(kind: str, plural: str, name: str, names: Iterable[str], hint: str | None = None) -> str:
    """``"unknown VM 'web3' (did you mean 'web1'? VMs: web1, web2)"``, or ``"... (no VMs are declared)"``.

    ``hint``, when given, is the suggestion instead of the closest of ``names``.
    """
    names = list(names)
    mean = f"did you mean {hint!r}? " if hint else did_you_mean(name, names)
    known = f"{plural}: {', '.join(names)}" if names else f"no {plural} are declared"
    return f"unknown {kind} {name!r} ({mean}{known})"
