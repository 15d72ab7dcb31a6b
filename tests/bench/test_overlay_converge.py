"""Overlay convergence, evpn: from a MAC appearing behind one VTEP until the other VTEP's FDB holds it.

                  rr 10.255.0.254
                   |
    h1 10.255.0.11 -[ul]- h2 10.255.0.12          VNI 10010 on both: b1 on h1, b2 on h2
    (b1 sends a frame from a new MAC)  (h2's vx-10010 FDB polled for that MAC)

One round: b1's eth0 sends one gratuitous ARP from a MAC never seen before (the bridge on h1
learns it on b1's port, as for a VM that just booted or moved in), then h2's `vx-10010` FDB is
polled (every POLL_S) until the MAC is there as an `extern_learn` entry pointing at h1's VTEP. What happens
in between is the whole EVPN path: bridge learning -> zebra (netlink) -> bgpd -> type-2 route to
the reflector -> reflected to h2 -> bgpd -> zebra -> kernel FDB. A poll is one FDB dump and a
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
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns_lab.features.overlay import frr
from netns_lab.kernel import netlink
from tests.lab import evpn_fabric as ef

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds namespaces"),
    pytest.mark.skipif(frr.available() is not None, reason=f"FRR: {frr.available()}"),
]

VNI = 10010
ROUNDS = 30
TIMEOUT_S = 10.0
POLL_S = 0.001
REPORT_FILE = Path(".benchmarks") / "overlay-converge.json"
B1 = ef.VM("b1", "h1", VNI, "10.0.0.1/24", "02:0b:00:00:00:01")
B2 = ef.VM("b2", "h2", VNI, "10.0.0.2/24", "02:0b:00:00:00:02")


@pytest.fixture(scope="module")
def fabric() -> Iterator[ef.Fabric]:
    hosts = {"h1": "10.255.0.11/24", "h2": "10.255.0.12/24"}
    f = ef.Fabric("b" + secrets.token_hex(3), hosts, "10.255.0.254/24", vms={"b1": B1, "b2": B2})
    try:
        f.converge()
        yield f
    finally:
        f.down()


def _fresh_mac() -> str:
    return ":".join(f"{b:02x}" for b in (0x02, 0xEE, *secrets.token_bytes(4)))


def test_evpn_mac_converge(fabric: ef.Fabric, benchmark) -> None:
    vtep = fabric.vtep("h1")
    samples: list[float] = []
    with netlink.session(fabric.ns("h2")) as nl:
        ipr, index = nl.iproute(), nl.index(f"vx-{VNI}")

        def remote_has(mac: str) -> bool:
            for msg in ipr.fdb("dump", ifindex=index):
                if msg.get_attr("NDA_LLADDR") == mac and msg.get_attr("NDA_DST") == str(vtep):
                    return bool(msg["flags"] & ef.NTF_EXT_LEARNED)
            return False

        def one_round(mac: str) -> None:
            began = time.perf_counter()
            ef.announce(fabric.ns("b1"), B1, mac=mac)
            deadline = time.monotonic() + TIMEOUT_S
            while not remote_has(mac):
                assert time.monotonic() < deadline, f"{mac} not in h2's FDB after {TIMEOUT_S:g} s"
                time.sleep(POLL_S)  # leave the 2 shared cores to FRR, which is what is measured
            samples.append(time.perf_counter() - began)

        benchmark.pedantic(one_round, setup=lambda: ((_fresh_mac(),), {}), rounds=ROUNDS, iterations=1)

    ms = sorted(s * 1e3 for s in samples)
    report = {
        "mode": "evpn",
        "what": "MAC learned behind h1 until h2's vx FDB holds it (extern_learn)",
        "rounds": len(ms),
        "median_ms": round(statistics.median(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "min_ms": round(ms[0], 2),
        "max_ms": round(ms[-1], 2),
        "load_average": os.getloadavg(),
    }
    benchmark.extra_info.update(report)
    REPORT_FILE.parent.mkdir(exist_ok=True)
    REPORT_FILE.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nevpn convergence: {json.dumps(report)}")
