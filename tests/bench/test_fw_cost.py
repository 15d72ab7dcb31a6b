"""Per-packet cost of the NIC firewall in `port_from_vm` against an empty TC program, by rule count.

    TCP SYN  ──BPF_PROG_TEST_RUN──> port_from_vm   new flow: policy decision (cached after the first
                                                   SYN: every SYN asks the same), conntrack insert, event
    TCP ACK  ──BPF_PROG_TEST_RUN──> port_from_vm   established: a flow cache hit (conntrack lookup
                                                   once per tick), no policy lookup
    frame    ──BPF_PROG_TEST_RUN──> nlab_empty     the floor, same object

One dataplane is loaded per rule count (10, 100, 1k, 10k allow rules, one distinct /32 each, TCP
port 80, direction out: tests/bench/fwbench.py), and one more with 10k rules built without the
flow and policy caches (-DNLAB_PROF_SKIP, ebpf/include/prof.h: nearly the path before them,
"10000 off"), so that every measurement runs them in rotation with the floor: drift of this
shared machine falls on all of them alike, and the 10k/10 ratio compares runs made side by side.
In each, the port is ifindex 1 (test-run only names it): an access port of VLAN 10 with the edge
guard, whose vNIC has port security and the firewall on. The tested flow goes to the /32 of the
first-added rule or of the last-added one.

Figures are the kernel's own mean per run (test-run's `duration`); pytest-benchmark's table times
one rotation from Python and is only a sanity check. Methods (see test_vlan_cost.py for why the
single method pulls ratios towards 1):

- single: repeat=1 runs, averaged. A new flow can only be measured so: each SYN must insert a
  connection entry, which user space deletes (and the VM's entry count resets) before the next
  run; the events ring is drained as a reader would, so the event output is the real one.
- repeat=N: one run of N iterations, warm, no clock in the figure. Only for the established
  flow, and on an untagged trunk port instead of the access port: the access port pushes a
  tag, and test-run hands the same skb to every iteration (the second would see a tagged frame).
  The same method splits the established cost into its parts (`test_breakdown`).

Goals (reported, never asserted): established <= 3x floor, new flow <= 4x, and the cost at 10k
rules <= 1.2x the cost at 10. The table is printed at the end of the session and written to
.benchmarks/fw-cost.json.
"""

from __future__ import annotations

import ctypes
import os
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.bench import fwbench, record
from tests.bench.fwcost_report import METHODS, PARTS, ROWS, FwCostSummary, row

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

PORT = 1  # the loopback's ifindex: test-run only names it
VLAN = 10
QUICK = record.quick()
RULE_COUNTS = (10, 10_000) if QUICK else (10, 100, 1_000, 10_000)
UNCACHED = 10_000  # the rule count also loaded without the caches
PACKETS = ("first", "last")  # the flow's peer is the /32 of the first-added or the last-added rule
SINGLE_ROUNDS = 300 if QUICK else 3000  # rotations: one floor run, then one run on each rule count
WARMUP_ROUNDS = 50 if QUICK else 200
DRAIN_EVERY = 256  # rounds between two reads of the events rings (each holds ~3,600 events)
REPEAT = 2_000 if QUICK else 20_000
REPEAT_ROUNDS = 3 if QUICK else 9

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads eBPF programs")


@dataclass
class Plane:
    """A loaded dataplane holding the policy of `rules` rules."""

    rules: int
    dp: SwitchDataplane
    drain: fwbench.RingDrain
    cache: bool = True

    @property
    def name(self) -> str:
        return str(self.rules) if self.cache else f"{self.rules} off"

    def program(self, name: str) -> int:
        return self.dp.programs[name]


