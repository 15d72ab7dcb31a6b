"""End-to-end cost of 10,000 firewall rules on a veth: ours vs no filter, iptables and nftables.

    zzfwb<t>-<config>-a  eth0 10.0.10.1 ═══ veth ═══ eth0 10.0.10.2  zzfwb<t>-<config>-b
                                                      │
    none        nothing                               │
    ours        port_from_vm / port_to_vm on b's eth0 (TC ingress / egress: b's eth0 is the
                sender's vSwitch port), port security + 10k-rule policy of the sender's vNIC
    ours-nocache  the same, built without the flow and policy caches (ebpf/include/prof.h)
    iptables    INPUT of b, 10k rules in a linear chain, policy DROP (iptables-legacy if present)
    nft-linear  an nftables input chain of b, the same 10k rules one by one, policy drop
    nft-set     one nftables rule looking up a set of the TCP/UDP rules (+ the ICMP rule)

One namespace pair per config, all up at once; every metric visits the configs in rounds,
alternating the order, so drift falls on all of them. The traffic matches only the last three of
the 10,000 rules (tests/bench/fwtraffic.py): a linear chain walks all of them for every packet;
ours looks the policy up once per flow and then follows its connection entry (a flow cache slot
per CPU, the entry itself once per tick). The port carries
no VLAN (an untagged trunk): an access port would push a tag that b's own stack, having no VLAN
device, would drop; the tag's cost is in test_vlan_cost.py.

Metrics: 64-byte UDP packets per second delivered to UDP in b from a C sender (sendmmsg,
compiled at test time; one core runs both the sending and, through the veth, the receiving),
TCP throughput (iperf3 -t 3, one stream, client and server pinned to the two CPUs) and RTT
(ping, per-reply times). Ratios are to no filter; the goals, ours >= 0.9x no filter and ours at
least as fast as the best in-kernel peer (the median over rounds of ours / peer >= 1), are
reported, never asserted. Asserted: traffic flowed in every config, and in ours the programs
passed it, the policy's rules were hit, and none of this allowed traffic was dropped.
The table is printed at the end of the session and written to .benchmarks/fw-traffic.json.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from netns_lab.kernel import netlink, netns
from tests.bench import fwbench, fwtraffic, record, traffic
from tests.bench.fwtraffic_report import CONFIGS, INFO, RESULTS, FwTrafficSummary

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

RULE_COUNT = 10_000
VLAN = 10
QUICK = record.quick()
UDP_SECONDS = 0.3 if QUICK else 0.5
ROUNDS = {"udp_kpps": 2, "tcp_gbps": 1, "rtt_us": 2} if QUICK else {"udp_kpps": 5, "tcp_gbps": 3, "rtt_us": 4}
PING_COUNT = 50 if QUICK else 200
PING_INTERVAL = 0.002
IPERF_SECONDS = 1 if QUICK else 3
IPTABLES = shutil.which("iptables-legacy-restore") or shutil.which("iptables-restore")
ELEMENT = re.compile(r"\d+\.\d+\.\d+\.\d+ \. (?:tcp|udp) \. \d+")  # a set element as nft lists it
RULE_IDS = {"udp": RULE_COUNT - 2, "tcp": RULE_COUNT - 1, "icmp": RULE_COUNT}  # the ones traffic hits

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces and loads eBPF"),
    *(
        pytest.mark.skipif(shutil.which(tool) is None, reason=f"needs {tool} (apt-get install {package})")
        for tool, package in (
            ("iperf3", "iperf3"),
            ("ping", "iputils-ping"),
            ("gcc", "gcc"),
            ("nft", "nftables"),
        )
    ),
    pytest.mark.skipif(IPTABLES is None, reason="needs iptables-restore (apt-get install iptables)"),
]


@dataclass
class Bench:
    pairs: dict[str, fwtraffic.Pair]
    sender: Path  # the compiled udpflood
    dp: SwitchDataplane | None = None
    uncached: SwitchDataplane | None = None  # ours-nocache
    seen: dict[str, dict[str, int]] = field(default_factory=dict)  # metric -> what ours counted


@pytest.fixture(scope="module")
def bench(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")
    pm = request.config.pluginmanager
    if not pm.has_plugin(FwTrafficSummary.name):
        pm.register(FwTrafficSummary(), FwTrafficSummary.name)
    token = _free_token()
    pairs = {config: fwtraffic.Pair(f"zzfwb{token}-{config}") for config in CONFIGS}
    root_links = socket.if_nameindex()
    made: list[str] = []
    bench = Bench(pairs, fwtraffic.build_sender(tmp_path_factory.mktemp("zzfwb")))
    try:
        for pair in pairs.values():
            fwtraffic.make_pair(pair, made)
        _install_filters(bench)
        _warm_up(bench)
        INFO["load_average_1min"] = {"start": os.getloadavg()[0]}
        yield bench
        INFO["load_average_1min"]["end"] = os.getloadavg()[0]
    finally:
        for pair in pairs.values():
            if pair.sink is not None:
                pair.sink.close()
        fwtraffic.delete_pairs(made)
        for dp in (bench.dp, bench.uncached):
            if dp is not None:
                dp.close()
    left = sorted(p.name for p in netns.NETNS_RUN_DIR.glob(f"zzfwb{token}-*"))
    assert not left, f"namespaces left behind: {left}"
    assert socket.if_nameindex() == root_links, "the root namespace's interfaces changed"


def _free_token() -> str:
    while True:
        token = secrets.token_hex(3)
        if not any(netns.NETNS_RUN_DIR.glob(f"zzfwb{token}-*")):
            return token


def _install_filters(bench: Bench) -> None:
    allowed = fwtraffic.rules(RULE_COUNT)
    pairs = bench.pairs
    bench.dp = _ours(pairs["ours"], allowed)
    bench.uncached = _ours(pairs["ours-nocache"], allowed, cache=False)
    assert IPTABLES is not None
    fwtraffic.load(pairs["iptables"].b, [IPTABLES], fwtraffic.iptables_restore(allowed))
    fwtraffic.load(pairs["nft-linear"].b, ["nft", "-f", "-"], fwtraffic.nft_linear(allowed))
    fwtraffic.load(pairs["nft-set"].b, ["nft", "-f", "-"], fwtraffic.nft_set(allowed))
    save = IPTABLES.replace("-restore", "-save")
    loaded = {
        "iptables": fwtraffic.output(pairs["iptables"].b, save).count("\n-A INPUT "),
        "nft-linear": fwtraffic.output(pairs["nft-linear"].b, "nft", "list", "ruleset").count(" accept\n"),
        "nft-set": len(ELEMENT.findall(fwtraffic.output(pairs["nft-set"].b, "nft", "list", "ruleset"))),
    }
    assert loaded == {"iptables": RULE_COUNT, "nft-linear": RULE_COUNT, "nft-set": RULE_COUNT - 1}, loaded
    INFO["iptables"] = os.path.basename(IPTABLES)
    INFO["rules_loaded"] = loaded
    INFO["rules"] = RULE_COUNT


def _ours(pair: fwtraffic.Pair, allowed: list[fwtraffic.Allow], cache: bool = True) -> SwitchDataplane:
    """Our dataplane on b's eth0 as the sender's vSwitch port: configured first (it fails closed).
    `cache` False: built without the flow and policy caches (ebpf/include/prof.h)."""
    from ipaddress import ip_address

    from dataplane import fwpolicy
    from dataplane.firewall import Settings
    from dataplane.switch import PortVlans

    dp = fwbench.load_dataplane(0 if cache else fwbench.PROF_CACHE)
    try:
        fw, port = dp.firewall, pair.receiver_ifindex
        fw.set_settings(Settings())
        dp.configure(port, PortVlans(allowed=frozenset({VLAN}), untagged=True, guard=True))
        fw.set_vnic(port, fwtraffic.SENDER_MAC, 1, True, False, True, [ip_address(fwtraffic.SENDER_IP)])
        fw.install(fwpolicy.compile(fwtraffic.policy(allowed)))
        with netlink.session(pair.b) as nl:
            dp.attach(nl.tc_socket(), port, vm=True)
    except BaseException:
        dp.close()
        raise
    return dp


def _warm_up(bench: Bench) -> None:
    """ARP settled and every filter letting the traffic through before anything is timed."""
    for config, pair in bench.pairs.items():
        rtt = traffic.ping(pair.a, fwtraffic.RECEIVER_IP, 3, 0.01)
        assert rtt.received == rtt.sent, f"{config}: a cannot reach b"


def _ours_counts(bench: Bench) -> dict[str, int]:
    """Packets our programs passed from and to the sender, the rule hits, and drops by reason."""
    from dataplane.abi import Direction, Reason

    assert bench.dp is not None
    counts = bench.dp.counters(bench.pairs["ours"].receiver_ifindex)
    hits = bench.dp.firewall.rule_hits(RULE_IDS.values())
    passed = {d: counts[(d, Reason.PASS)].packets if (d, Reason.PASS) in counts else 0 for d in Direction}
    result = {"from_vm": passed[Direction.INGRESS], "to_vm": passed[Direction.EGRESS]}
    result |= {f"hits_{proto}": hits.get(rule, (0, 0))[0] for proto, rule in RULE_IDS.items()}
    drops = {(d, r): c.packets for (d, r), c in counts.items() if r != Reason.PASS}
    way = {Direction.INGRESS: "from_vm", Direction.EGRESS: "to_vm"}
    return result | {f"drop_{r.label}_{way[d]}": n for (d, r), n in drops.items()}


def _drops(seen: dict[str, int]) -> dict[str, int]:
    return {key: n for key, n in seen.items() if key.startswith("drop_") and n}


Samples = dict[str, list[float]]


Measure = Callable[[fwtraffic.Pair], float]


def _measured(benchmark: Any, bench: Bench, metric: str, measure: Measure) -> Samples:
    """All configs in alternating rounds, as one pytest-benchmark round; what ours counted meanwhile."""
    benchmark.group = f"fw traffic {metric}"
    samples: Samples = {config: [] for config in CONFIGS}
    before = _ours_counts(bench)

    def rounds() -> None:
        for _, config in fwtraffic.configs_in_rounds(CONFIGS, ROUNDS[metric]):
            samples[config].append(measure(bench.pairs[config]))

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    after = _ours_counts(bench)
    grown = {key: after[key] - before.get(key, 0) for key in after}
    bench.seen[metric] = grown
    RESULTS[metric] = samples
    INFO.setdefault("ours_counts", {})[metric] = grown
    benchmark.extra_info.update({"samples": samples, "ours_counts": grown})
    return samples


def test_udp_rate(benchmark: Any, bench: Bench) -> None:
    delivered: dict[str, int] = dict.fromkeys(CONFIGS, 0)
    sent_kpps: Samples = {config: [] for config in CONFIGS}
    config_of = {pair.name: config for config, pair in bench.pairs.items()}

    def measure(pair: fwtraffic.Pair) -> float:
        rate = fwtraffic.udp_rate(pair, bench.sender, UDP_SECONDS)
        delivered[config_of[pair.name]] += rate.delivered
        sent_kpps[config_of[pair.name]].append(rate.sent_pps / 1e3)
        return rate.delivered_pps / 1e3

    _measured(benchmark, bench, "udp_kpps", measure)
    RESULTS["sent_kpps"] = sent_kpps
    assert all(delivered.values()), f"no UDP delivered: {delivered}"
    seen = bench.seen["udp_kpps"]
    assert seen["from_vm"] >= delivered["ours"], f"ours passed fewer than b received: {seen} vs {delivered}"
    assert not _drops(seen), f"ours dropped allowed traffic: {_drops(seen)}"
    assert seen["hits_udp"] >= 1, f"ours: the UDP rule was never hit: {seen}"


def test_tcp_throughput(benchmark: Any, bench: Bench) -> None:
    def measure(pair: fwtraffic.Pair) -> float:
        return fwtraffic.tcp_throughput(pair, IPERF_SECONDS) / 1e9

    samples = _measured(benchmark, bench, "tcp_gbps", measure)
    assert all(s > 0 for values in samples.values() for s in values), f"no TCP traffic: {samples}"
    seen = bench.seen["tcp_gbps"]
    assert seen["hits_tcp"] >= ROUNDS["tcp_gbps"], f"ours: iperf3's connections missed their rule: {seen}"
    assert seen["from_vm"] > 0 and seen["to_vm"] > 0, f"ours: the programs did not pass the stream: {seen}"
    assert not _drops(seen), f"ours dropped packets of allowed TCP streams: {_drops(seen)}"


def test_rtt(benchmark: Any, bench: Bench) -> None:
    lost: list[str] = []
    medians: Samples = {config: [] for config in CONFIGS}
    config_of = {pair.name: config for config, pair in bench.pairs.items()}

    def measure(pair: fwtraffic.Pair) -> float:
        rtt = traffic.ping(pair.a, fwtraffic.RECEIVER_IP, PING_COUNT, PING_INTERVAL)
        if rtt.received != PING_COUNT:
            lost.append(f"{pair.name}: {rtt.received}/{rtt.sent}")
        medians[config_of[pair.name]].append(rtt.median_us)
        return rtt.avg_us

    _measured(benchmark, bench, "rtt_us", measure)
    RESULTS["rtt_median_us"] = medians
    assert not lost, f"ping lost replies: {lost}"
    seen = bench.seen["rtt_us"]
    pings = PING_COUNT * ROUNDS["rtt_us"]
    assert min(seen["from_vm"], seen["to_vm"]) >= pings, f"ours: pings not through the programs: {seen}"
    assert seen["hits_icmp"] >= 1, f"ours: the ICMP rule was never hit: {seen}"
    assert not _drops(seen), f"ours dropped packets during the pings: {_drops(seen)}"
