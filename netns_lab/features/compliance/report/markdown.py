"""The report as Markdown, the HTML page's twin (same sections, same rows). Every text from a
document goes through `esc`: a Markdown viewer renders inline HTML, so `<`, `>` and `&` become
entities, and table pipes and link brackets are backslashed."""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

from netns_lab.features.compliance.report import sections as sec
from netns_lab.features.compliance.report.inputs import Inputs

_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]()|#!"})


def esc(value: object) -> str:
    return html.escape(" ".join(str(value).split()), quote=False).translate(_SPECIAL)


def _table(header: list[str], rows: Iterable[Iterable[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _link(link: sec.Link) -> str:
    return f"[{esc(link.label)}]({link.href})" if link.href else f"`{esc(link.label)}`"


def _recommendations(recs: list[sec.Recommendation]) -> list[str]:
    return _table(
        ["id", "status", "recommendation", "reason", "objects", "evidence"],
        (
            [
                f"**{esc(r.id)}**",
                esc(r.status),
                esc(r.title) or "-",
                esc(r.reason),
                ", ".join(esc(o) for o in r.objects) or "-",
                "<br>".join(_link(link) for link in r.evidence) or "-",
            ]
            for r in recs
        ),
    )


def _heatmap(heat: sec.Heatmap | None) -> list[str]:
    if heat is None:
        return ["No truth table (the live verification did not run).", ""]
    rows = []
    for src in heat.sources:
        cells = []
        for dst in heat.destinations:
            cell = heat.cells.get((src, dst))
            mark = {"bad": " ✗", "allow": "", "deny": "", "mixed": ""}
            cells.append("" if cell is None else f"{cell.allowed}/{len(cell.rows)}{mark[cell.kind]}")
        rows.append([f"**{esc(src)}**", *cells])
    lines = [
        "Packets allowed / probed from the row to the column; ✗ where observed differs from expected.",
        "",
    ]
    lines += _table(["src \\\\ dst", *(esc(d) for d in heat.destinations)], rows)
    if heat.disagreements:
        keys = ("src", "dst", "proto", "port", "expected", "observed")
        lines += _table(list(keys), ([esc(d.get(k)) for k in keys] for d in heat.disagreements))
    return lines


def _checks(checks: list[sec.Check]) -> list[str]:
    if not checks:
        return ["No live checks (the live verification did not run).", ""]
    rows = [
        [
            esc(c.id),
            ", ".join(esc(r) for r in c.recommendations) or "-",
            esc(c.status),
            esc(c.reason),
            "<br>".join(esc(f) for f in c.findings) or "-",
            "<br>".join(_link(k) for k in c.evidence) or "-",
        ]
        for c in checks
    ]
    return _table(["check", "recommendations", "status", "reason", "findings", "evidence"], rows)


def render(
    inputs: Inputs, images: dict[str, str], plots: dict[str, str], generated: str, out: Path | None = None
) -> str:
    recs = sec.recommendations(inputs, out)
    tally = ", ".join(f"{n} {esc(s)}" for s, n in sorted(sec.tally(recs).items()))
    lines = [
        f"# Compliance report: lab {esc(inputs.lab)}",
        "",
        f"source: {esc(inputs.source)}; generated {esc(generated)}; recommendations: {tally}",
        "",
        *(f"> {esc(n)}\n" for n in inputs.notes),
        "## Topology",
        "",
        f"![topology drawing]({images['topology']})" if "topology" in images else "No drawing.",
        "",
        "## NIST SP 800-125B recommendations",
        "",
        *_recommendations(recs),
    ]
    settings = sec.settings(inputs)
    if settings:
        lines += _table(
            ["setting", "status", "reason", "objects"],
            (
                [esc(s.get("id")), esc(s.get("status")), esc(s.get("reason", "")),
                 ", ".join(esc(o) for o in s.get("objects") or []) or "-"]
                for s in settings
            ),
        )  # fmt: skip
    lines += ["## Reachability: expected vs observed", "", *_heatmap(sec.truth_table(inputs))]
    lines += ["## Live checks and attacks", "", *_checks(sec.checks(inputs, out))]
    lines += ["## Per-port counters", ""]
    ports = sec.counters(inputs)
    lines += (
        _table(
            ["node", "port", "role", "peer", "passed in", "passed out", "drops"],
            (
                [esc(v) for v in (r.node, r.port, r.role, r.peer, r.from_port, r.to_port, r.drops)]
                for r in ports
            ),
        )
        if ports
        else ["No counters (no running lab).", ""]
    )
    lines += ["## Benchmarks", ""]
    lines += [f"![{esc(name)}]({src})\n" for name, src in plots.items()]
    for s in sec.suites(inputs):
        quick = " (quick run)" if s.quick else ""
        lines += [f"### {esc(s.suite)}", "", f"{esc(s.time)}{quick}; {esc(s.machine)}", ""]
        lines += _table(["result", "ratio", "value", "baseline"], ([esc(v) for v in row] for row in s.ratios))
    if not inputs.bench:
        lines += ["No benchmark results.", ""]
    return "\n".join(lines)
