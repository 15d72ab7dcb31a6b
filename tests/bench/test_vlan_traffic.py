"""VM↔VM TCP throughput and RTT through the VLAN dataplane vs a plain bridge, in the same run.

    hv1                                    sw (fabric)                              hv2
    a1  10.0.10.1 VLAN 10 ──a1-0─┐                                        ┌─b1-0── b1 10.0.10.3 VLAN 10
                                [vs1]─eth0 ══ hv1-eth0  [fabric]  hv2-eth0 ══ eth0─[vs1]
    a2  10.0.10.2 VLAN 10 ──a2-0─┘       trunk [10]                trunk [10]

    same-host:  a1 → a1-0 → vs1 → a2-0 → a2
    cross-host: a1 → a1-0 → vs1 → eth0 → hv1-eth0 → fabric → hv2-eth0 → eth0 → vs1 → b1-0 → b1

The topology is built twice under two fresh names: "ours" with dataplane=True (ebpf/vswitch.c
on both TC hooks of every vSwitch port and switch port: push on ingress from a VM, pop on
egress to a VM, trunk checks on the uplinks and switch ports) and "plain" with dataplane=False
(the same namespaces, bridges and veths, no programs: the VLAN fields are simply not enforced).

Each path is measured in a few rounds (ROUNDS, per metric) alternating which lab goes first
(ours/plain, then plain/ours, ...) to spread the drift of this shared 2-core machine over both:
iperf3, one TCP stream for IPERF_SECONDS (bits per second received), and
`ping -c PING_COUNT -i PING_INTERVAL` (mean and mdev of its per-reply times, see traffic.ping).
The table of medians and ratios is printed at the end of the session and written to
.benchmarks/vlan-traffic.json, with the machine's load average: compare ratios of one run only.
The goals (throughput >= 0.9x, RTT <= 1.1x of plain) are reported, never asserted; asserted are
that the traffic flowed and that in "ours" every port on the path passed packets both ways
through the programs (their PASS counters grew).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netns_lab.kernel import netns
from netns_lab.lab import builder, teardown
from netns_lab.lab.state import pin_dir, state_dir
from netns_lab.topology import loader, names
from tests.bench import record, traffic

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces and loads eBPF"),
    pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3 (apt-get install iperf3)"),
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs ping (apt-get install iputils-ping)"),
]

QUICK = record.quick()
# per metric; pings are short, and noisier than iperf3
ROUNDS = {"gbps": 1, "rtt_us": 2} if QUICK else {"gbps": 3, "rtt_us": 5}
IPERF_SECONDS = 1 if QUICK else 3
PING_COUNT = 50 if QUICK else 200
PING_INTERVAL = 0.002
THROUGHPUT_GOAL = 0.9  # ours / plain, at least
RTT_GOAL = 1.1  # ours / plain, at most
REPORT_FILE = Path(".benchmarks") / "vlan-traffic.json"
KINDS = ("ours", "plain")

ADDRESSES = {"a1": "10.0.10.1", "a2": "10.0.10.2", "b1": "10.0.10.3"}
BODY = """\
description: VM-to-VM traffic benchmark, one VLAN on a trunk between two hosts
vlans:
  blue: 10
switches:
  sw:
    ports:
      hv1-eth0: {trunk: [blue]}
      hv2-eth0: {trunk: [blue]}
hosts:
  hv1:
    pnics:
      eth0: {switch: sw, driver: virtio_net, pci_bus: "0000:01:00.0"}
    vswitches:
      vs1: {uplinks: [eth0]}
  hv2:
    pnics:
      eth0: {switch: sw, driver: virtio_net, pci_bus: "0000:01:00.0"}
    vswitches:
      vs1: {uplinks: [eth0]}
vms:
  a1: {host: hv1, nics: [{vswitch: vs1, vlan: blue, ip: 10.0.10.1/24}]}
  a2: {host: hv1, nics: [{vswitch: vs1, vlan: blue, ip: 10.0.10.2/24}]}
  b1: {host: hv2, nics: [{vswitch: vs1, vlan: blue, ip: 10.0.10.3/24}]}
