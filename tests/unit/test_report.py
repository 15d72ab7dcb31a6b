"""`nlab report` without a lab: the pages rendered from documents of the audit's, the
verification's, the status's and the benchmarks' shapes (tests/unit/report_docs.py), their
escaping, the plots drawn from results files, and the command's bad input (exit 2, the argument
named)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from netns_lab.cli import main
from netns_lab.features.compliance import report
from netns_lab.features.compliance.report import bench, html, markdown, plots, sections
from netns_lab.topology import loader
from netns_lab.topology.errors import TopologyError
from tests.unit import report_docs as docs

REPO = Path(__file__).resolve().parents[2]
SAFE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "nav", "a", "section", "table",
    "caption", "tr", "th", "td", "b", "br", "code", "img",
}  # fmt: skip


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str | None]] = []
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += attrs
        self.ids |= {v for k, v in attrs if k == "id" and v}
        self.hrefs += [v for k, v in attrs if k == "href" and v]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    return tags


def render(given: report.Inputs) -> str:
    return html.render(given, {"topology": "topology.svg"}, {"ratios": "plots/ratios.png"}, "now")


def test_every_recommendation_with_its_status_reason_and_evidence() -> None:
    rows = sections.recommendations(docs.inputs())
    assert [r.id for r in rows] == list(docs.IDS)
    by_id = {r.id: r for r in rows}
    assert by_id["VM-VN-R2"].status == "not met" and by_id["VM-VN-R2"].objects == ["trunk hv1/eth1"]
    labels = [link.label for link in by_id["VM-VN-R1"].evidence]
    assert labels == ["reachability: fail", "counters", "pcap", "attacks: pass", "counters"]
    assert by_id["VM-VN-R1"].evidence[0].href == "#check-reachability"
    assert by_id["VM-TM-R1"].evidence == []


def test_page_shows_all_sections_ids_and_links_that_resolve_inside_it() -> None:
    page = render(docs.inputs())
    tags = parsed(page)
    text = " ".join(tags.text)
    assert all(rid in text for rid in docs.IDS)
    assert {ident for ident, _ in sections.SECTIONS} <= tags.ids
    assert {f"rec-{rid}" for rid in docs.IDS} <= tags.ids
    fragments = [h[1:] for h in tags.hrefs if h.startswith("#")]
    assert fragments and set(fragments) <= tags.ids, set(fragments) - tags.ids
    assert "evidence/reachability.pcap" in tags.hrefs


def test_truth_table_heat_map_marks_the_disagreement() -> None:
    heat = sections.truth_table(docs.inputs())
    assert heat is not None and heat.sources == ["db1", "web1"]
    assert heat.cells["web1", "db1"].kind == "bad" and heat.cells["web1", "db1"].mismatches == 1
    assert heat.cells["db1", "web1"].kind == "deny"
    assert [(d["src"], d["port"]) for d in heat.disagreements] == [("web1", 22)]
    assert 'class="bad" title="tcp/5432: expected allow, observed allow; tcp/22: expected deny' in render(
        docs.inputs()
    )


def test_counters_from_the_status_ports() -> None:
    (row,) = sections.counters(docs.inputs())
    assert (row.node, row.port, row.from_port, row.to_port) == ("hv1", "vweb1-0", 10, 7)
    assert row.drops == "fw-deny from-vm: 3"


def test_without_live_documents_the_page_says_so() -> None:
    given = report.Inputs(lab="rep", source="labs/x.yaml", audit=docs.audit(), notes=["no lab is running"])
    page = render(given)
    assert "No truth table" in page and "No counters" in page and "No benchmark results" in page
    assert "no lab is running" in page


def test_markup_in_any_document_is_escaped_in_both_pages() -> None:
    """Every string of every document is markup (HOSTILE): the page has only its own tags, no
    event-handler attribute, no javascript: link; the Markdown has no raw angle bracket."""
    given = docs.hostile()
    page = render(given)
    tags = parsed(page)
    assert tags.tags <= SAFE_TAGS, tags.tags - SAFE_TAGS
    assert not [k for k, _ in tags.attrs if k.startswith("on")]
    assert not [h for h in tags.hrefs if not h.startswith("#") and ":" in h]  # no scheme: no javascript:
    assert docs.HOSTILE in " ".join(tags.text)  # shown, as text
    text = markdown.render(given, {}, {}, "now")
    assert "<script" not in text and "<img" not in text and "](javascript" not in text
    # the positive control: the same check sees unescaped markup
    assert "script" in parsed(f"<p>{docs.HOSTILE}</p>").tags


def test_names_with_markup_never_reach_a_report_from_a_topology_file(tmp_path: Path) -> None:
    text = (REPO / "labs/nist-800-125b.yaml").read_text().replace("web1:", "<b>web1</b>:", 1)
    with pytest.raises(TopologyError, match="web1"):
        loader.load_text(text, "hostile.yaml")


def test_markdown_twin_has_the_same_sections() -> None:
    text = markdown.render(docs.inputs(), {"topology": "topology.svg"}, {}, "now")
    for _, title in sections.SECTIONS:
        assert f"## {title}" in text
    assert all(f"**{rid.replace('-', '-')}**" in text for rid in docs.IDS)
    assert "[pcap](evidence/reachability.pcap)" in text
    assert "| **web1** |" in text


def test_results_written_and_read_back(tmp_path: Path) -> None:
    written = bench.write(
        tmp_path, {"test_x": [bench.Result("a", {"n": 1}, {"r": 0.5}, "base")], "test_y": []}
    )
    assert written == [tmp_path / "test_x.json"]
    (doc,) = bench.load(tmp_path)
    assert doc["suite"] == "test_x" and doc["results"][0]["ratios"] == {"r": 0.5}
    assert {"kernel", "cpus", "model", "load", "python", "bcc"} <= set(doc["machine"])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(bench.ResultsError, match=r"broken\.json"):
        bench.load(tmp_path)


def test_plots_redrawn_from_results_files(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="needs matplotlib (apt-get install python3-matplotlib)")
    (tmp_path / "test_fw_cost.json").write_text(json.dumps(docs.bench_doc()))
    drawn = plots.plots(tmp_path)
    assert sorted(p.name for p in drawn) == ["firewall-cost.png", "ratios.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in drawn)


def test_placement_and_failover_plots_from_the_shapes_their_benchmarks_record(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="needs matplotlib (apt-get install python3-matplotlib)")
    failover = {
        "suite": "test_team_failover",
        "results": [
            {"name": "team failover: carrier, link+beacon", "figures": {"detect_flip_ms": 1.2}, "ratios": {}},
            {
                "name": "team failover: silent, 100 ms beacons",
                "figures": {"detect_flip_ms": 310.0},
                "ratios": {},
            },
        ],
    }
    per = {"none": {"gbps": 3.0, "rtt_us": 40.0}, "physical": {"gbps": 1.1, "rtt_us": 120.0}}
    placement = {
        "suite": "test_placement",
        "results": [{"name": "p", "figures": {"figures": per}, "ratios": {}}],
    }
    drawn = plots.draw([failover, placement], tmp_path)
    assert [p.name for p in drawn] == ["placement.png", "failover.png"]


def test_write_makes_the_folder_with_drawing_pages_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="needs matplotlib (apt-get install python3-matplotlib)")
    out = tmp_path / "r"
    pages = report.write(out, docs.inputs())
    assert pages == [out / "index.html", out / "report.md"]
    assert (out / "topology.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    assert (out / "plots" / "firewall-cost.png").exists()
    assert 'src="plots/firewall-cost.png"' in (out / "index.html").read_text()


def nlab(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_bad_input_exits_2_naming_the_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = nlab(capsys, "report")
    assert code == 2 and "--out" in err
    afile = tmp_path / "afile"
    afile.write_text("")
    code, err = nlab(capsys, "report", "--lab", "zzrepnone", "--out", str(afile / "r"))
    assert code == 2 and f"--out {afile / 'r'}" in err
    code, err = nlab(capsys, "report", "--lab", "zzrepnone", "--out", str(tmp_path / "r"))
    assert code == 2 and "--lab zzrepnone" in err and "not up" in err
    code, err = nlab(
        capsys, "report", "--lab", "zzrepnone", "--out", str(tmp_path / "r"), "--bench", str(afile)
    )
    assert code == 2 and f"--bench {afile}" in err


def test_a_bench_session_writes_its_records_and_plots(tmp_path: Path) -> None:
    """tests/bench/conftest.py as a plugin of a session of one fake benchmark: its record lands
    in $BENCH_OUT/<module>.json with the machine, the ratios chart beside it."""
    pytest.importorskip("matplotlib", reason="needs matplotlib (apt-get install python3-matplotlib)")
    (tmp_path / "test_fake.py").write_text(
        "def test_a(bench_record):\n"
        "    bench_record('x', figures={'n': 1}, ratios={'r': 0.5}, baseline='b')\n"
        "    bench_record('x', figures={'n': 2}, ratios={'r': 0.25}, baseline='b')\n"
    )
    out = tmp_path / "out"
    env = {**os.environ, "BENCH_OUT": str(out), "BENCH_QUICK": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.bench.conftest", "-p", "no:cacheprovider",
         str(tmp_path / "test_fake.py"), "--quick"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:]
    doc = json.loads((out / "test_fake.json").read_text())
    assert doc["suite"] == "test_fake" and doc["quick"] is True
    assert doc["results"] == [{"name": "x", "figures": {"n": 2}, "ratios": {"r": 0.25}, "baseline": "b"}]
    assert doc["machine"]["cpus"] == os.cpu_count()
    assert (out / "plots" / "ratios.png").exists()
    assert f"written {out / 'test_fake.json'}" in proc.stdout


def test_a_finding_shows_its_trace_as_the_ports_crossed_not_as_a_document() -> None:
    trace = {
        "stages": [
            {"node": "hv1", "port": "vm-a1-0", "verdict": "pass", "reason": ""},
            {"node": "tor1", "port": "hv2-eth0", "verdict": "drop", "reason": "vlan-not-allowed"},
        ],
        "why": "dropped at tor1 hv2-eth0",
    }
    finding = {"what": "tcp reachability", "where": "a1 -> a2", "expected": "allow", "observed": "deny"}
    text = sections._finding({**finding, "trace": trace})
    assert text.endswith(
        "(trace: hv1 vm-a1-0 pass -> tor1 hv2-eth0 drop (vlan-not-allowed): dropped at tor1 hv2-eth0)"
    )
    assert "stages" not in text
    untraced = sections._finding({**finding, "trace": "no trace: no route"})
    assert untraced.endswith("(trace: no trace: no route)")
