"""A finding of a check: what differs, where (node, port, map, key), expected and observed."""

from __future__ import annotations

from typing import Any

Finding = dict[str, Any]
MAX_PER_MAP = 20  # findings listed per map and node; the rest are counted


def finding(what: str, where: str, expected: Any, observed: Any) -> Finding:
    return {"what": what, "where": where, "expected": expected, "observed": observed}


def capped(found: list[Finding]) -> list[Finding]:
    """At most MAX_PER_MAP findings, then one that counts the rest."""
    if len(found) <= MAX_PER_MAP:
        return found
    rest = len(found) - MAX_PER_MAP
    return [
        *found[:MAX_PER_MAP],
        finding(f"{rest} more differences", found[0]["where"].split(",")[0], None, None),
    ]
