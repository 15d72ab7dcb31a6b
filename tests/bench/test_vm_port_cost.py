"""Per-packet cost of the VM-port programs now against a base revision, in the same run.

    ACK out ──BPF_PROG_TEST_RUN──> port_from_vm (base | now | twin) | nlab_empty
    ACK in  ──BPF_PROG_TEST_RUN──> port_to_vm   (base | now | twin) | nlab_empty

The common case: an untagged IPv4 TCP segment of an established flow, on a plain VM port (untagged
only, edge guard) whose vNIC has port security and the firewall on, ten rules. The base is
`git show $NLAB_COST_BASE:ebpf/` (default `main`) compiled into a temporary directory and loaded
beside the working tree's programs, which are loaded twice ("twin", the same programs again,
measures the method's own noise), all with the same user-space settings (a struct the base lacks
a field of is written whole; the base reads its own prefix of it; maps it lacks are left out).
Each round runs the floor and the three in turn, REPEAT warm iterations each (the kernel's mean
per iteration); the medians of ROUNDS rounds, and of each round's now/base and twin/now ratios,
are reported, never asserted, and written to .benchmarks/vm-port-cost.json. Skipped when the
base's ebpf/ is the working tree's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.bench import fwbench, record, revision

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

PORT = 1  # the loopback's ifindex: test-run only names it
RULES = 10
REPEAT = 2_000 if record.quick() else 20_000
ROUNDS = 7 if record.quick() else 61
REPO = Path(__file__).resolve().parents[2]
REPORT_FILE = Path(".benchmarks") / "vm-port-cost.json"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads eBPF programs")


def _load(
    ebpf_dir: Path | None, monkeypatch: pytest.MonkeyPatch, like: SwitchDataplane | None = None
) -> SwitchDataplane:
    from dataplane import fwpolicy
    from dataplane.firewall import Settings
    from dataplane.switch import PortVlans

    dp = revision.load(ebpf_dir, monkeypatch, like)
    dp.firewall.set_settings(Settings())
    dp.configure(PORT, PortVlans(untagged=True, guard=True))
    dp.firewall.set_vnic(
        PORT, fwbench.VM_MAC, fwbench.ENDPOINT, True, False, True, [ip_address(fwbench.VM_IP)]
    )
    dp.firewall.install(fwpolicy.compile(fwbench.policy(RULES)))
    return dp


def _establish(dp: SwitchDataplane, dst: str) -> None:
    from dataplane import testrun

    assert testrun.run(dp.programs["port_from_vm"], fwbench.tcp_frame(dst, "S"), ifindex=PORT).passed
    synack = fwbench.tcp_frame(dst, "SA", reply=True)
    assert testrun.run(dp.programs["port_to_vm"], synack, ifindex=PORT).passed, "the SYN-ACK is dropped"


@pytest.fixture(scope="module")
def planes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SwitchDataplane]]:
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")
    with revision.planes(tmp_path_factory.mktemp("base"), _load, ("twin",)) as loaded:
        yield loaded


def _median_ns(planes: dict[str, SwitchDataplane], program: str, frame: bytes) -> dict[str, float]:
    """Median ns of each plane and of the floor, and the median of each round's now/base and
    twin/now ratios. twin/now (the same programs twice) is the method's own noise."""
    return revision.interleaved(
        {name: planes[name].programs[program] for name in ("base", "now", "twin")},
        planes["now"].programs["nlab_empty"],
        frame,
        ROUNDS,
        REPEAT,
        {"ratio": ("now", "base"), "noise": ("twin", "now")},
    )


def test_established_tcp_cost_against_base(
    planes: dict[str, SwitchDataplane], capsys: Any, bench_record: Any
) -> None:
    dst = fwbench.peer(1)
    for dp in planes.values():
        _establish(dp, dst)
    frames = {
        "port_from_vm": fwbench.tcp_frame(dst, "A"),
        "port_to_vm": fwbench.tcp_frame(dst, "A", reply=True),
    }
    rows = []
    for program, frame in frames.items():
        ns = _median_ns(planes, program, frame)
        rows.append(
            {
                "program": program,
                **{f"{k}_ns": round(ns[k], 1) for k in ("floor", "base", "now")},
                "now_over_base": round(ns["ratio"], 3),
                "twin_over_now": round(ns["noise"], 3),
                "extra_now_over_extra_base": round((ns["now"] - ns["floor"]) / (ns["base"] - ns["floor"]), 3),
            }
        )
    report = {
        "base": os.environ.get("NLAB_COST_BASE", "main"),
        "case": f"established IPv4 TCP ACK, untagged plain port, port security + firewall, {RULES} rules",
        "method": f"{ROUNDS} rounds of {REPEAT} warm iterations each, floor/base/now in turn; medians of"
        " the ns and of each round's now/base",
        "rows": rows,
        "load_average_1min": os.getloadavg()[0],
    }
    ratios = {f"{r['program']}_now_over_base": r["now_over_base"] for r in rows}
    bench_record("vm-port-cost", figures=report, ratios=ratios, baseline=f"the programs of {report['base']}")
    out = REPO / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    with capsys.disabled():
        for r in rows:
            print(
                f"\n{r['program']}: base {r['base_ns']} ns, now {r['now_ns']} ns, floor {r['floor_ns']} ns:"
                f" now/base {r['now_over_base']}x (above the floor {r['extra_now_over_extra_base']}x);"
                f" the same programs twice: {r['twin_over_now']}x"
            )
