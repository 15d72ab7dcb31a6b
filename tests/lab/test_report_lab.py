"""`nlab report` on a running lab built by `nlab up` (tests/lab/two_vms.yaml: two VMs on one host
behind the NIC firewall): the counters it shows are the dataplane's, counted for a ping the
test sends, and the pages name the lab's ports and draw its topology.

    tor1 --- hv1.eth0 --- [vs1] --+-- a1 10.0.0.1/24
                                  +-- a2 10.0.0.2/24
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns_lab.features.compliance.report.inputs import catalogue
from tests.lab.conftest import Lab, nlab, running

TOPOLOGY = Path(__file__).with_name("two_vms.yaml")
PINGS = 3

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds a lab"),
    pytest.mark.lab,
]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")
    with running(TOPOLOGY) as built:
        yield built


def _passed(ports: list[dict], peer: str = "a1.eth0") -> int:
    """Packets a VM's port passed from the VM."""
    (port,) = [p for p in ports if p["peer"] == peer]
    return port["counters"]["ingress"]["pass"]["packets"]


def test_report_of_a_running_lab_shows_its_ports_and_counters(lab: Lab, tmp_path: Path) -> None:
    before = _passed(lab.status()["hosts"][0]["ports"])
    ping = subprocess.run(
        ["ip", "netns", "exec", lab.ns("a1"), "ping", "-c", str(PINGS), "-i", "0.01", "-W", "1", "10.0.0.2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    out = tmp_path / "report"
    proc = nlab("report", "--lab", lab.name, "--out", str(out), "--json", "--bench", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["lab"] == lab.name and doc["pages"] == [str(out / "index.html"), str(out / "report.md")]
    page = (out / "index.html").read_text()
    assert 'src="topology.svg"' in page and (out / "topology.svg").stat().st_size > 0
    assert all(f'id="rec-{r["id"]}"' in page for r in catalogue())  # the 13, once the list exists
    md = (out / "report.md").read_text()
    rows = {line.split(" | ")[3]: line for line in md.splitlines() if line.startswith("| hv1 | ")}
    assert set(rows) >= {"a1.eth0", "a2.eth0"}, md
    after = _passed(lab.status()["hosts"][0]["ports"])
    # a1's echo requests passed its port (ingress) and were dropped at a2's by the NIC firewall
    # (a2 takes tcp/80 only); the report's counters are the dataplane's, read after the ping and
    # before the status that follows it
    assert "100% packet loss" in ping.stdout, ping.stdout
    shown = int(rows["a1.eth0"].split(" | ")[4])
    assert before + PINGS <= shown <= after, (before, shown, after)
    assert "policy" in rows["a2.eth0"].split(" | ")[6], rows["a2.eth0"]
