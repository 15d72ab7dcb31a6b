"""Per-packet cost of the underlay guard against an empty TC program, measured by the kernel.

    outer frame ──BPF_PROG_TEST_RUN──> overlay_from_underlay   (pNIC: ifindex 1, nothing attached)
    outer frame ──BPF_PROG_TEST_RUN──> nlab_empty              (the floor, same object)

A host without a VTEP runs no guard at all (nothing attached): its cost is zero, and the floor
is what any TC program costs. The paths: VXLAN accepted (IPv4 and IPv6 outer), dropped from an
unregistered source, TCP to the VTEP address (BGP), UDP 4789 in transit, ARP; with 1 and with
1,000 registered peers and hosted VNIs (hash lookups: the cost should not move). The guard only
reads the frame, so every path is measured warm: alternating runs of REPEAT iterations (the
kernel's mean per iteration), the median of PAIRS. Reported, never asserted: the table is
printed at the end of the session and written to .benchmarks/overlay-cost.json.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.bench import record

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

PORT = 1  # the loopback's ifindex: test-run only names it
SIZES = (128, 1514)  # bytes of the outer frame
REPEAT = 20_000
PAIRS = 11
TABLES = (1, 1000)  # registered peers and hosted VNIs each: one, and a large overlay's
REPORT_FILE = Path(".benchmarks") / "overlay-cost.json"
LOCAL4, PEER4, ROGUE4, LOCAL6, PEER6 = (
    "10.255.1.11",
    "10.255.1.12",
    "10.255.1.66",
    "fd00:255::11",
    "fd00:255::12",
)
VNI = 10010

ROWS: list[dict[str, Any]] = []

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads eBPF programs"),
    pytest.mark.skipif(record.quick(), reason="not in QUICK=1: two dataplanes to compile for no plot"),
]


def frame(path: str, size: int) -> bytes:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Ether
    from scapy.packet import Raw, raw

    vxlan = Raw(bytes.fromhex("08000000") + (VNI << 8).to_bytes(4, "big"))
    outer = {
        "vxlan4-accepted": IP(src=PEER4, dst=LOCAL4) / UDP(sport=50000, dport=4789) / vxlan,
        "vxlan6-accepted": IPv6(src=PEER6, dst=LOCAL6) / UDP(sport=50000, dport=4789) / vxlan,
        "vxlan4-rogue": IP(src=ROGUE4, dst=LOCAL4) / UDP(sport=50000, dport=4789) / vxlan,
        "bgp4": IP(src=PEER4, dst=LOCAL4) / TCP(sport=40000, dport=179, flags="A"),
        "transit4": IP(src=PEER4, dst="10.255.1.99") / UDP(sport=50000, dport=4789) / vxlan,
        "arp": ARP(psrc=PEER4, pdst=LOCAL4),
    }[path]
    head = Ether(dst="02:00:0a:ff:01:0b", src="02:00:0a:ff:01:0c") / outer
    pad = size - len(raw(head))
    return raw(head / Raw(b"\0" * pad)) if "ARP" in head else raw(head / Raw(b"i" * pad))


PATHS = ("vxlan4-accepted", "vxlan6-accepted", "vxlan4-rogue", "bgp4", "transit4", "arp")
DROPS = {"vxlan4-rogue"}


@pytest.fixture(scope="module")
def planes(request: pytest.FixtureRequest) -> Iterator[dict[int, SwitchDataplane]]:
    """A dataplane per table size, the second instantiated from the first (no second compile)."""
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")
    from dataplane.switch import SwitchDataplane

    pm = request.config.pluginmanager
    if not pm.has_plugin(OverlayCostSummary.name):
        pm.register(OverlayCostSummary(), OverlayCostSummary.name)
    loaded: dict[int, SwitchDataplane] = {}
    try:
        for size in TABLES:
            loaded[size] = dp = SwitchDataplane.load(like=loaded.get(TABLES[0]))
            fill(dp, size)
        yield loaded
    finally:
        for dp in loaded.values():
            dp.close()


def fill(dp: SwitchDataplane, size: int) -> None:
    """`size` peers (the measured one last) and `size` VNIs (the measured one first)."""
    from ipaddress import IPv4Address

    guard = dp.overlay
    guard.set_local([f"{LOCAL4}/24", LOCAL6])
    for i in range(size - 1):
        guard.add_peer(IPv4Address("10.254.0.1") + i)
    guard.add_peer(PEER4)
    guard.add_peer(PEER6)
    for vni in range(VNI, VNI + size):
        guard.add_vni(vni)


@pytest.mark.parametrize("tables", TABLES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("path", PATHS)
def test_overlay_cost(
    benchmark: Any, planes: dict[int, SwitchDataplane], path: str, size: int, tables: int
) -> None:
    from dataplane import testrun

    dataplane = planes[tables]
    data = frame(path, size)
    prog, floor = dataplane.program("overlay_from_underlay"), dataplane.programs["nlab_empty"]
    assert testrun.run(prog, data, ifindex=PORT).dropped == (path in DROPS), f"{path} does not take its path"
    pairs: list[tuple[int, int]] = []

    def measure() -> None:
        pairs.append(
            (
                testrun.run(floor, data, ifindex=PORT, repeat=REPEAT).ns_per_run,
                testrun.run(prog, data, ifindex=PORT, repeat=REPEAT).ns_per_run,
            )
        )

    benchmark.pedantic(measure, rounds=PAIRS)
    path_ns = statistics.median(p for _, p in pairs)
    floor_ns = statistics.median(f for f, _ in pairs)
    row = {
        "path": path,
        "size": size,
        "tables": tables,
        "path_ns": round(path_ns, 1),
        "floor_ns": round(floor_ns, 1),
        "extra_ns": round(path_ns - floor_ns, 1),
        "ratio": round(path_ns / floor_ns, 2),
    }
    ROWS.append(row)
    benchmark.extra_info["kernel_repeat"] = row


class OverlayCostSummary:
    """Prints the kernel-measured table after pytest-benchmark's own, and writes it as JSON."""

    name = "overlay-cost-summary"

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter, config: pytest.Config
    ) -> None:
        if not ROWS:
            return
        tr = terminalreporter
        tr.section("underlay guard cost vs nlab_empty (kernel ns per packet, warm)")
        tr.write_line(f"{'path':<16} {'bytes':>5} {'tables':>6} {'guard':>7} {'floor':>7} {'extra':>7} ratio")
        for r in sorted(ROWS, key=lambda r: (PATHS.index(r["path"]), r["size"], r["tables"])):
            tr.write_line(
                f"{r['path']:<16} {r['size']:>5} {r['tables']:>6} {r['path_ns']:>7.1f} {r['floor_ns']:>7.1f}"
                f" {r['extra_ns']:>7.1f} {r['ratio']:>5.2f}x"
            )
        tr.write_line("tables: as many peers as hosted VNIs; a host without a VTEP runs no guard (0 ns)")
        data = self.table()
        ratios = {f"{r['path']}_{r['size']}B_{r['tables']}_tables_x_floor": r["ratio"] for r in ROWS}
        record.record(
            "test_overlay_cost", "overlay-cost", figures=data, ratios=ratios, baseline=data["floor"]
        )
        out = config.rootpath / REPORT_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        tr.write_line(f"written to {out}")

    @staticmethod
    def table() -> dict[str, Any]:
        return {
            "unit": "ns per packet, BPF_PROG_TEST_RUN duration (mean per iteration as the kernel reports it)",
            "floor": "nlab_empty, same object, measured the same way, interleaved",
            "method": f"median of {PAIRS} alternating runs of {REPEAT} iterations",
            "tables": "registered peers = hosted VNIs = the row's `tables`",
            "rows": ROWS,
        }
