"""What a report is made of: plain documents, each optional, gathered from a running lab or a
topology file, or handed in by a test.

- ``audit``: the static audit (`nlab audit --json`): {"lab", "recommendations": [{id, status,
  reason, objects}], "settings": [...]}
- ``verify``: the live verification (`nlab verify --json`): {"lab", "ok", "checks": [{id,
  recommendations, status, reason, findings, evidence}], "truth_table": [{src, dst, proto, port,
  expected, observed}]}
- ``status``: `nlab status --json` of the lab, whose ports carry the dataplanes' counters
- ``dot``: the topology drawing as Graphviz source (`nlab graph`)
- ``bench``: the benchmark results documents (report/bench.py)
- ``catalogue``: the thirteen recommendations {id, area, section, title}, in the publication's order

Gathering runs the audit and the verification through their Python functions, not commands.
Where one of them is not available in this checkout, the report says so instead of inventing it:
the audit falls back to the checks the features register themselves (features/base.py `checks`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns_lab.features.compliance.report import bench
from netns_lab.topology.model import Topology

log = logging.getLogger(__name__)

Doc = dict[str, Any]

# Where the audit and the verification live: (module, function). The audit is called with the
# topology, the verification with the running lab (lab/running.py) and the evidence folder.
AUDIT = ("netns_lab.features.compliance.audit", "audit")
VERIFY = ("netns_lab.features.compliance.verify", "verify")
CATALOGUE = ("netns_lab.features.compliance.recommendations", "RECOMMENDATIONS")


@dataclass
class Inputs:
    lab: str
    source: str  # "lab NAME (running)" or the topology file
    audit: Doc | None = None
    verify: Doc | None = None
    status: Doc | None = None
    dot: str | None = None
    bench: list[Doc] = field(default_factory=list)
    catalogue: list[Doc] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be gathered, and why


def _attribute(where: tuple[str, str]) -> Any | None:
    module, name = where
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def catalogue() -> list[Doc]:
    found = _attribute(CATALOGUE)
    if not found:
        return []
    return [{"id": r.id, "area": r.area, "section": r.section, "title": r.title} for r in found]


def feature_checks(topo: Topology) -> Doc:
    """The audit document made of the features' own checks (when the audit is not available):
    ids of the catalogue that no feature checks are listed as not checked."""
    from netns_lab.features.registry import FEATURES

    found: dict[str, Doc] = {}
    for feature in FEATURES:
        for result in feature.checks(topo):
            found.setdefault(result["id"], result)
    for rec in catalogue():
        found.setdefault(
            rec["id"],
            {
                "id": rec["id"],
                "status": "not checked",
                "reason": "no check is registered for it",
                "objects": [],
            },
        )
    return {"lab": topo.lab, "recommendations": sorted(found.values(), key=lambda r: r["id"]), "settings": []}


def audit(topo: Topology, notes: list[str]) -> Doc:
    fn: Callable[[Topology], Doc] | None = _attribute(AUDIT)
    if fn is None:
        notes.append("the audit (nlab audit) is not in this checkout: the features' own checks are shown")
        return feature_checks(topo)
    try:
        return fn(topo)
    except RuntimeError as err:  # the audit refuses to run while a recommendation has no check
        notes.append(f"the audit could not run ({err}): the features' own checks are shown")
        return feature_checks(topo)


def verify(lab: str, evidence: Path, notes: list[str]) -> Doc | None:
    fn = _attribute(VERIFY)
    if fn is None:
        notes.append(
            "the live verification (nlab verify) is not in this checkout: no truth table, no attacks"
        )
        return None
    from netns_lab.lab.running import opened

    with opened(lab) as live:
        return fn(live, evidence)


def gather(topo: Topology, *, running: bool, source: str, out: Path, bench_dir: Path | None) -> Inputs:
    """Every document of the report of ``topo`` (live ones only when the lab is ``running``)."""
    from netns_lab.observe import graph

    inputs = Inputs(lab=topo.lab, source=source, catalogue=catalogue(), dot=graph.dot(topo))
    inputs.audit = audit(topo, inputs.notes)
    if running:
        from netns_lab.lab import state, status

        lab_state = state.LabState.read(topo.lab)
        if lab_state is not None:
            inputs.status = status.document(topo, lab_state)
        inputs.verify = verify(topo.lab, out / "evidence", inputs.notes)
    else:
        inputs.notes.append("no lab is running: the static audit only (no counters, no packets)")
    if bench_dir is not None and bench_dir.is_dir():
        inputs.bench = bench.load(bench_dir)
    if not inputs.bench:
        inputs.notes.append("no benchmark results (run `make bench`, or give --bench DIR)")
    return inputs
