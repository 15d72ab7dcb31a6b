"""The report as one self-contained HTML page: inline CSS, no script, no network; images are
files next to it referenced by relative paths. Every text that comes from a document (names from
a topology file, reasons, findings) goes through `esc`, every attribute through `attr`."""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

from netns_lab.features.compliance.report import sections as sec
from netns_lab.features.compliance.report.inputs import Inputs

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:2px solid #ddd;margin-top:2em}
nav a{margin-right:1em}
table{border-collapse:collapse;margin:.6em 0} caption{text-align:left;font-weight:bold}
th,td{border:1px solid #ccc;padding:3px 7px;vertical-align:top;text-align:left} th{background:#f3f3f3}
td:first-child{white-space:nowrap}
.ok{background:#d8f0d8} .bad{background:#f6caca} .na{background:#ececec} .unknown{background:#fbeec2}
.allow{background:#9fd99f} .deny{background:#d9d9d9} .mixed{background:#c7e6c7}
.heat td{text-align:center;min-width:3.5em}
.note{background:#fff7d6;border-left:4px solid #e0b400;padding:.4em .8em;margin:.4em 0}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0} .small{font-size:.85em;color:#555}
code{background:#f4f4f4;padding:0 3px}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def attr(value: object) -> str:
    return esc(value)


def _link(link: sec.Link) -> str:
    if link.href is None:
        return f"<code>{esc(link.label)}</code>"
    return f'<a href="{attr(link.href)}">{esc(link.label)}</a>'


def _row(cells: Iterable[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _status(status: str) -> str:
    return f'<td class="{sec.status_class(status)}">{esc(status)}</td>'


def _header(inputs: Inputs, generated: str, recs: list[sec.Recommendation]) -> list[str]:
    tally = ", ".join(f"{n} {esc(s)}" for s, n in sorted(sec.tally(recs).items()))
    nav = "".join(f'<a href="#{ident}">{esc(title)}</a>' for ident, title in sec.SECTIONS)
    lines = [
        f"<h1>Compliance report: lab {esc(inputs.lab)}</h1>",
        f'<p class="small">source: {esc(inputs.source)}; generated {esc(generated)};'
        f" recommendations: {tally}</p>",
        f"<nav>{nav}</nav>",
    ]
    lines += [f'<p class="note">{esc(n)}</p>' for n in inputs.notes]
    return lines


def _topology(images: dict[str, str]) -> list[str]:
    if "topology" not in images:
        return ["<p>No drawing (Graphviz missing).</p>"]
    return [f'<img id="topology-drawing" src="{attr(images["topology"])}" alt="topology drawing">']


def _recommendations(recs: list[sec.Recommendation], settings: list[dict]) -> list[str]:
    lines = [
        "<table>",
        _row(["id", "area", "recommendation", "status", "reason", "objects", "evidence"], "th"),
    ]
    for r in recs:
        evidence = "<br>".join(_link(link) for link in r.evidence) or "-"
        objects = "<br>".join(esc(o) for o in r.objects) or "-"
        where = f"{esc(r.area)} ({esc(r.section)})" if r.area else "-"
        lines.append(
            f'<tr id="{attr(sec.anchor("rec", r.id))}"><td><b>{esc(r.id)}</b></td><td>{where}</td>'
            f"<td>{esc(r.title)}</td>{_status(r.status)}<td>{esc(r.reason)}</td><td>{objects}</td>"
            f"<td>{evidence}</td></tr>"
        )
    lines.append("</table>")
    if settings:
        lines += ["<table><caption>virtual switch security settings</caption>"]
        lines.append(_row(["setting", "status", "reason", "objects"], "th"))
        for s in settings:
            objects = "<br>".join(esc(o) for o in s.get("objects") or []) or "-"
            lines.append(
                f"<tr><td>{esc(s.get('id'))}</td>{_status(str(s.get('status')))}"
                f"<td>{esc(s.get('reason', ''))}</td><td>{objects}</td></tr>"
            )
        lines.append("</table>")
    return lines


def _heatmap(heat: sec.Heatmap | None) -> list[str]:
    if heat is None:
        return ["<p>No truth table (the live verification did not run).</p>"]
    lines = [
        '<p class="small">each cell: packets allowed / probed from the row to the column; green all'
        " allowed, grey all denied, light green some, red where observed differs from expected"
        " (hover for each probe)</p>",
        '<table class="heat">',
        _row(["src \\ dst", *(esc(d) for d in heat.destinations)], "th"),
    ]
    for src in heat.sources:
        cells = [f"<th>{esc(src)}</th>"]
        for dst in heat.destinations:
            cell = heat.cells.get((src, dst))
            if cell is None:
                cells.append("<td></td>")
            else:
                text = f"{cell.allowed}/{len(cell.rows)}" + (
                    f" ({cell.mismatches}!)" if cell.mismatches else ""
                )
                cells.append(f'<td class="{cell.kind}" title="{attr(cell.detail())}">{esc(text)}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    if heat.disagreements:
        lines += [
            "<table><caption>disagreements</caption>",
            _row(["src", "dst", "proto", "port", "expected", "observed"], "th"),
        ]
        lines += [
            _row(esc(d.get(k)) for k in ("src", "dst", "proto", "port", "expected", "observed"))
            for d in heat.disagreements
        ]
        lines.append("</table>")
    return lines


def _checks(checks: list[sec.Check]) -> list[str]:
    if not checks:
        return ["<p>No live checks (the live verification did not run).</p>"]
    lines = ["<table>", _row(["check", "recommendations", "status", "reason", "findings", "evidence"], "th")]
    for c in checks:
        recs = " ".join(f'<a href="#{attr(sec.anchor("rec", r))}">{esc(r)}</a>' for r in c.recommendations)
        findings = "<br>".join(esc(f) for f in c.findings) or "-"
        evidence = "<br>".join(_link(link) for link in c.evidence) or "-"
        lines.append(
            f'<tr id="{attr(sec.anchor("check", c.id))}"><td>{esc(c.id)}</td><td>{recs or "-"}</td>'
            f"{_status(c.status)}<td>{esc(c.reason)}</td><td>{findings}</td><td>{evidence}</td></tr>"
        )
    lines.append("</table>")
    return lines


def _counters(rows: list[sec.PortCounters]) -> list[str]:
    if not rows:
        return ["<p>No counters (no running lab).</p>"]
    lines = ["<table>", _row(["node", "port", "role", "peer", "passed in", "passed out", "drops"], "th")]
    lines += [
        _row(esc(v) for v in (r.node, r.port, r.role, r.peer, r.from_port, r.to_port, r.drops)) for r in rows
    ]
    lines.append("</table>")
    return lines


def _benchmarks(suites: list[sec.Suite], plots: dict[str, str]) -> list[str]:
    if not suites:
        return ["<p>No benchmark results.</p>"]
    lines = [f'<img src="{attr(src)}" alt="{attr(name)}">' for name, src in plots.items()]
    for s in suites:
        quick = " (quick run: for a look, not for figures to quote)" if s.quick else ""
        lines.append(
            f'<h3>{esc(s.suite)}</h3><p class="small">{esc(s.time)}{esc(quick)}; {esc(s.machine)}</p>'
        )
        if s.ratios:
            lines += ["<table>", _row(["result", "ratio", "value", "baseline"], "th")]
            lines += [_row(esc(v) for v in row) for row in s.ratios]
            lines.append("</table>")
    return lines


def render(
    inputs: Inputs, images: dict[str, str], plots: dict[str, str], generated: str, out: Path | None = None
) -> str:
    """The page; ``images``/``plots``: name -> relative path of the files written next to it."""
    recs = sec.recommendations(inputs, out)
    bodies = {
        "topology": _topology(images),
        "recommendations": _recommendations(recs, sec.settings(inputs)),
        "truth-table": _heatmap(sec.truth_table(inputs)),
        "attacks": _checks(sec.checks(inputs, out)),
        "counters": _counters(sec.counters(inputs)),
        "benchmarks": _benchmarks(sec.suites(inputs), plots),
    }
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>netns-lab compliance report: {esc(inputs.lab)}</title>",
        f"<style>{CSS}</style></head><body>",
        *_header(inputs, generated, recs),
    ]
    for ident, title in sec.SECTIONS:
        lines += [f'<section id="{ident}"><h2>{esc(title)}</h2>', *bodies[ident], "</section>"]
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"
