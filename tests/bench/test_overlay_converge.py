"""Overlay convergence, evpn: a MAC appearing (or moving) behind a VTEP until another VTEP has it.

                  rr 10.255.0.254
                   |
    h1 .11 ------[ul]------ h2 .12 ------ h3 .13      VNI 10010 on all: b1 on h1, b2 on h2, b3 on h3
    b1 sends from a new MAC   b2 sends from it too       h3's vx-10010 FDB is polled

appear: b1's eth0 sends one gratuitous ARP from a MAC never seen before (the bridge on h1
learns it on b1's port, as for a VM that just booted), then h3's `vx-10010` FDB is
polled (every POLL_S) until the MAC is there as an `extern_learn` entry pointing at h1's VTEP.
move: the same, for a MAC already known at h1 that then sends from b2 on h2. What happens
in between is the whole EVPN path: bridge learning -> zebra (netlink) -> bgpd -> type-2 route to
the reflector -> reflected to h3 -> bgpd -> zebra -> kernel FDB. A poll is one FDB dump and a
1 ms sleep, so the figure is resolved to about a millisecond.

The fabric is the lab tests' (tests/lab/evpn_fabric.py): kernel helpers, no builder. The raw
figures go to .benchmarks/overlay-converge.json for the integrator's controller-vs-evpn ratios.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netns_lab.features.overlay import frr
from netns_lab.kernel import netlink
from tests.bench import record
from tests.lab import evpn_fabric as ef

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces"),
    pytest.mark.skipif(frr.available() is not None, reason=f"FRR: {frr.available()}"),
]

VNI = 10010
ROUNDS = 3 if record.quick() else 30
TIMEOUT_S = 10.0
POLL_S = 0.001
REPORT_FILE = Path(".benchmarks") / "overlay-converge.json"
B1 = ef.VM("b1", "h1", VNI, "10.0.0.1/24", "02:0b:00:00:00:01")
B2 = ef.VM("b2", "h2", VNI, "10.0.0.2/24", "02:0b:00:00:00:02")
B3 = ef.VM("b3", "h3", VNI, "10.0.0.3/24", "02:0b:00:00:00:03")
REPORT: dict[str, dict] = {}


@pytest.fixture(scope="module")
def fabric() -> Iterator[ef.Fabric]:
    hosts = {"h1": "10.255.0.11/24", "h2": "10.255.0.12/24", "h3": "10.255.0.13/24"}
    vms = {vm.name: vm for vm in (B1, B2, B3)}
    f = ef.Fabric("b" + secrets.token_hex(3), hosts, "10.255.0.254/24", vms=vms)
    try:
        f.converge()
        yield f
    finally:
        f.down()


@pytest.fixture
def h3_holds(fabric: ef.Fabric) -> Iterator[Callable[[str, str], None]]:
    """wait(mac, host): poll h3's vx FDB until `mac` is there, extern_learn, at `host`'s VTEP."""
    with netlink.session(fabric.ns("h3")) as nl:
        ipr, index = nl.iproute(), nl.index(f"vx-{VNI}")

        def holds(mac: str, vtep: str) -> bool:
            for msg in ipr.fdb("dump", ifindex=index):
                if msg.get_attr("NDA_LLADDR") == mac and msg.get_attr("NDA_DST") == vtep:
                    return bool(msg["flags"] & ef.NTF_EXT_LEARNED)
            return False

        def wait(mac: str, host: str) -> None:
            vtep, deadline = str(fabric.vtep(host)), time.monotonic() + TIMEOUT_S
            while not holds(mac, vtep):
                assert time.monotonic() < deadline, f"{mac} not at {vtep} in h3's FDB after {TIMEOUT_S:g} s"
                time.sleep(POLL_S)  # leave the 2 shared cores to FRR, which is what is measured

        yield wait


def _fresh_mac() -> str:
    return ":".join(f"{b:02x}" for b in (0x02, 0xEE, *secrets.token_bytes(4)))


def _report(name: str, what: str, samples: list[float], benchmark, bench_record) -> None:
    ms = sorted(s * 1e3 for s in samples)
    REPORT[name] = {
        "what": what,
        "rounds": len(ms),
        "median_ms": round(statistics.median(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "min_ms": round(ms[0], 2),
        "max_ms": round(ms[-1], 2),
    }
    benchmark.extra_info.update(REPORT[name])
    doc = {"mode": "evpn", "load_average": os.getloadavg(), **REPORT}
    bench_record("evpn-converge", figures=doc, baseline="none: absolute ms of the EVPN path")
    REPORT_FILE.parent.mkdir(exist_ok=True)
    REPORT_FILE.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nevpn {name}: {json.dumps(REPORT[name])}")


def test_evpn_mac_appears(fabric: ef.Fabric, h3_holds, benchmark, bench_record) -> None:
    samples: list[float] = []

    def one_round(mac: str) -> None:
        began = time.perf_counter()
        ef.announce(fabric.ns("b1"), B1, mac=mac)
        h3_holds(mac, "h1")
        samples.append(time.perf_counter() - began)

    benchmark.pedantic(one_round, setup=lambda: ((_fresh_mac(),), {}), rounds=ROUNDS, iterations=1)
    _report(
        "appear",
        "a new MAC behind h1 until h3's FDB holds it at h1 (extern_learn)",
        samples,
        benchmark,
        bench_record,
    )


def test_evpn_mac_moves(fabric: ef.Fabric, h3_holds, benchmark, bench_record) -> None:
    """MAC mobility: the MAC is still learned on h1 when it shows up behind h2 (EVPN sequence
    numbers decide); timed from the frame on h2 until h3 points at h2."""
    samples: list[float] = []

    def known_at_h1() -> tuple[tuple[str], dict]:
        mac = _fresh_mac()
        ef.announce(fabric.ns("b1"), B1, mac=mac)
        h3_holds(mac, "h1")
        return (mac,), {}

    def one_round(mac: str) -> None:
        began = time.perf_counter()
        ef.announce(fabric.ns("b2"), B2, mac=mac)
        h3_holds(mac, "h2")
        samples.append(time.perf_counter() - began)

    benchmark.pedantic(one_round, setup=known_at_h1, rounds=ROUNDS, iterations=1)
    _report(
        "move",
        "a MAC known at h1 appears behind h2, until h3's FDB points at h2",
        samples,
        benchmark,
        bench_record,
    )