@pytest.fixture(scope="module")
def planes(request: pytest.FixtureRequest) -> Iterator[list[Plane]]:
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")
    pytest.importorskip("scapy", reason="needs scapy (pip install scapy)")
    pm = request.config.pluginmanager
    if not pm.has_plugin(FwCostSummary.name):
        pm.register(FwCostSummary(), FwCostSummary.name)
    METHODS.update(
        {
            "single": f"mean of {SINGLE_ROUNDS} rotations of repeat=1 runs after {WARMUP_ROUNDS} warm-up"
            " ones, access port VLAN 10; new flow: the connection deleted, the quota reset between"
            " runs, the events rings drained; a clock read and a cold start in path and floor alike",
            f"repeat={REPEAT}": f"median of {REPEAT_ROUNDS} rotations of {REPEAT} warm iterations,"
            " established flow, untagged trunk port (an access port's tag push would change the"
            " skb that test-run reuses)",
        }
    )
    loaded: list[Plane] = []
    try:
        for rules in RULE_COUNTS:
            loaded.append(_plane(rules))
        loaded.append(_plane(UNCACHED, cache=False))
        yield loaded
    finally:
        for plane in loaded:
            plane.drain.close()
            plane.dp.close()


def _plane(rules: int, cache: bool = True) -> Plane:
    from ipaddress import ip_address

    from dataplane import fwpolicy
    from dataplane.firewall import Settings

    dp = fwbench.load_dataplane(0 if cache else fwbench.PROF_CACHE)
    try:
        dp.firewall.set_settings(Settings())  # quota and timeouts: all zero would refuse every flow
        _access(dp)
        address = ip_address(fwbench.VM_IP)
        dp.firewall.set_vnic(PORT, fwbench.VM_MAC, fwbench.ENDPOINT, True, False, True, [address])
        dp.firewall.install(fwpolicy.compile(fwbench.policy(rules)))
        return Plane(rules, dp, fwbench.RingDrain(dp.maps["fw_events"]), cache)
    except BaseException:
        dp.close()
        raise


def _access(dp: SwitchDataplane) -> None:
    from dataplane.switch import PortVlans

    dp.configure(PORT, PortVlans(access=VLAN, guard=True))


def _untagged_trunk(dp: SwitchDataplane) -> None:
    from dataplane.switch import PortVlans

    dp.configure(PORT, PortVlans(allowed=frozenset({VLAN}), untagged=True, guard=True))


def _entries(dp: SwitchDataplane) -> list[tuple[Any, Any]]:
    from dataplane import abi, syscalls

    return list(syscalls.map_items(dp.maps["conntrack"], abi.CtKey, abi.CtEntry))


def _reset_count(dp: SwitchDataplane) -> None:
    from dataplane import syscalls

    for share in (2 * fwbench.ENDPOINT, 2 * fwbench.ENDPOINT + 1):  # opened by the VM, opened to it
        syscalls.map_update(dp.maps["ct_count"], ctypes.c_uint32(share), ctypes.c_uint32(0))


def _clear_conntrack(dp: SwitchDataplane) -> None:
    from dataplane import syscalls

    for key, _ in _entries(dp):
        syscalls.map_delete(dp.maps["conntrack"], key)
    _reset_count(dp)


def _pass_count(dp: SwitchDataplane) -> int:
    from dataplane.abi import Direction, Reason

    counts = dp.counters(PORT).get((Direction.INGRESS, Reason.PASS))
    return counts.packets if counts else 0


def _rule(rules: int, packet: str) -> int:
    return 1 if packet == "first" else rules


Frames = dict[str, bytes]  # plane name -> the frame sent to that dataplane
Between = Callable[[Plane], None]


def _single(
    benchmark: Any, planes: list[Plane], frames: Frames, between: Between = lambda _: None
) -> tuple[dict[str, list[int]], list[int], set[int]]:
    """Rotations of repeat=1 runs: the floor, then each dataplane's port_from_vm (starting with a
    different one each time); `between(plane)` runs untimed before each. Returns the ns of each
    rule count, the floor's ns and the verdicts seen (warm-up rotations left out)."""
    from dataplane import testrun

    floor = planes[0].program("nlab_empty")
    path_ns: dict[str, list[int]] = {p.name: [] for p in planes}
    floor_ns: list[int] = []
    verdicts: set[int] = set()
    rotation = [0]

    def one_round() -> None:
        start = rotation[0] = (rotation[0] + 1) % len(planes)
        floor_ns.append(testrun.run(floor, frames[planes[start].name], ifindex=PORT).ns_per_run)
        for plane in planes[start:] + planes[:start]:
            between(plane)
            result = testrun.run(plane.program("port_from_vm"), frames[plane.name], ifindex=PORT)
            path_ns[plane.name].append(result.ns_per_run)
            verdicts.add(result.retval)

    for _ in range(WARMUP_ROUNDS):
        one_round()
    floor_ns.clear()
    for samples in path_ns.values():
        samples.clear()
    benchmark.pedantic(one_round, rounds=SINGLE_ROUNDS)
    return path_ns, floor_ns, verdicts


