"""Properties of the VLAN programs on random frames and random port profiles (hypothesis).

Whatever the bytes, a frame crosses a port only in a VLAN the port carries: an access port
takes untagged frames and classifies them into its VLAN, and delivers only its VLAN, untagged;
a trunk carries its allowed VLANs, and untagged frames only when it says so. Every run counts
exactly one verdict, and that verdict is the one a small Python model of the policy (`model`,
written from the specification, not from the C) predicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataplane import testrun
from dataplane.abi import CB_VLAN, NO_VLAN, Direction, Reason
from dataplane.switch import PortVlans
from dataplane.syscalls import BpfError
from tests.bpf.conftest import PORT, Counters
from tests.bpf.frames import BROADCAST, CISCO_MAC, LACP_MAC, LLDP_MAC, PEER, PVST_MAC, STP_MAC

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

VLAN_TPIDS = (0x8100, 0x88A8)
SENTINEL = 0xC0FFEE
GUARDED = [bytes.fromhex(mac.replace(":", "")) for mac in (STP_MAC, LACP_MAC, LLDP_MAC, CISCO_MAC, PVST_MAC)]
IEEE_GROUP = bytes.fromhex("0180c20000")  # 01:80:c2:00:00:00..0f: reserved, never forwarded
INTERESTING_VIDS = [0, 1, 10, 20, 63, 64, 4094, 4095]

vids = st.sampled_from(INTERESTING_VIDS) | st.integers(0, 4095)
port_vids = st.sampled_from([1, 10, 20, 63, 64, 4094]) | st.integers(1, 4094)
ORDINARY = [bytes.fromhex(mac.replace(":", "")) for mac in (PEER, BROADCAST)]
macs = st.sampled_from(GUARDED + ORDINARY) | st.integers(0, 0x3F).map(lambda last: IEEE_GROUP + bytes([last]))
tags = st.tuples(st.sampled_from(VLAN_TPIDS), vids, st.integers(0, 7))  # (TPID, VID, PCP)
ethertypes = st.sampled_from([*VLAN_TPIDS, 0x9100, 0x0806, 0x88B5, 0x88CC, 0x0026]) | st.integers(0, 0xFFFF)


@st.composite
def stacked_frames(draw: st.DrawFn) -> bytes:
    """MACs, 0-3 VLAN tags of either TPID, an ethertype and a payload; maybe cut short."""
    dst = draw(macs | st.binary(min_size=6, max_size=6))
    header = dst + draw(st.binary(min_size=6, max_size=6))
    for tpid, vid, pcp in draw(st.lists(tags, max_size=3)):
        header += tpid.to_bytes(2, "big") + (pcp << 13 | vid).to_bytes(2, "big")
    frame = header + draw(ethertypes).to_bytes(2, "big") + draw(st.binary(max_size=64))
    return frame[: draw(st.integers(14, len(frame)))] if draw(st.booleans()) else frame


frames = stacked_frames() | st.binary(min_size=14, max_size=128)
profiles = st.builds(PortVlans, access=port_vids, guard=st.booleans()) | st.builds(
    PortVlans,
    access=st.none(),
    allowed=st.frozensets(port_vids, max_size=6),
    untagged=st.booleans(),
    guard=st.booleans(),
)


@dataclass(frozen=True)
class Outer:
    """The oracle's reading of a frame: its outer tag (if any), and whether a second follows."""

    tpid: int | None
    vid: int | None
    inner_is_tag: bool

    @classmethod
    def of(cls, frame: bytes) -> Outer:
        tpid = int.from_bytes(frame[12:14], "big")
        if tpid not in VLAN_TPIDS:
            return cls(None, None, False)
        if len(frame) < 18:
            return cls(tpid, None, False)
        inner = int.from_bytes(frame[16:18], "big")
        return cls(tpid, int.from_bytes(frame[14:16], "big") & 0x0FFF, inner in VLAN_TPIDS)

    @property
    def single_8021q(self) -> bool:
        return self.tpid == 0x8100 and self.vid is not None and not self.inner_is_tag


