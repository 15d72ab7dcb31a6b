"""The report's content, shaped once from the input documents for both renderers (HTML and
Markdown): plain rows of strings and numbers, no markup. Pure: no kernel, no files read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from netns_lab.features.compliance.report.inputs import Doc, Inputs

# Status words as the documents spell them -> the class a renderer colours them by.
STATUS_CLASS = {
    "met": "ok",
    "pass": "ok",
    "not met": "bad",
    "fail": "bad",
    "not applicable": "na",
    "skipped": "na",
}
SECTIONS = (
    ("topology", "Topology"),
    ("recommendations", "NIST SP 800-125B recommendations"),
    ("truth-table", "Reachability: expected vs observed"),
    ("attacks", "Live checks and attacks"),
    ("counters", "Per-port counters"),
    ("benchmarks", "Benchmarks"),
)


def status_class(status: Any) -> str:
    return STATUS_CLASS.get(str(status), "unknown")


@dataclass(frozen=True)
class Link:
    label: str
    href: str | None  # None: shown as text (a file outside the report's folder)


def anchor(kind: str, ident: Any) -> str:
    """An element id safe in HTML and in a URL fragment, whatever ``ident`` holds."""
    text = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(ident))
    return f"{kind}-{text}"


def evidence_link(label: str, path: Any, out: Path | None) -> Link:
    """A link to an evidence file, relative to the report when the file is inside its folder."""
    text = str(path)
    if out is not None:
        where = Path(text) if Path(text).is_absolute() else out / text  # relative: to the report
        try:
            rel = where.resolve().relative_to(out.resolve())
        except ValueError:
            return Link(f"{label}: {text}", None)
        return Link(label, PurePosixPath(rel).as_posix())
    if not text.startswith("/") and ".." not in PurePosixPath(text).parts and ":" not in text:
        return Link(label, text)
    return Link(f"{label}: {text}", None)


@dataclass
class Recommendation:
    id: str
    area: str
    section: str
    title: str
    status: str
    reason: str
    objects: list[str]
    evidence: list[Link] = field(default_factory=list)


def _checks(inputs: Inputs) -> list[Doc]:
    return list((inputs.verify or {}).get("checks") or [])


def check_links(check: Doc, out: Path | None) -> list[Link]:
    evidence = check.get("evidence") or {}
    return [evidence_link(kind, path, out) for kind, path in sorted(evidence.items()) if path]


def recommendations(inputs: Inputs, out: Path | None = None) -> list[Recommendation]:
    """Every recommendation of the catalogue in its order (then any other id the audit names, in
    its order),
    with the audit's status and the live checks that back it."""
    audited = {str(r.get("id")): r for r in (inputs.audit or {}).get("recommendations") or []}
    known = {c["id"]: c for c in inputs.catalogue}
    order = [c["id"] for c in inputs.catalogue] + [i for i in audited if i not in known]
    rows = []
    for rid in order:
        rec, result = known.get(rid, {}), audited.get(rid, {})
        links = []
        for check in _checks(inputs):
            if rid in (check.get("recommendations") or []):
                status = check.get("status", "?")
                links.append(Link(f"{check.get('id')}: {status}", "#" + anchor("check", check.get("id"))))
                links += check_links(check, out)
        rows.append(
            Recommendation(
                id=rid,
                area=str(rec.get("area", "")),
                section=str(rec.get("section", "")),
                title=str(rec.get("title", "")),
                status=str(result.get("status", "not audited")),
                reason=str(result.get("reason", "")),
                objects=[str(o) for o in result.get("objects") or []],
                evidence=links,
            )
        )
    return rows


def settings(inputs: Inputs) -> list[Doc]:
    return list((inputs.audit or {}).get("settings") or [])