def _single_rows(
    planes: list[Plane], packet: str, flow: str, path_ns: dict[str, list[int]], floor_ns: list[int]
) -> list[dict]:
    floor = statistics.fmean(floor_ns)
    return [
        row(
            plane.rules,
            packet,
            flow,
            "single",
            statistics.fmean(path_ns[plane.name]),
            floor,
            path_median_ns=statistics.median(path_ns[plane.name]),
            floor_median_ns=statistics.median(floor_ns),
            runs=len(path_ns[plane.name]),
            cache=plane.cache,
        )
        for plane in planes
    ]


def _repeat(planes: list[Plane], frames: Frames) -> tuple[dict[str, float], float]:
    """Median over REPEAT_ROUNDS rotations of the kernel's mean of REPEAT warm iterations."""
    from dataplane import testrun

    floor = planes[0].program("nlab_empty")
    path_ns: dict[str, list[int]] = {p.name: [] for p in planes}
    floor_ns = []
    for i in range(REPEAT_ROUNDS):
        start = i % len(planes)
        first = frames[planes[start].name]
        floor_ns.append(testrun.run(floor, first, ifindex=PORT, repeat=REPEAT).ns_per_run)
        for plane in planes[start:] + planes[:start]:
            result = testrun.run(
                plane.program("port_from_vm"), frames[plane.name], ifindex=PORT, repeat=REPEAT
            )
            assert result.passed, f"{plane.name} rules: dropped on repeat ({result.retval})"
            path_ns[plane.name].append(result.ns_per_run)
    return {name: statistics.median(s) for name, s in path_ns.items()}, statistics.median(floor_ns)


@pytest.mark.parametrize("packet", PACKETS)
def test_new_flow(benchmark: Any, planes: list[Plane], packet: str) -> None:
    from dataplane import syscalls, testrun

    benchmark.group = "fw new flow (one rotation over the rule counts)"
    syns = {p.name: fwbench.tcp_frame(fwbench.peer(_rule(p.rules, packet)), "S") for p in planes}
    keys, hits, lost = {}, {}, {}
    for plane in planes:
        fw, rule = plane.dp.firewall, _rule(plane.rules, packet)
        _access(plane.dp)
        _clear_conntrack(plane.dp)
        assert testrun.run(plane.program("port_from_vm"), syns[plane.name], ifindex=PORT).passed
        (keys[plane.name], entry), *others = _entries(plane.dp)
        assert not others and entry.rule == rule, f"{plane.name} rules: no connection opened by rule {rule}"
        hits[plane.name], lost[plane.name] = fw.rule_hits([rule])[rule][0], fw.events_lost()
    opened = dict.fromkeys(keys, 0)

    def forget(plane: Plane) -> None:
        """Delete the connection the last SYN opened and give the VM its quota back."""
        opened[plane.name] += syscalls.map_delete(plane.dp.maps["conntrack"], keys[plane.name])
        _reset_count(plane.dp)
        if opened[plane.name] % DRAIN_EVERY == 0:
            plane.drain.drain()

    path_ns, floor_ns, verdicts = _single(benchmark, planes, syns, forget)
    runs = WARMUP_ROUNDS + SINGLE_ROUNDS
    assert verdicts == {testrun.TC_ACT_OK}, f"SYNs dropped: {sorted(verdicts)}"
    for plane in planes:
        forget(plane)
        plane.drain.drain()
        rule, fw = _rule(plane.rules, packet), plane.dp.firewall
        assert opened[plane.name] == 1 + runs, f"{plane.name} rules: some SYNs opened no connection"
        assert fw.rule_hits([rule])[rule][0] - hits[plane.name] == runs, "rule hits miss new flows"
        assert fw.events_lost() == lost[plane.name], "an events ring overflowed: its output went unmeasured"
    rows = _single_rows(planes, packet, "new", path_ns, floor_ns)
    ROWS.extend(rows)
    benchmark.extra_info["kernel_single"] = rows