"""


@dataclass(frozen=True)
class TrafficPath:
    client: str
    server: str
    ports: tuple[tuple[str, str], ...]  # (switching node, port): each must pass frames both ways


PATHS = {
    "same-host": TrafficPath("a1", "a2", (("hv1", "a1-0"), ("hv1", "a2-0"))),
    "cross-host": TrafficPath(
        "a1",
        "b1",
        (
            ("hv1", "a1-0"),
            ("hv1", "eth0"),
            ("sw", "hv1-eth0"),
            ("sw", "hv2-eth0"),
            ("hv2", "eth0"),
            ("hv2", "b1-0"),
        ),
    ),
}

# path -> metric -> kind -> samples, in round order
Samples = dict[str, list[float]]
RESULTS: dict[str, dict[str, Samples]] = {}
LOAD: dict[str, float] = {}  # 1-minute load average when the labs were up and at the end
# path -> metric -> "node:port" -> growth of the dataplane's counters in "ours" during the test
COUNTS: dict[str, dict[str, dict[str, dict[str, int]]]] = {}


def topology(lab: str) -> str:
    return f"lab: {lab}\n{BODY}"


def _free_name() -> str:
    while True:
        name = "vt" + secrets.token_hex(3)
        if not state_dir(name).exists() and not any(netns.NETNS_RUN_DIR.glob(f"{name}-*")):
            return name


def _ns(lab: str, node: str) -> str:
    return names.namespace(lab, node)


@pytest.fixture(scope="module")
def labs(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """kind -> lab name: the topology built with the dataplane ("ours") and without ("plain")."""
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")
    pm = request.config.pluginmanager
    if not pm.has_plugin(VlanTrafficSummary.name):
        pm.register(VlanTrafficSummary(), VlanTrafficSummary.name)
    root_links = socket.if_nameindex()
    names: dict[str, str] = {}
    try:
        for kind in KINDS:
            name = _free_name()
            names[kind] = name  # before up: down() is idempotent and up() cleans up on failure
            text = topology(name)
            builder.up(loader.load_text(text, "vlan-traffic.yaml"), text, dataplane=kind == "ours")
        assert not pin_dir(names["plain"]).exists(), "the plain lab has eBPF pins"
        _warm_up(names)
        LOAD["start"] = os.getloadavg()[0]
        yield names
        LOAD["end"] = os.getloadavg()[0]
    finally:
        for name in names.values():
            teardown.down(name)
    left = {n: sorted(p.name for p in netns.NETNS_RUN_DIR.glob(f"{n}-*")) for n in names.values()}
    assert not any(left.values()), f"bench labs left namespaces behind: {left}"
    assert socket.if_nameindex() == root_links, "the root namespace's interfaces changed"


def _warm_up(names: dict[str, str]) -> None:
    """ARP and the bridges' FDBs settled before anything is timed."""
    for lab in names.values():
        for spec in PATHS.values():
            rtt = traffic.ping(_ns(lab, spec.client), ADDRESSES[spec.server], 3, 0.01)
            assert rtt.received == rtt.sent, f"{lab}: {spec.client} cannot reach {spec.server}"


def _order(round_: int) -> tuple[str, ...]:
    return KINDS if round_ % 2 == 0 else KINDS[::-1]


def _interleaved(names: dict[str, str], rounds: int, measure: Callable[[str], float]) -> Samples:
    samples: Samples = {kind: [] for kind in KINDS}
    for round_ in range(rounds):
        for kind in _order(round_):
            samples[kind].append(measure(names[kind]))
    return samples


PassCounts = dict[str, dict[str, int]]


def _pass_counts(lab: str, spec: TrafficPath) -> PassCounts:
    """Per port on the path: packets (and bytes) the programs passed each way, and those dropped."""
    from dataplane.abi import Direction, Reason
    from dataplane.switch import Counts, SwitchDataplane

    result: PassCounts = {}
    for node, port in spec.ports:
        with SwitchDataplane.open(pin_dir(lab) / node) as dp:
            counts = dp.counters(traffic.ifindex(_ns(lab, node), port))
        passed = {d.name.lower(): counts.get((d, Reason.PASS), Counts(0, 0)) for d in Direction}
        result[f"{node}:{port}"] = {
            **{d: c.packets for d, c in passed.items()},
            **{f"{d}_bytes": c.bytes for d, c in passed.items()},
            "dropped": sum(c.packets for (_, reason), c in counts.items() if reason != Reason.PASS),
        }
    return result


