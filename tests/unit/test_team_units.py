"""dataplane/team.py without a kernel: loss probabilities as the dataplane compares them, the
beacon test on bytes, and the arguments refused before any map is touched."""

from __future__ import annotations

import pytest

from dataplane import abi
from dataplane.team import BEACON_MAGIC, Team, TeamError, is_beacon, loss_units

BROADCAST, SRC = b"\xff" * 6, b"\x02\x00\x00\x00\x0e\x01"


@pytest.mark.parametrize(("p", "units"), [(0.0, 0), (1.0, 1 << 32), (0.5, 1 << 31), (2**-32, 1)])
def test_loss_units_are_exact_at_the_ends(p: float, units: int) -> None:
    assert loss_units(p) == units
    assert abi.FAULT_LOSS_ALL == 1 << 32


@pytest.mark.parametrize("p", [-0.1, 1.0001, float("nan")])
def test_loss_outside_0_1_is_refused(p: float) -> None:
    with pytest.raises(TeamError):
        loss_units(p)


def test_is_beacon_needs_the_ethertype_and_the_whole_magic() -> None:
    ether = BROADCAST + SRC + abi.BEACON_ETHERTYPE.to_bytes(2, "big")
    assert is_beacon(ether + BEACON_MAGIC)
    assert not is_beacon(ether + BEACON_MAGIC[:7])
    assert not is_beacon(ether + b"NLABTEAX")
    assert not is_beacon(BROADCAST + SRC + b"\x88\xb6" + BEACON_MAGIC)
    # 802.1Q in the bytes: a tagged 0x88B5 frame is an ordinary one
    assert not is_beacon(BROADCAST + SRC + b"\x81\x00\x00\x0a\x88\xb5" + BEACON_MAGIC)


@pytest.mark.parametrize(
    "args",
    [
        (0, "silent"),
        (abi.MAX_IFINDEX, "silent"),
        (1, "bogus"),
        (1, "loss"),
        (1, ("loss", 2.0)),
        (1, "silent", 0.5),
    ],
)
def test_bad_faults_are_refused_before_any_map_write(args: tuple) -> None:
    team = Team({})  # no maps at all: a refusal must come first
    with pytest.raises(TeamError):
        team.set_fault(*args)


def test_bad_member_is_refused_before_any_map_write() -> None:
    with pytest.raises(TeamError):
        Team({}).set_member(0, True)
