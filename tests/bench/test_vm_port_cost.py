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
import re
import statistics
import subprocess
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.bench import fwbench

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

PORT = 1  # the loopback's ifindex: test-run only names it
RULES = 10
REPEAT = 20_000
ROUNDS = 61
REPO = Path(__file__).resolve().parents[2]
REPORT_FILE = Path(".benchmarks") / "vm-port-cost.json"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads eBPF programs")


def _base_tree(base: str, into: Path) -> None:
    """`base`'s ebpf/ as files under `into` (ebpf/vswitch.c, ebpf/include/...)."""

    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=True).stdout

    for name in git("ls-tree", "-r", "--name-only", base, "ebpf").decode().split():
        path = into / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(git("show", f"{base}:{name}"))


def _same_as_worktree(base: str) -> bool:
    diff = subprocess.run(["git", "diff", "--quiet", base, "--", "ebpf"], cwd=REPO, check=False)
    return diff.returncode == 0


def _load(
    ebpf_dir: Path | None, monkeypatch: pytest.MonkeyPatch, like: SwitchDataplane | None = None
) -> SwitchDataplane:
    from dataplane import bpf, fwpolicy, switch
    from dataplane.firewall import Settings
    from dataplane.switch import PortVlans, SwitchDataplane

    with monkeypatch.context() as m:
        if ebpf_dir is not None:
            m.setattr(bpf, "EBPF_DIR", ebpf_dir)
            m.setattr(bpf, "INCLUDE_DIR", ebpf_dir / "include")
            source = (ebpf_dir / switch.SOURCE).read_text()  # the maps the base does not have yet
            declared = tuple(name for name in switch.MAPS if re.search(rf"[(\s]{name}\s*,", source))
            m.setattr(switch, "MAPS", declared)
        dp = SwitchDataplane.load(like=like)
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
    base = os.environ.get("NLAB_COST_BASE", "main")
    if _same_as_worktree(base):
        pytest.skip(f"ebpf/ of {base} is the working tree's: nothing to compare")
    tree = tmp_path_factory.mktemp("base")
    _base_tree(base, tree)
    monkeypatch = pytest.MonkeyPatch()
    loaded: dict[str, SwitchDataplane] = {}
    try:
        loaded["base"] = _load(tree / "ebpf", monkeypatch)
        loaded["now"] = _load(None, monkeypatch)
        loaded["twin"] = _load(None, monkeypatch, like=loaded["now"])
        yield loaded
    finally:
        for dp in loaded.values():
            dp.close()
        monkeypatch.undo()


def _median_ns(planes: dict[str, SwitchDataplane], program: str, frame: bytes) -> dict[str, float]:
    """Median ns of each plane and of the floor, and the median of each round's now/base and
    twin/now ratios: the runs of a round are side by side, so drift of this shared machine
    cancels out of them. twin/now (the same programs twice) is the method's own noise."""
    from dataplane import testrun

    names = ("base", "now", "twin")
    samples: dict[str, list[int]] = {name: [] for name in ("floor", *names)}
    floor = planes["now"].programs["nlab_empty"]
    for i in range(ROUNDS):
        order = names[i % 3 :] + names[: i % 3]  # none always runs first
        samples["floor"].append(testrun.run(floor, frame, ifindex=PORT, repeat=REPEAT).ns_per_run)
        for name in order:
            result = testrun.run(planes[name].programs[program], frame, ifindex=PORT, repeat=REPEAT)
            assert result.passed, f"{name} {program}: dropped ({result.retval})"
            samples[name].append(result.ns_per_run)

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))

    medians = {name: statistics.median(s) for name, s in samples.items()}
    return {**medians, "ratio": ratio("now", "base"), "noise": ratio("twin", "now")}


def test_established_tcp_cost_against_base(planes: dict[str, SwitchDataplane], capsys: Any) -> None:
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
