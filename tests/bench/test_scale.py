"""Scale benchmark: up and down of labs of 10, 50 and 200 VMs over 4 hosts.

    tor1 --- hv0..hv3 (eth0) --- vs0 --- vm0 .. vm(N-1)     (VMs round-robin over the hosts)

Each size is built and torn down by our builder (`builder.up` / `teardown.down`) and, in the
same run, by the baseline: one `ip -force -batch` process making the same namespaces, bridges
and veths (see ipbatch.py for what one process cannot do). Every round uses a fresh lab name,
and after every round the lab must be gone: no /run/netns/<lab>-*, no /run/netns-lab/<lab>.
That is a correctness check; the timings are only reported (conftest.py prints the ratios).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netns_lab.kernel import netns
from netns_lab.lab import builder, teardown
from netns_lab.lab.state import state_dir
from netns_lab.topology import loader
from netns_lab.topology.model import Topology
from tests.bench import ipbatch, record
from tests.labgen import scale_topology

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip for the baseline"),
]

HOSTS = 4
# VMs -> measured rounds (plus one warm-up round each)
ROUNDS = {10: 1, 50: 1} if record.quick() else {10: 5, 50: 5, 200: 3}
SETTLE_MAX_S = 0.5  # wait at most this long, between rounds, for the kernel's netns cleanup


@dataclass
class LabRound:
    """One lab of one round: its topology, and the baseline's scripts."""

    topo: Topology
    text: str
    workdir: Path
    up_script: Path | None = None
    down_script: Path | None = None
    extra_namespaces: list[str] = field(default_factory=list)

    @property
    def lab(self) -> str:
        return self.topo.lab


def leftovers(lab: str) -> list[str]:
    """What is still there of `lab` (read-only look: names in /run/netns, the state dir)."""
    found = sorted(str(p) for p in netns.NETNS_RUN_DIR.glob(f"{lab}-*"))
    if state_dir(lab).exists():
        found.append(str(state_dir(lab)))
    return found


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        jiffies = [int(v) for v in f.readline().split()[1:]]
    return sum(jiffies) - jiffies[3] - jiffies[4]  # all but idle and iowait


def settle() -> None:
    """Let the kernel finish the previous round's namespace cleanup (a workqueue) before timing."""
    deadline = time.monotonic() + SETTLE_MAX_S
    before = _busy_jiffies()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = _busy_jiffies()
        if now - before <= 1:
            return
        before = now


class Rounds:
    """Fresh labs for the rounds of one benchmark; whatever is left is removed at the end."""

    def __init__(self) -> None:
        self.open: dict[str, LabRound] = {}
        self.load_times: list[float] = []

    def new(self, vms: int) -> LabRound:
        lab = "bs" + secrets.token_hex(2)
        while leftovers(lab) or lab in self.open:
            lab = "bs" + secrets.token_hex(2)
        text = scale_topology(vms, HOSTS, lab=lab)
        start = time.perf_counter()
        topo = loader.load_text(text, f"scale-{vms}.yaml")
        self.load_times.append(time.perf_counter() - start)
        lab_round = LabRound(topo, text, Path(tempfile.mkdtemp(prefix=f"{lab}-")))
        self.open[lab] = lab_round
        return lab_round

    def finish(self, lab_round: LabRound) -> None:
        """The round is over: its lab must be completely gone (if not, `close` removes it)."""
        left = leftovers(lab_round.lab)
        assert not left, f"teardown of {lab_round.lab} incomplete: {left}"
        del self.open[lab_round.lab]
        shutil.rmtree(lab_round.workdir, ignore_errors=True)

    def clean(self, lab_round: LabRound) -> None:
        """Remove a lab by its exact names, whoever (ours or the baseline) built it."""
        teardown.down(lab_round.lab)
        for name in [*ipbatch.namespaces(lab_round.topo), *lab_round.extra_namespaces]:
            netns.delete(name)

    def close(self) -> None:
        """Remove every lab still open; one that fails to go does not stop the others."""
        errors: list[Exception] = []
        for lab_round in self.open.values():
            try:
                self.clean(lab_round)
            except Exception as err:
                errors.append(err)
            shutil.rmtree(lab_round.workdir, ignore_errors=True)
        self.open.clear()
        if errors:
            raise errors[0]