def _establish(plane: Plane, dst: str) -> None:
    """SYN from the VM, SYN-ACK to it (tagged: it leaves through the access port's egress)."""
    from dataplane import testrun

    _access(plane.dp)
    _clear_conntrack(plane.dp)
    assert testrun.run(plane.program("port_from_vm"), fwbench.tcp_frame(dst, "S"), ifindex=PORT).passed
    synack = fwbench.tcp_frame(dst, "SA", reply=True, vlan=VLAN)
    assert testrun.run(plane.program("port_to_vm"), synack, ifindex=PORT).passed, "the SYN-ACK is dropped"


@pytest.mark.parametrize("packet", PACKETS)
def test_established(benchmark: Any, planes: list[Plane], packet: str) -> None:
    from dataplane import abi, testrun

    benchmark.group = "fw established (one rotation over the rule counts)"
    acks = {}
    for plane in planes:
        dst = fwbench.peer(_rule(plane.rules, packet))
        _establish(plane, dst)
        acks[plane.name] = fwbench.tcp_frame(dst, "A")
    path_ns, floor_ns, verdicts = _single(benchmark, planes, acks)
    assert verdicts == {testrun.TC_ACT_OK}, f"ACKs dropped: {sorted(verdicts)}"
    rows = _single_rows(planes, packet, "established", path_ns, floor_ns)

    before = {p.name: _pass_count(p.dp) for p in planes}
    try:
        for plane in planes:
            _untagged_trunk(plane.dp)
        warm, floor = _repeat(planes, acks)
    finally:
        for plane in planes:
            _access(plane.dp)
    for plane in planes:
        passed = _pass_count(plane.dp) - before[plane.name]
        assert passed == REPEAT * REPEAT_ROUNDS, f"{plane.name} rules: {passed} passes counted"
        (_, entry), *others = _entries(plane.dp)
        assert not others and entry.state == abi.CtState.ESTABLISHED, "the ACKs rode no established flow"
        assert entry.rule == _rule(plane.rules, packet)
    method, port = f"repeat={REPEAT}", "untagged trunk (no tag push)"
    rows += [
        row(
            p.rules,
            packet,
            "established",
            method,
            warm[p.name],
            floor,
            runs=REPEAT_ROUNDS,
            port=port,
            cache=p.cache,
        )
        for p in planes
    ]
    ROWS.extend(rows)
    benchmark.extra_info["kernel"] = rows


def test_breakdown(benchmark: Any, planes: list[Plane]) -> None:
    """Warm cost of an established ACK (to the last rule's peer) by part, on each rule count's
    untagged trunk port: the port alone (a vNIC without settings), + port security, + firewall."""
    from ipaddress import ip_address

    benchmark.group = "fw cost by part"
    acks = {}
    for plane in planes:
        dst = fwbench.peer(plane.rules)
        _establish(plane, dst)
        acks[plane.name] = fwbench.tcp_frame(dst, "A")
    address = [ip_address(fwbench.VM_IP)]
    parts = {"port only": (False, False), "+ port security": (True, False), "+ firewall": (True, True)}

    def measure() -> None:
        for part, (portsec, firewall) in parts.items():
            for plane in planes:
                fw = plane.dp.firewall
                fw.set_vnic(PORT, fwbench.VM_MAC, fwbench.ENDPOINT, portsec, False, firewall, address)
            ns, floor = _repeat(planes, acks)
            PARTS.append({"part": part, "floor_ns": floor, "ns_by_rules": ns})

    try:
        for plane in planes:
            _untagged_trunk(plane.dp)
        benchmark.pedantic(measure, rounds=1)
    finally:
        for plane in planes:
            plane.dp.firewall.set_vnic(PORT, fwbench.VM_MAC, fwbench.ENDPOINT, True, False, True, address)
            _access(plane.dp)