def _measured(
    benchmark: Any, names: dict[str, str], path: str, metric: str, measure: Callable[[str], float]
) -> Samples:
    """Run the interleaved rounds as one pytest-benchmark round; check the eBPF path was taken."""
    spec = PATHS[path]
    benchmark.group = f"vlan traffic {metric}"
    before = _pass_counts(names["ours"], spec)
    samples: Samples = {}
    rounds = ROUNDS[metric]
    benchmark.pedantic(lambda: samples.update(_interleaved(names, rounds, measure)), rounds=1, iterations=1)
    after = _pass_counts(names["ours"], spec)
    grown = {port: {key: after[port][key] - before[port][key] for key in after[port]} for port in after}
    benchmark.extra_info.update({"samples": samples, "rounds": rounds, "dataplane_counts": grown})
    RESULTS.setdefault(path, {})[metric] = samples
    COUNTS.setdefault(path, {})[metric] = grown
    idle = [
        f"{port} {direction} +{n[direction]}"
        for port, n in grown.items()
        for direction in ("ingress", "egress")
        if n[direction] < PING_COUNT
    ]
    assert not idle, f"ports on the {path} path passed too few packets through eBPF: {idle}"
    return samples


@pytest.mark.parametrize("path", PATHS)
def test_tcp_throughput(benchmark: Any, labs: dict[str, str], path: str) -> None:
    spec = PATHS[path]

    def measure(lab: str) -> float:
        bps = traffic.tcp_throughput(
            _ns(lab, spec.client), _ns(lab, spec.server), ADDRESSES[spec.server], IPERF_SECONDS
        )
        return bps / 1e9

    samples = _measured(benchmark, labs, path, "gbps", measure)
    assert all(s > 0 for kind in KINDS for s in samples[kind]), f"no TCP traffic: {samples}"


@pytest.mark.parametrize("path", PATHS)
def test_rtt(benchmark: Any, labs: dict[str, str], path: str) -> None:
    spec = PATHS[path]
    kind_of = {lab: kind for kind, lab in labs.items()}
    spread: dict[str, Samples] = {"mdev_us": {k: [] for k in KINDS}, "median_us": {k: [] for k in KINDS}}
    lost: list[str] = []

    def measure(lab: str) -> float:
        rtt = traffic.ping(_ns(lab, spec.client), ADDRESSES[spec.server], PING_COUNT, PING_INTERVAL)
        if rtt.received != PING_COUNT:
            lost.append(f"{lab}: {rtt.received}/{rtt.sent} replies")
        spread["mdev_us"][kind_of[lab]].append(rtt.mdev_us)
        spread["median_us"][kind_of[lab]].append(rtt.median_us)
        return rtt.avg_us

    _measured(benchmark, labs, path, "rtt_us", measure)
    RESULTS[path].update(spread)
    benchmark.extra_info.update(spread)
    assert not lost, f"ping {spec.client} -> {spec.server} lost replies: {lost}"