class Ours:
    name = "ours"

    def prepare(self, r: LabRound) -> None:
        pass

    def up(self, r: LabRound) -> None:
        builder.up(r.topo, r.text, dataplane=False)  # the baseline has no eBPF: compare like with like

    def after_up(self, r: LabRound) -> None:
        pass

    def down(self, r: LabRound) -> None:
        teardown.down(r.lab)


class Batch:
    name = "batch"

    def prepare(self, r: LabRound) -> None:
        r.up_script = ipbatch.write_script(ipbatch.up_lines(r.topo), r.workdir)
        r.down_script = ipbatch.write_script(ipbatch.down_lines(r.topo), r.workdir)
        helper = ipbatch.helper_namespace(r.lab)
        r.extra_namespaces.append(helper)
        netns.create(helper)

    def up(self, r: LabRound) -> None:
        assert r.up_script is not None
        ipbatch.run(r.up_script, inside=ipbatch.helper_namespace(r.lab))

    def after_up(self, r: LabRound) -> None:
        netns.delete(ipbatch.helper_namespace(r.lab))

    def down(self, r: LabRound) -> None:
        assert r.down_script is not None
        ipbatch.run(r.down_script)


Impl = Ours | Batch
IMPLS = [Ours(), Batch()]


@pytest.fixture
def rounds() -> Iterator[Rounds]:
    root_links = socket.if_nameindex()
    r = Rounds()
    try:
        yield r
    finally:
        r.close()
    assert socket.if_nameindex() == root_links, "the root namespace's interfaces changed"


def _record(benchmark, means: dict, vms: int, phase: str, impl: Impl, rounds: Rounds) -> None:
    if benchmark.stats is not None:
        means[vms, phase, impl.name] = benchmark.stats.stats.mean
    if impl.name == "ours" and rounds.load_times:
        means[vms, "load", "ours"] = sum(rounds.load_times) / len(rounds.load_times)


def _pedantic(benchmark, vms: int, target: Callable, setup: Callable, teardown_: Callable) -> None:
    benchmark.pedantic(
        target, setup=setup, teardown=teardown_, rounds=ROUNDS[vms], warmup_rounds=1, iterations=1
    )


@pytest.mark.parametrize("impl", IMPLS, ids=lambda impl: impl.name)
@pytest.mark.parametrize("vms", sorted(ROUNDS))
def test_up(benchmark, scale_means, rounds: Rounds, vms: int, impl: Impl) -> None:
    benchmark.group = f"up {vms:>3} VMs"

    def setup():
        r = rounds.new(vms)
        impl.prepare(r)
        settle()
        return (r,), {}

    def done(r: LabRound) -> None:
        impl.after_up(r)
        impl.down(r)
        rounds.finish(r)

    _pedantic(benchmark, vms, impl.up, setup, done)
    _record(benchmark, scale_means, vms, "up", impl, rounds)


@pytest.mark.parametrize("impl", IMPLS, ids=lambda impl: impl.name)
@pytest.mark.parametrize("vms", sorted(ROUNDS))
def test_down(benchmark, scale_means, rounds: Rounds, vms: int, impl: Impl) -> None:
    benchmark.group = f"down {vms:>3} VMs"

    def setup():
        r = rounds.new(vms)
        impl.prepare(r)
        impl.up(r)
        impl.after_up(r)
        settle()
        return (r,), {}

    _pedantic(benchmark, vms, impl.down, setup, rounds.finish)
    _record(benchmark, scale_means, vms, "down", impl, rounds)