def is_control(frame: bytes) -> bool:
    dst = frame[:6]
    return (dst[:5] == IEEE_GROUP and dst[5] < 0x10) or dst in GUARDED


def model(vlans: PortVlans, direction: Direction, frame: bytes) -> tuple[Reason, int | None]:
    """The verdict and classified VLAN the policy prescribes (abi.h's reasons, in order)."""
    outer = Outer.of(frame)
    guarded = vlans.guard and direction is Direction.INGRESS and is_control(frame)
    if outer.tpid is not None and outer.vid is None:
        return Reason.MALFORMED, None
    if outer.tpid == 0x88A8 or outer.inner_is_tag:
        return Reason.QINQ, None
    if vlans.access is not None and direction is Direction.INGRESS:
        if outer.tpid is not None:
            return Reason.TAGGED_ON_ACCESS, None
        return (Reason.CONTROL_FRAME, None) if guarded else (Reason.PASS, vlans.access)
    if vlans.access is not None:
        return (Reason.PASS, outer.vid) if outer.vid == vlans.access else (Reason.VLAN_MISMATCH, None)
    if guarded:
        return Reason.CONTROL_FRAME, None
    if outer.tpid is None:
        return (Reason.PASS, NO_VLAN) if vlans.untagged else (Reason.UNTAGGED, None)
    return (Reason.PASS, outer.vid) if outer.vid in vlans.allowed else (Reason.VLAN_NOT_ALLOWED, None)


def check_pass(vlans: PortVlans, direction: Direction, frame: bytes, result: testrun.Result) -> None:
    outer, cb = Outer.of(frame), result.cb[CB_VLAN]
    if vlans.access is not None and direction is Direction.INGRESS:
        assert outer.tpid is None, "an access port took a tagged frame"
        assert cb == vlans.access, "a frame from an access port must be classified into its VLAN"
        if vlans.guard:
            assert not is_control(frame), "a guarded port let a control frame in"
        assert result.data == frame
    elif vlans.access is not None:
        assert outer.single_8021q and outer.vid == vlans.access, "an access port got another VLAN"
        assert cb == vlans.access
        assert int.from_bytes(result.data[12:14], "big") not in VLAN_TPIDS, "delivered tagged to access"
        assert result.data == frame[:12] + frame[16:]
    else:
        if outer.tpid is None:
            assert vlans.untagged and cb == NO_VLAN, "untagged frame on a trunk that carries none"
        else:
            assert outer.single_8021q and outer.vid in vlans.allowed and cb == outer.vid, "VLAN not carried"
        if vlans.guard and direction is Direction.INGRESS:
            assert not is_control(frame), "a guarded port let a control frame in"
        assert result.data == frame


@pytest.mark.parametrize("direction", list(Direction), ids=lambda d: d.name.lower())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vlans=profiles, frame=frames)
def test_only_carried_vlans_cross(
    dataplane: SwitchDataplane, direction: Direction, vlans: PortVlans, frame: bytes
) -> None:
    dataplane.configure(PORT, vlans)
    counters = Counters(dataplane)
    before = counters.snapshot()
    program = dataplane.programs["vlan_from_port" if direction is Direction.INGRESS else "vlan_to_port"]
    try:
        result = testrun.run(program, frame, ifindex=PORT, cb=(SENTINEL,))
    except BpfError as err:
        # test-run refuses an IPv4/IPv6 frame whose network header does not fit, before the
        # program runs; nothing may have been counted
        assert err.errno == 22 and frame[12:14] in (b"\x08\x00", b"\x86\xdd")
        assert counters.delta(before) == {}
        return

    delta = counters.delta(before)
    assert len(delta) == 1 and next(iter(delta.values())) == (1, len(frame)), f"counted {delta}"
    ((counted_direction, reason),) = delta
    assert counted_direction == direction
    assert result.retval in (testrun.TC_ACT_OK, testrun.TC_ACT_SHOT)
    assert (reason == Reason.PASS) == result.passed
    if result.passed:
        check_pass(vlans, direction, frame, result)
    else:
        assert result.cb[CB_VLAN] == SENTINEL
    assert (reason, result.cb[CB_VLAN] if result.passed else None) == model(vlans, direction, frame)