class VlanTrafficSummary:
    """Prints the ours/plain table after pytest-benchmark's own, and writes it as JSON."""

    name = "vlan-traffic-summary"

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter, config: pytest.Config
    ) -> None:
        if not RESULTS:
            return
        table = self.table()
        tr = terminalreporter
        tr.section(
            "VM-to-VM traffic: VLAN dataplane (ours) vs plain bridge, medians of alternating rounds"
            f" (TCP {ROUNDS['gbps']}, ping {ROUNDS['rtt_us']})"
        )
        tr.write_line(
            f"{'path':<11} {'Gbit/s ours':>11} {'plain':>6} {'ratio':>6} {'goal':>7}   "
            f"{'RTT µs ours':>11} {'plain':>6} {'ratio':>6} {'goal':>7}   {'mdev µs ours':>12} {'plain':>6}"
        )
        for path, row in table["paths"].items():
            tp, rtt, mdev = row.get("gbps"), row.get("rtt_us"), row.get("mdev_us")
            tr.write_line(
                f"{path:<11} {_cell(tp, 'ours', 11, '.2f')} {_cell(tp, 'plain', 6, '.2f')}"
                f" {_cell(tp, 'ratio', 5, '.2f')}x {_goal(tp):>7}   {_cell(rtt, 'ours', 11, '.1f')}"
                f" {_cell(rtt, 'plain', 6, '.1f')} {_cell(rtt, 'ratio', 5, '.2f')}x {_goal(rtt):>7}"
                f"   {_cell(mdev, 'ours', 12, '.1f')} {_cell(mdev, 'plain', 6, '.1f')}"
            )
        for path, by_metric in COUNTS.items():
            tr.write_line(_counts_line(path, by_metric))
        tr.write_line(
            f"goals: throughput >= {THROUGHPUT_GOAL}x plain, RTT <= {RTT_GOAL}x plain"
            " (reported, not asserted); 1-min load average "
            + " -> ".join(f"{v:.2f}" for v in LOAD.values())
            + f" on {os.cpu_count()} CPUs"
        )
        ratios = {
            f"{metric}_{path}_ours_per_plain": summary.get("ratio")
            for path, row in table["paths"].items()
            for metric, summary in row.items()
            if metric in ("gbps", "rtt_us")
        }
        record.record(
            "test_vlan_traffic", "vlan-traffic", figures=table, ratios=ratios, baseline=table["plain"]
        )
        out = config.rootpath / REPORT_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(table, indent=2) + "\n")
        tr.write_line(f"written to {out}")

    @staticmethod
    def table() -> dict[str, Any]:
        goals = {
            "gbps": (THROUGHPUT_GOAL, True),
            "rtt_us": (RTT_GOAL, False),
            "mdev_us": (None, False),
            "median_us": (None, False),
        }
        paths: dict[str, Any] = {}
        for path in PATHS:
            for metric, samples in RESULTS.get(path, {}).items():
                goal, higher_is_better = goals[metric]
                paths.setdefault(path, {})[metric] = _summary(samples, goal, higher_is_better)
        return {
            "unit": {
                "gbps": "Gbit/s received (iperf3, 1 TCP stream)",
                "rtt_us": "mean of ping's replies, µs",
                "mdev_us": "standard deviation of the replies (ping's mdev), µs",
                "median_us": "median of the replies, µs",
            },
            "ours": "dataplane=True: ebpf/vswitch.c on every vSwitch and switch port",
            "plain": "dataplane=False: the same bridges and veths, no eBPF",
            "method": (
                f"rounds alternating which lab goes first: {ROUNDS['gbps']} of iperf3 -t {IPERF_SECONDS} -J,"
                f" {ROUNDS['rtt_us']} of"
                f" ping -c {PING_COUNT} -i {PING_INTERVAL}; medians, ratio = ours / plain"
            ),
            "goals": {"throughput_ratio_min": THROUGHPUT_GOAL, "rtt_ratio_max": RTT_GOAL},
            "paths": paths,
            "dataplane_counts": COUNTS,
            "load_average_1min": LOAD,
            "cpus": os.cpu_count(),
        }


def _summary(samples: Samples, goal: float | None, higher_is_better: bool) -> dict[str, Any]:
    ours, plain = statistics.median(samples["ours"]), statistics.median(samples["plain"])
    ratio = ours / plain if plain else None
    pairs = zip(samples["ours"], samples["plain"], strict=True)
    round_ratios = [o / p for o, p in pairs if p]
    row: dict[str, Any] = {
        "ours": round(ours, 3),
        "plain": round(plain, 3),
        "ratio": None if ratio is None else round(ratio, 3),
        "round_ratios": [round(r, 3) for r in round_ratios],
        "round_ratio_median": round(statistics.median(round_ratios), 3) if round_ratios else None,
        "samples": {kind: [round(v, 3) for v in values] for kind, values in samples.items()},
    }
    if goal is not None and ratio is not None:
        row["goal_met"] = ratio >= goal if higher_is_better else ratio <= goal
    return row


def _counts_line(path: str, by_metric: dict[str, dict[str, dict[str, int]]]) -> str:
    """What the programs saw in "ours": the fewest packets a port passed, drops, skb size from the VM."""
    parts = []
    for metric, ports in by_metric.items():
        fewest = min(min(c["ingress"], c["egress"]) for c in ports.values())
        dropped = sum(c["dropped"] for c in ports.values())
        first = next(iter(ports.values()))  # the client VM's port: its ingress is what the VM sends
        size = first["ingress_bytes"] / first["ingress"] if first["ingress"] else 0.0
        parts.append(f"{metric}: >= {fewest} passed per port and way, {dropped} dropped, {size:.0f} B/skb")
    return f"eBPF counters, {path} ({len(next(iter(by_metric.values())))} ports): " + "; ".join(parts)


def _cell(row: dict[str, Any] | None, key: str, width: int, spec: str) -> str:
    value = None if row is None else row.get(key)
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def _goal(row: dict[str, Any] | None) -> str:
    if row is None or "goal_met" not in row:
        return "-"
    return "met" if row["goal_met"] else "NOT met"
