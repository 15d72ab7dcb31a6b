"""Errors a user can fix by editing a topology file: each issue names the file, the place and why."""

from __future__ import annotations

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
