"""TCP throughput VM → peer through a team's active member against one plain uplink running
main's programs, in the same lab and the same run (tests/lab/teamlab.py):

    vm ─ vm0 ─ host:br0 ─ eth0 ─ s1 ─ upstream ─ peer        (eth1 standby: the loop stays cut)

"one": eth0 runs the base revision's vlan_from_port / vlan_to_port ($NLAB_COST_BASE, default
main: no team, no fault gate), loaded with maps of their own; "team": eth0 runs the working
tree's, as the team's active member; "again" is "team" measured once more, the method's own
noise. The programs are swapped on eth0 between runs (one replace per hook), the order rotating
from round to round; iperf3, one TCP stream for IPERF_SECONDS per run. Medians and the medians
of each round's team/one and again/team ratios are reported, never asserted, and written to
.benchmarks/team-traffic.json. Asserted: traffic flowed through the programs under test.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.bench import record, revision, traffic

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane
    from tests.lab.teamlab import TeamLab

ROUNDS = 2 if record.quick() else 9
IPERF_SECONDS = 1 if record.quick() else 2
KINDS = ("one", "team", "again")
GOAL = 0.97  # team / one uplink, at least
REPORT_FILE = revision.REPO / ".benchmarks" / "team-traffic.json"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces and loads eBPF"),
    pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3 (apt-get install iperf3)"),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TeamLab, SwitchDataplane]]:
    """The team lab, and main's programs loaded beside it with eth0 configured in their maps."""
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")
    from dataplane.switch import PortVlans
    from tests.lab.teamlab import team_lab

    with revision.planes(tmp_path_factory.mktemp("base"), revision.load, ()) as planes, team_lab() as lab:
        base = planes["base"]
        base.configure(lab.members["eth0"], PortVlans(untagged=True))
        yield lab, base


def _use(lab: TeamLab, kind: str, base: SwitchDataplane) -> None:
    from netns_lab.kernel.netlink import Netlink

    with Netlink(lab.ns("host")) as nl, lab.dataplane() as now:
        (base if kind == "one" else now).attach(nl.tc_socket(), lab.members["eth0"])


def _passed(dp: SwitchDataplane, ifindex: int) -> int:
    return sum(c.packets for (_, reason), c in dp.counters(ifindex).items() if reason == 0)


def _rounds(lab: TeamLab, base: SwitchDataplane, gbps: dict[str, list[float]]) -> None:
    from tests.lab.teamlab import PEER_IP

    eth0 = lab.members["eth0"]
    for i in range(ROUNDS):
        for kind in KINDS[i % 3 :] + KINDS[: i % 3]:
            _use(lab, kind, base)
            with lab.dataplane() as now:
                measured = base if kind == "one" else now
                before = _passed(measured, eth0)
                bps = traffic.tcp_throughput(
                    lab.ns("vm"), lab.ns("peer"), PEER_IP.split("/")[0], IPERF_SECONDS
                )
                assert _passed(measured, eth0) > before, f"{kind}: nothing crossed eth0"
            gbps[kind].append(bps / 1e9)
    _use(lab, "team", base)


def test_tcp_throughput_team_against_one_uplink(
    benchmark: Any, setup: tuple[TeamLab, SwitchDataplane], capsys: Any, bench_record: Any
) -> None:
    """One pytest-benchmark round around the interleaved runs (`make bench` runs benchmarks only)."""
    lab, base = setup
    gbps: dict[str, list[float]] = {kind: [] for kind in KINDS}
    benchmark.pedantic(lambda: _rounds(lab, base, gbps), rounds=1, iterations=1)

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(gbps[a], gbps[b], strict=True))

    report = {
        "base": os.environ.get("NLAB_COST_BASE", "main"),
        "case": "VM -> peer through the host's uplink eth0, one TCP stream (iperf3)",
        "method": f"{ROUNDS} rounds of iperf3 -t {IPERF_SECONDS} for each of {', '.join(KINDS)}, order"
        " rotating; programs swapped on eth0 between runs",
        "gbps": {k: round(statistics.median(v), 2) for k, v in gbps.items()},
        "samples_gbps": {k: [round(x, 2) for x in v] for k, v in gbps.items()},
        "team_over_one": round(ratio("team", "one"), 3),
        "again_over_team": round(ratio("again", "team"), 3),
        "goal": f"team / one uplink >= {GOAL}",
        "goal_met": ratio("team", "one") >= GOAL,
        "load_average_1min": os.getloadavg()[0],
    }
    ratios = {k: report[k] for k in ("team_over_one", "again_over_team")}
    bench_record("team-traffic", figures=report, ratios=ratios, baseline="one uplink, the programs of main")
    benchmark.extra_info.update(report)
    REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
    REPORT_FILE.write_text(json.dumps(report, indent=2) + "\n")
    with capsys.disabled():
        print(
            f"\nTCP VM->peer: one uplink (main) {report['gbps']['one']} Gbit/s, team (active member)"
            f" {report['gbps']['team']} Gbit/s: team/one {report['team_over_one']}x (goal >= {GOAL});"
            f" the team measured twice: {report['again_over_team']}x"
        )
