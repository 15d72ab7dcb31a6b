"""The static audit of a topology (pure): every NIST SP 800-125B recommendation, by its id, in the
publication's order, from the features' own ``checks()``, and the switch-security settings.

The document (`nlab audit --json`, read by the report):

    {"lab": str,
     "recommendations": [{"id", "status": "met" | "not met" | "not applicable", "reason", "objects"}],
     "settings": [{"id", "status", "reason", "objects"}]}

A feature may return several results for one id (the team feature: one per team); they become
one: not met if any is (the objects of those that are), else met if any is, else not
applicable. An id of `recommendations.RECOMMENDATIONS` that no feature checks, or an id a
feature returns that is not one of them, is an `AuditError`: a gap in the code, never a silent
row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from netns_lab.features.compliance import settings
from netns_lab.features.compliance.recommendations import IDS
from netns_lab.topology.model import Topology

MET, NOT_MET, NOT_APPLICABLE = "met", "not met", "not applicable"
STATUSES = (MET, NOT_MET, NOT_APPLICABLE)
Result = dict[str, Any]


class AuditError(RuntimeError):
    """The features and the canonical list disagree: an internal error, not bad input."""


def audit(topo: Topology, features: Iterable[Any] | None = None) -> dict[str, Any]:
    """The audit document of ``topo`` (the whole lab when it is one machine's part); ``features``
    defaults to the registry's."""
    if features is None:
        from netns_lab.features.registry import FEATURES

        features = FEATURES
    whole = topo.lab_wide
    by_id: dict[str, list[Result]] = {}
    for feature in features:
        for result in feature.checks(whole):
            _shape(feature.name, result)
            by_id.setdefault(result["id"], []).append(result)
    unknown = sorted(set(by_id) - set(IDS))
    missing = [rid for rid in IDS if rid not in by_id]
    if unknown or missing:
        parts = [f"no feature checks {', '.join(missing)}"] if missing else []
        parts += [f"features return ids that are no recommendation: {', '.join(unknown)}"] if unknown else []
        raise AuditError("; ".join(parts))
    return {
        "lab": whole.lab,
        "recommendations": [merge(rid, by_id[rid]) for rid in IDS],
        "settings": settings.check(whole),
    }


def merge(rid: str, results: list[Result]) -> Result:
    """Several results of one id as one (see the module's docstring)."""
    if len(results) == 1:
        return dict(results[0])
    status = next(s for s in (NOT_MET, MET, NOT_APPLICABLE) if any(r["status"] == s for r in results))
    chosen = [r for r in results if r["status"] == status]
    reason = "; ".join(dict.fromkeys(r["reason"] for r in chosen))
    objects = list(dict.fromkeys(o for r in chosen for o in r["objects"]))
    return {"id": rid, "status": status, "reason": reason, "objects": objects}


def compliant(doc: dict[str, Any]) -> bool:
    """No recommendation and no setting is not met."""
    return all(r["status"] != NOT_MET for r in (*doc["recommendations"], *doc["settings"]))


def _shape(feature: str, result: Result) -> None:
    keys = {"id", "status", "reason", "objects"}
    if set(result) != keys or result["status"] not in STATUSES or not isinstance(result["objects"], list):
        raise AuditError(
            f"feature {feature}: a check result is not {{id, status, reason, objects}}: {result}"
        )
