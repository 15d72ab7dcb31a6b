"""eBPF program tests: the real programs, loaded once, run on crafted frames with BPF_PROG_TEST_RUN.

Nothing is attached anywhere: test-run executes a program on a copy of a frame, with
`skb->ifindex` = 1 (the loopback, which exists in every namespace). That ifindex is also the
port under test, reconfigured by each case. Counters cannot be reset, so each case compares a
snapshot taken before it with one taken after (`Counters.delta`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

PORT = 1  # the loopback's ifindex: the only one test-run may use in every namespace

Delta = dict[tuple[int, int], tuple[int, int]]  # (direction, reason) -> (packets, bytes)


def require_kernel() -> None:
    """Skip (with the reason) where programs cannot be loaded: not root, or no bcc."""
    if os.geteuid() != 0:
        pytest.skip("needs root: loads eBPF programs and maps")
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")


@pytest.fixture(scope="session")
def dataplane() -> Iterator[SwitchDataplane]:
    """One loaded SwitchDataplane for the whole session (compiling takes about a second)."""
    require_kernel()
    from dataplane.switch import SwitchDataplane

    dp = SwitchDataplane.load()
    try:
        yield dp
    finally:
        dp.close()


@dataclass
class Counters:
    """Reads a port's counters so that a case can assert exactly what it added."""

    dp: SwitchDataplane
    ifindex: int = PORT

    def snapshot(self) -> Delta:
        return {
            (int(d), int(r)): (c.packets, c.bytes) for (d, r), c in self.dp.counters(self.ifindex).items()
        }

    def delta(self, before: Delta) -> Delta:
        after = self.snapshot()
        diff = {}
        for key, (packets, nbytes) in after.items():
            old_packets, old_bytes = before.get(key, (0, 0))
            if (packets, nbytes) != (old_packets, old_bytes):
                diff[key] = (packets - old_packets, nbytes - old_bytes)
        return diff


@pytest.fixture
def counters(dataplane: SwitchDataplane) -> Counters:
    return Counters(dataplane)
