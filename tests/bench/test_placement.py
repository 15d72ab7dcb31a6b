"""One workload through each firewall placement, in one run (labs/placements.yaml, nlab up):

    c2 -> n1   none:     no rule applies to either
    c2 -> k1   kernel:   the NIC firewall on k1's vSwitch port (eBPF)
    c2 -> s1   subnet:   routed through the firewall VM fw1 (nftables) on the same host
    c2 -> p1   physical: routed through the appliance pfw, out of hv1 and back (hairpin)

RTT (ping), TCP request/response rate (1 byte each way) and TCP throughput (iperf3, one stream),
rounds alternating the placements, medians and ratios to "none" (features/placement/compare.py,
the same as `nlab placement compare`). The paper predicts kernel ≈ none < subnet VM < hairpin;
the figures are reported, never asserted, and written to .benchmarks/placement.json. Asserted:
the measured traffic crossed the firewall VM and the appliance.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import pytest

from netns_lab.cli import source
from netns_lab.features.placement import compare
from netns_lab.kernel import nft
from tests.bench import record, revision
from tests.lab.conftest import REPO, running

ROUNDS = 5
REPORT_FILE = revision.REPO / ".benchmarks" / "placement.json"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces and loads eBPF"),
    pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3 (apt-get install iperf3)"),
    pytest.mark.skipif(record.quick(), reason="not in QUICK=1: builds a lab with nlab up (minutes)"),
]


def test_placements_side_by_side(benchmark: Any, bench_record: Any) -> None:
    """One pytest-benchmark round around the alternated rounds (`make bench` runs benchmarks only)."""
    found: dict[str, Any] = {}
    with running(REPO / "labs" / "placements.yaml") as lab:
        state_topo = source.running(lab.name)[0]
        benchmark.group = "firewall placements"
        benchmark.pedantic(
            lambda: found.update(compare.measure(state_topo, rounds=ROUNDS)), rounds=1, iterations=1
        )
        doc = found
        port = next(p["port"] for p in doc["pairs"] if p["placement"] == "physical")
        rule = next(r.id for r in state_topo.firewall.rules if any(lo <= port <= hi for lo, hi in r.ports))
        assert nft.counters(lab.ns("fw1"))[f"rule {rule}"][0] >= ROUNDS * 2  # the rate and iperf3 connections
        assert nft.counters(lab.ns("pfw"))[f"rule {rule}"][0] >= ROUNDS * 2
    REPORT_FILE.parent.mkdir(exist_ok=True)
    doc["load_average"] = os.getloadavg()
    benchmark.extra_info.update(doc)
    ratios = {
        f"{metric}_{placement}_per_none": value
        for placement, by_metric in doc["ratios_to_none"].items()
        if placement != "none"
        for metric, value in by_metric.items()
    }
    bench_record("placement", figures=doc, ratios=ratios, baseline="no firewall (an unfiltered VM pair)")
    REPORT_FILE.write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"{'placement':10} {'RTT us':>8} {'req/s':>8} {'Gbit/s':>7}   ratios to none (RTT, rate, Gbit/s)"
    ]
    for p, f in doc["figures"].items():
        r = doc["ratios_to_none"][p]
        lines.append(
            f"{p:10} {f['rtt_us']:8.1f} {f['rr_per_s']:8.0f} {f['gbps']:7.2f}   "
            f"{r['rtt_us']:.2f} {r['rr_per_s']:.2f} {r['gbps']:.2f}"
        )
    print("\n" + "\n".join(lines))
