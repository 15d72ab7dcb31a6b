"""`nlab report`: one folder a reviewer can open without the lab: index.html (self-contained,
no script, no network), report.md (its Markdown twin), the topology drawing and the benchmark
plots as image files beside them, and the verification's evidence under evidence/.

inputs.py gathers the documents, sections.py shapes them, html.py and markdown.py render them;
`write` is pure given its inputs, apart from Graphviz and matplotlib drawing the images.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from netns_lab.features.compliance.report import html, markdown, plots
from netns_lab.features.compliance.report.inputs import Inputs

log = logging.getLogger(__name__)

__all__ = ["Inputs", "write"]

INDEX, MARKDOWN, TOPOLOGY, PLOTS = "index.html", "report.md", "topology.svg", "plots"


def _drawing(inputs: Inputs, out: Path, notes: list[str]) -> dict[str, str]:
    from netns_lab.observe import graph

    if inputs.dot is None:
        return {}
    try:
        (out / TOPOLOGY).write_bytes(graph.render(inputs.dot, "svg"))
    except (graph.GraphvizMissing, ValueError) as err:
        notes.append(f"no topology drawing: {err}")
        return {}
    return {"topology": TOPOLOGY}


def _plots(inputs: Inputs, out: Path, notes: list[str]) -> dict[str, str]:
    try:
        drawn = plots.draw(inputs.bench, out / PLOTS)
    except ImportError as err:
        notes.append(f"no plots: {err} (apt-get install python3-matplotlib)")
        return {}
    return {p.stem: f"{PLOTS}/{p.name}" for p in drawn}


def write(out: Path, inputs: Inputs, *, now: datetime | None = None) -> list[Path]:
    """Write the report of ``inputs`` into ``out`` (made if missing); the pages written."""
    out.mkdir(parents=True, exist_ok=True)
    generated = (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
    images = _drawing(inputs, out, inputs.notes)
    drawn = _plots(inputs, out, inputs.notes)
    pages = {
        out / INDEX: html.render(inputs, images, drawn, generated, out),
        out / MARKDOWN: markdown.render(inputs, images, drawn, generated, out),
    }
    for path, text in pages.items():
        path.write_text(text)
    return list(pages)