def tally(rows: list[Recommendation]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


@dataclass
class Cell:
    rows: list[Doc]

    @property
    def mismatches(self) -> int:
        return sum(1 for r in self.rows if r.get("expected") != r.get("observed"))

    @property
    def allowed(self) -> int:
        return sum(1 for r in self.rows if r.get("observed") == "allow")

    @property
    def kind(self) -> str:
        """bad: a disagreement; allow / deny: all agree and all are allowed / denied; mixed."""
        if self.mismatches:
            return "bad"
        if self.allowed == len(self.rows):
            return "allow"
        return "deny" if not self.allowed else "mixed"

    def detail(self) -> str:
        return "; ".join(
            f"{r.get('proto')}/{r.get('port')}: expected {r.get('expected')}, observed {r.get('observed')}"
            for r in self.rows
        )


@dataclass
class Heatmap:
    sources: list[str]
    destinations: list[str]
    cells: dict[tuple[str, str], Cell]
    disagreements: list[Doc]


def truth_table(inputs: Inputs) -> Heatmap | None:
    rows = (inputs.verify or {}).get("truth_table")
    if not rows:
        return None
    cells: dict[tuple[str, str], Cell] = {}
    for row in rows:
        cells.setdefault((str(row.get("src")), str(row.get("dst"))), Cell([])).rows.append(row)
    return Heatmap(
        sources=sorted({s for s, _ in cells}),
        destinations=sorted({d for _, d in cells}),
        cells=cells,
        disagreements=[r for r in rows if r.get("expected") != r.get("observed")],
    )


@dataclass
class Check:
    id: str
    recommendations: list[str]
    status: str
    reason: str
    findings: list[str]
    evidence: list[Link]


def _finding(f: Any) -> str:
    if not isinstance(f, dict):
        return str(f)
    text = f"{f.get('what', '')} at {f.get('where', '')}: expected {f.get('expected', '')}"
    text += f", observed {f.get('observed', '')}"
    if f.get("trace"):
        text += f" (trace: {_trace_text(f['trace'])})"
    return text


def _trace_text(trace: Any) -> str:
    """A trace document as one line: each port the packet crossed with its verdict, then why it
    ended (verify may also leave a sentence where no trace could be made)."""
    if not isinstance(trace, dict) or not isinstance(trace.get("stages"), list):
        return str(trace)
    steps = []
    for st in trace["stages"]:
        reason = f" ({st.get('reason')})" if st.get("reason") else ""
        steps.append(f"{st.get('node', '')} {st.get('port') or '-'} {st.get('verdict', '')}{reason}")
    return " -> ".join(steps) + f": {trace.get('why', '')}"


def checks(inputs: Inputs, out: Path | None = None) -> list[Check]:
    return [
        Check(
            id=str(c.get("id")),
            recommendations=[str(r) for r in c.get("recommendations") or []],
            status=str(c.get("status", "")),
            reason=str(c.get("reason", "")),
            findings=[_finding(f) for f in c.get("findings") or []],
            evidence=check_links(c, out),
        )
        for c in _checks(inputs)
    ]


@dataclass
class PortCounters:
    node: str
    port: str
    role: str
    peer: str
    from_port: int  # packets the port's ingress program passed
    to_port: int  # packets its egress program passed
    drops: str  # reason: packets, ...


def _passed(counters: Doc, side: str) -> int:
    return int(((counters.get(side) or {}).get("pass") or {}).get("packets", 0))


def counters(inputs: Inputs) -> list[PortCounters]:
    status = inputs.status or {}
    rows = []
    for node in [*(status.get("hosts") or []), *(status.get("switches") or [])]:
        for port in node.get("ports") or []:
            c = port.get("counters") or {}
            drops = ", ".join(
                f"{d.get('reason')} {d.get('direction')}: {d.get('packets')}" for d in port.get("drops") or []
            )
            rows.append(
                PortCounters(
                    node=str(node.get("name")),
                    port=str(port.get("name")),
                    role=str(port.get("role", "")),
                    peer=str(port.get("peer", "")),
                    from_port=_passed(c, "ingress"),
                    to_port=_passed(c, "egress"),
                    drops=drops or "none",
                )
            )
    return rows


@dataclass
class Suite:
    suite: str
    time: str
    quick: bool
    machine: str
    ratios: list[tuple[str, str, Any, str]]  # result, ratio name, value, baseline


def machine_text(m: Doc) -> str:
    load = m.get("load")
    load_text = " ".join(str(x) for x in load) if isinstance(load, list) else str(load)
    return (
        f"kernel {m.get('kernel')}, {m.get('cpus')} CPUs ({m.get('model')}), load {load_text},"
        f" Python {m.get('python')}, bcc {m.get('bcc')}"
    )


def suites(inputs: Inputs) -> list[Suite]:
    return [
        Suite(
            suite=str(doc.get("suite")),
            time=str(doc.get("time", "")),
            quick=bool(doc.get("quick")),
            machine=machine_text(doc.get("machine") or {}),
            ratios=[
                (str(r.get("name")), str(k), v, str(r.get("baseline") or ""))
                for r in doc.get("results") or []
                for k, v in (r.get("ratios") or {}).items()
            ],
        )
        for doc in inputs.bench
    ]
