"""Per-packet cost of the uplink programs with the team and fault gates against a base
revision's (without them), in the same run.

    tagged frame ──BPF_PROG_TEST_RUN──> vlan_from_port / vlan_to_port (base | now | team | twin) | nlab_empty

The uplink's common case: a 802.1Q-tagged UDP frame on a trunk of {10}. `base` is
`git show $NLAB_COST_BASE:ebpf/` (default `main`), before the gates; `now` is the working tree
with the team maps empty (a host without teams: the gate's two lookups find nothing); `team`
the same programs with the port an active team member and no fault (a host whose traffic goes
through its team); `twin` is `now` loaded again, the method's own noise. All are host
dataplanes (uplinks are host ports). Medians of ROUNDS rounds of REPEAT warm iterations, and of
each round's ratios, reported, never asserted, and written to .benchmarks/team-cost.json. The
goal of the issue is throughput with a team >= 0.97x one uplink; these are the programs' own
ns, the upper bound of what the gates take from a frame's whole path. Skipped when the base's
ebpf/ is the working tree's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw, raw

from tests.bench import record, revision

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

PORT = revision.PORT
REPEAT = 2_000 if record.quick() else 20_000
ROUNDS = 7 if record.quick() else 61
GOAL = 0.97  # throughput with a team / with one uplink
REPORT_FILE = revision.REPO / ".benchmarks" / "team-cost.json"
FRAME = raw(
    Ether(dst="02:00:00:00:0a:02", src="02:00:00:00:0a:01")
    / Dot1Q(vlan=10)
    / IP(src="10.0.10.1", dst="10.0.10.2")
    / UDP(sport=4000, dport=5000)
    / Raw(b"x" * 14)
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads eBPF programs")


@pytest.fixture(scope="module")
def planes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SwitchDataplane]]:
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")
    from dataplane.switch import PortVlans

    with revision.planes(tmp_path_factory.mktemp("base"), revision.load, ("team", "twin")) as loaded:
        for dp in loaded.values():
            dp.configure(PORT, PortVlans(allowed=frozenset({10}), untagged=False))
        loaded["team"].team.set_member(PORT, True)
        yield loaded


def _measure(planes: dict[str, SwitchDataplane], program: str) -> dict[str, float]:
    return revision.interleaved(
        {name: dp.programs[program] for name, dp in planes.items()},
        planes["now"].programs["nlab_empty"],
        FRAME,
        ROUNDS,
        REPEAT,
        {"team/base": ("team", "base"), "now/base": ("now", "base"), "twin/now": ("twin", "now")},
    )


def test_uplink_cost_with_the_gates_against_base(
    benchmark: Any, planes: dict[str, SwitchDataplane], capsys: Any, bench_record: Any
) -> None:
    """One pytest-benchmark round around the whole measurement (so that `make bench`, which runs
    benchmarks only, runs it); the figures are the kernel's, in the report."""
    measured: dict[str, dict[str, float]] = {}
    programs = ("vlan_from_port", "vlan_to_port")
    benchmark.pedantic(
        lambda: measured.update({p: _measure(planes, p) for p in programs}), rounds=1, iterations=1
    )
    rows = []
    for program in programs:
        ns = measured[program]
        rows.append(
            {
                "program": program,
                **{f"{k}_ns": round(ns[k], 1) for k in ("floor", "base", "now", "team", "twin")},
                **{k.replace("/", "_over_"): round(ns[k], 3) for k in ("team/base", "now/base", "twin/now")},
                "team_extra_ns": round(ns["team"] - ns["base"], 1),
                "empty_extra_ns": round(ns["now"] - ns["base"], 1),
            }
        )
    counted = planes["team"].counters(PORT)
    assert counted and all(reason == 0 for _, reason in counted), "the team plane dropped frames"
    report = {
        "base": os.environ.get("NLAB_COST_BASE", "main"),
        "case": "802.1Q-tagged 64-byte UDP frame, trunk of {10}; team: the port an active member, no fault",
        "method": f"{ROUNDS} rounds of {REPEAT} warm iterations each, floor/base/now/team/twin in turn;"
        " medians of the ns and of each round's ratios",
        "goal": f"throughput with a team >= {GOAL}x one uplink",
        "rows": rows,
        "load_average_1min": os.getloadavg()[0],
    }
    ratios = {f"{r['program']}_{k}": r[k] for r in rows for k in ("team_over_base", "now_over_base")}
    bench_record("team-cost", figures=report, ratios=ratios, baseline=f"the programs of {report['base']}")
    benchmark.extra_info.update(report)
    REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
    REPORT_FILE.write_text(json.dumps(report, indent=2) + "\n")
    with capsys.disabled():
        for r in rows:
            print(
                f"\n{r['program']}: base {r['base_ns']} ns, empty maps {r['now_ns']} ns"
                f" ({r['now_over_base']}x), active member {r['team_ns']} ns ({r['team_over_base']}x,"
                f" +{r['team_extra_ns']} ns), floor {r['floor_ns']} ns;"
                f" the same programs twice: {r['twin_over_now']}x"
            )
