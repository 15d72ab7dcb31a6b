"""The mirror steps of the VM-port programs and the mirror port's program, through BPF_PROG_TEST_RUN.

The port under test is ifindex 1 (test-run only names it). Copies are never really sent here:
a session's first hop is an ifindex that does not exist, so bpf_clone_redirect fails and the
session counts a dropped copy; what a test sees is whether a tap tried to copy (the session's
counters), the verdict of the original and its counter, and, for the mirror port's program,
the output bytes (a truncated or encapsulated copy). Delivery is proven by the lab tests.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from ipaddress import ip_address
from typing import TYPE_CHECKING

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import raw

from dataplane import abi, testrun
from dataplane.abi import Direction, Reason
from dataplane.mirror import Session, Stats
from dataplane.switch import PortVlans
from netns_lab.features.mirror.plan import decapsulate
from tests.bpf.conftest import PORT, Counters
from tests.bpf.frames import FRAMES

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

SID = 7
NOWHERE = 1000  # an ifindex that must not exist: clone_redirect to it fails
TC_ACT_REDIRECT = 7
IN, OUT = Direction.INGRESS, Direction.EGRESS
FRAME = FRAMES["ipv4"]
OUTER_DST, OUTER_SRC = "02:6d:69:72:00:02", "02:6d:69:72:00:01"


@pytest.fixture
def mirrored(dataplane: SwitchDataplane) -> Iterator[SwitchDataplane]:
    """Port 1 as an untagged VM port; its mirror entry and session SID cleared afterwards."""
    with pytest.raises(OSError):
        socket.if_indextoname(NOWHERE)
    dataplane.configure(PORT, PortVlans(untagged=True))
    try:
        yield dataplane
    finally:
        dataplane.mirrors.clear_port(PORT)
        dataplane.mirrors.clear_session(SID)
        dataplane.unconfigure(PORT)


def stats(dp: SwitchDataplane) -> Stats:
    return dp.mirrors.stats(SID)


def run(dp: SwitchDataplane, program: str, frame: bytes = FRAME, mark: int = 0) -> testrun.Result:
    return testrun.run(dp.programs[program], frame, PORT, mark=mark)


@pytest.mark.parametrize(
    ("taps", "from_vm", "to_vm"),
    [
        (abi.TAP_OUT_BEFORE, 1, 0),
        (abi.TAP_OUT_AFTER, 1, 0),
        (abi.TAP_IN_BEFORE, 0, 1),
        (abi.TAP_IN_AFTER, 0, 1),
        (abi.TAP_OUT_BEFORE | abi.TAP_IN_AFTER, 1, 1),
        (abi.TAP_OUT_BEFORE | abi.TAP_OUT_AFTER, 2, 0),
    ],
    ids=["out-before", "out-after", "in-before", "in-after", "both", "out-twice"],
)
def test_taps_copy_in_their_direction_and_leave_the_original_alone(
    mirrored: SwitchDataplane, counters: Counters, taps: int, from_vm: int, to_vm: int
) -> None:
    mirrored.mirrors.set_session(SID, Session(dest=NOWHERE, taps=taps))
    mirrored.mirrors.set_port(PORT, [(SID, taps)])
    for program, attempts, direction in (("port_from_vm", from_vm, IN), ("port_to_vm", to_vm, OUT)):
        before, snap = stats(mirrored), counters.snapshot()
        result = run(mirrored, program)
        assert result.passed and result.data == FRAME
        assert counters.delta(snap) == {(direction, Reason.PASS): (1, len(FRAME))}
        assert stats(mirrored).dropped - before.dropped == attempts, program


def test_an_unmirrored_port_never_copies(mirrored: SwitchDataplane) -> None:
    mirrored.mirrors.set_session(SID, Session(dest=NOWHERE, taps=0xF))
    for program in ("port_from_vm", "port_to_vm"):
        assert run(mirrored, program).passed
    assert stats(mirrored) == Stats()


def _sampled(dp: SwitchDataplane, sample: int, frames: int) -> Stats:
    """`frames` runs of port_from_vm through a session that copies 1 frame in `sample`: the delta."""
    dp.mirrors.set_session(SID, Session(dest=NOWHERE, taps=abi.TAP_OUT_BEFORE, sample=sample))
    dp.mirrors.set_port(PORT, [(SID, abi.TAP_OUT_BEFORE)])
    before = stats(dp)
    assert testrun.run(dp.programs["port_from_vm"], FRAME, PORT, repeat=frames).passed
    after = stats(dp)
    return Stats(
        after.packets - before.packets, after.bytes - before.bytes, after.dropped - before.dropped,
        after.skipped - before.skipped,
    )  # fmt: skip


# (1 in N, frames, bounds on the copies): each frame is kept when a fresh random number is 0
# modulo N (ebpf/include/mirror.h), so the copies of F frames are Binomial(F, 1/N); the bounds
# are the mean -/+ 6 standard deviations, and the rarest session's lower bound is 1, never 0
# (Poisson mean 15: P(0) = 3e-7), so a session that skips everything fails each case.
SAMPLING = [
    (1, 1000, (1000, 1000)),
    (2, 4000, (1810, 2190)),
    (10, 10000, (820, 1180)),
    (65535, 10**6, (1, 50)),
]


@pytest.mark.parametrize(("sample", "frames", "bounds"), SAMPLING, ids=[f"1-in-{s[0]}" for s in SAMPLING])
def test_sampling_keeps_one_frame_in_n_and_counts_the_others(
    mirrored: SwitchDataplane, sample: int, frames: int, bounds: tuple[int, int]
) -> None:
    delta = _sampled(mirrored, sample, frames)
    attempts = delta.dropped  # the first hop does not exist: every copy tried counts as dropped
    assert delta.packets == 0 and attempts + delta.skipped == frames  # each frame: one or the other
    assert bounds[0] <= attempts <= bounds[1], f"1 in {sample}: {attempts} copies of {frames} frames"


def test_analyzer_port_sends_nothing_and_receives_only_copies(
    mirrored: SwitchDataplane, counters: Counters
) -> None:
    mirrored.mirrors.set_port(PORT, [], analyzer=True)
    cases = (
        ("port_from_vm", 0, False, (IN, Reason.ANALYZER_TX)),
        ("port_from_vm", abi.MIRROR_MARK | SID, False, (IN, Reason.ANALYZER_TX)),
        ("port_to_vm", 0, False, (OUT, Reason.ANALYZER_RX)),
        ("port_to_vm", abi.MIRROR_MARK | abi.MIRROR_DIR_IN << 8 | SID, True, (OUT, Reason.PASS)),
    )
    for program, mark, passes, key in cases:
        snap = counters.snapshot()
        result = run(mirrored, program, mark=mark)
        assert result.passed is passes, (program, hex(mark))
        assert counters.delta(snap) == {key: (1, len(FRAME))}


def test_a_copy_passes_a_port_that_would_drop_the_frame(
    dataplane: SwitchDataplane, counters: Counters
) -> None:
    dataplane.unconfigure(PORT)  # an unconfigured port fails closed...
    snap = counters.snapshot()
    assert run(dataplane, "port_to_vm").dropped
    copy = run(dataplane, "port_to_vm", mark=abi.MIRROR_MARK | abi.MIRROR_DIR_IN << 8 | SID)
    assert copy.passed  # ...but a copy is delivered, its mark left for a capture on the port
    assert copy.mark == abi.MIRROR_MARK | abi.MIRROR_DIR_IN << 8 | SID
    assert counters.delta(snap) == {
        (OUT, Reason.NO_PORT): (1, len(FRAME)),
        (OUT, Reason.PASS): (1, len(FRAME)),
    }


def test_mirror_port_truncates_to_snaplen(mirrored: SwitchDataplane) -> None:
    frame = FRAMES["ipv4"] + b"\0" * 100
    mirrored.mirrors.set_session(SID, Session(dest=NOWHERE, taps=abi.TAP_OUT_BEFORE, snaplen=64, via=NOWHERE))
    assert run(mirrored, "mirror_port_rx", frame).dropped  # not a copy: no mark
    result = run(mirrored, "mirror_port_rx", frame, mark=abi.MIRROR_MARK | abi.MIRROR_DIR_OUT << 8 | SID)
    assert result.retval == TC_ACT_REDIRECT
    assert result.data == frame[:64]


@pytest.mark.parametrize("direction", ["out", "in"])
def test_mirror_port_encapsulates_without_a_vm_mac_outside(mirrored: SwitchDataplane, direction: str) -> None:
    code = abi.MIRROR_DIR_OUT if direction == "out" else abi.MIRROR_DIR_IN
    session = Session(
        dest=NOWHERE, taps=0xF, via=NOWHERE, encap=True, vlan=900, outer_dst=OUTER_DST, outer_src=OUTER_SRC
    )
    mirrored.mirrors.set_session(SID, session)
    result = run(mirrored, "mirror_port_rx", FRAME, mark=abi.MIRROR_MARK | code << 8 | SID)
    assert result.retval == TC_ACT_REDIRECT
    out = result.data
    assert out[:6].hex(":") == OUTER_DST and out[6:12].hex(":") == OUTER_SRC
    assert out[12:14] == b"\x88\xb5"
    assert len(out) == len(FRAME) + 26
    assert decapsulate(out) == (SID, direction, FRAME)
    assert decapsulate(FRAME) is None


def test_flooded_frame_is_not_copied_and_copies_still_reach_a_guarded_port(
    mirrored: SwitchDataplane, counters: Counters
) -> None:
    """A frame for another MAC is refused at a port-secured VM port before its taps (it is not
    that VM's traffic: no copy), while a mirror copy of such a frame, marked, is delivered."""
    own, other = "02:00:00:00:0b:01", "02:00:00:00:0b:02"
    mirrored.firewall.set_vnic(PORT, own, 0, True, False, False, [ip_address("10.0.11.1")])
    mirrored.mirrors.set_session(SID, Session(dest=NOWHERE, taps=abi.TAP_IN_BEFORE | abi.TAP_IN_AFTER))
    mirrored.mirrors.set_port(PORT, [(SID, abi.TAP_IN_BEFORE | abi.TAP_IN_AFTER)])
    try:
        frames = {
            mac: raw(Ether(src="02:00:00:00:0b:fe", dst=mac) / IP(src="10.0.11.9", dst="10.0.11.1") / UDP())
            for mac in (own, other)
        }
        cases = (
            (frames[other], 0, False, 0, Reason.DST_MAC),
            (frames[own], 0, True, 2, Reason.PASS),  # the positive control: both taps copy it
            (frames[other], abi.MIRROR_MARK | abi.MIRROR_DIR_IN << 8 | SID, True, 0, Reason.PASS),
        )
        for frame, mark, passes, copies, reason in cases:
            before, snap = stats(mirrored), counters.snapshot()
            result = run(mirrored, "port_to_vm", frame, mark=mark)
            assert result.passed is passes, (frame[:6].hex(), hex(mark))
            assert counters.delta(snap) == {(OUT, reason): (1, len(frame))}
            assert stats(mirrored).dropped - before.dropped == copies
    finally:
        mirrored.firewall.set_vnic(PORT, own, 0, False, False, False, [])
