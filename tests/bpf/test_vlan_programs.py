"""vlan_from_port / vlan_to_port on a table of frames x port profiles, through BPF_PROG_TEST_RUN.

Each row configures the port (ifindex 1, the loopback: nothing is attached to it, test-run
only names it), runs one program once on one frame and checks the verdict, skb->cb[0] (the
classified VLAN, written on pass only), the output bytes and the exact counter delta.

Test-run frames carry no skb->vlan_tci, so a pushed tag is invisible in the output bytes (it
is metadata: cb[0] shows it), and a tag to pop is in the bytes (the output must lack it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from dataplane import testrun
from dataplane.abi import CB_VLAN, NO_VLAN, Direction, Reason
from dataplane.switch import PortVlans
from dataplane.syscalls import BpfError
from tests.bpf.conftest import PORT, Counters
from tests.bpf.frames import FRAMES, UNTAGGED_OF

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

SENTINEL = 0xC0FFEE  # cb[0] going in: a drop must leave it, a pass must overwrite it
IN, OUT = Direction.INGRESS, Direction.EGRESS
PROGRAM = {IN: "vlan_from_port", OUT: "vlan_to_port"}

PROFILES: dict[str, PortVlans | None] = {
    "access10-guard": PortVlans(access=10, guard=True),
    "access10": PortVlans(access=10),
    "access4094": PortVlans(access=4094),
    "trunk-untagged": PortVlans(allowed=frozenset({10, 20}), untagged=True),
    "trunk": PortVlans(allowed=frozenset({10, 20}), untagged=False),
    "trunk-guard": PortVlans(allowed=frozenset({10, 20}), untagged=False, guard=True),
    "trunk-bits": PortVlans(allowed=frozenset({1, 63, 64, 4094}), untagged=False),  # bitmap edges
    "plain": PortVlans(),  # a trunk that carries no VLAN, untagged on
    "plain-guard": PortVlans(guard=True),
    "unconfigured": None,  # an all-zero ports entry: must fail closed
}


@dataclass(frozen=True)
class Row:
    profile: str
    direction: Direction
    frame: str
    reason: Reason
    cb: int | None = None  # expected cb[0] on pass
    out: str | None = None  # frame the output must equal on pass (default: unchanged)

    @property
    def id(self) -> str:
        return f"{self.profile}-{'from' if self.direction is IN else 'to'}-{self.frame}-{self.reason.label}"


def P(profile: str, d: Direction, frame: str, cb: int, out: str | None = None) -> Row:
    return Row(profile, d, frame, Reason.PASS, cb, out)


def D(profile: str, d: Direction, frame: str, reason: Reason) -> Row:
    return Row(profile, d, frame, reason)


R = Reason
BOTH = (IN, OUT)
CONTROL = ("stp", "lldp", "lacp", "cdp", "dtp", "pvst")  # every guarded address (frames.py)
DOUBLE = ("ipv4.v10.v20", "ipv4.v10.ad20", "ipv4.ad10", "ipv4.ad100.v10")  # 802.1ad or two tags
CUT = ("cut.v14", "cut.v16", "cut.v17", "cut.ad16")  # ends inside the tag
TRUNK_PASSES = {"ipv4.v10": 10, "ipv4.v20": 20, "ipv4.v10.prio5": 10, "ipv6.v20": 20} | {
    f: NO_VLAN for f in ("ipv4", "arp", "stp")
}

ROWS = [
    # access port, frames from the VM: untagged in, tagged (metadata) into the switch
    *(P("access10-guard", IN, f, 10) for f in ("ipv4", "arp", "ipv6", "eth-only", "gvrp", "cisco-other")),
    *(D("access10-guard", IN, f, R.TAGGED_ON_ACCESS) for f in ("ipv4.v10", "ipv4.v20", "ipv4.v0", "stp.v10")),
    *(D("access10-guard", IN, f, R.QINQ) for f in (*DOUBLE, "cut.v10.v")),
    *(D("access10-guard", IN, f, R.CONTROL_FRAME) for f in CONTROL),
    *(D("access10-guard", IN, f, R.MALFORMED) for f in CUT),
    *(P("access10", IN, f, 10) for f in ("ipv4", *CONTROL)),
    D("access10", IN, "ipv4.v10", R.TAGGED_ON_ACCESS),
    P("access4094", IN, "ipv4", 4094),
    # access port, frames to the VM: only its VLAN, delivered untagged
    *(P("access10-guard", OUT, f, 10, out) for f, out in UNTAGGED_OF.items()),
    *(D("access10-guard", OUT, f, R.VLAN_MISMATCH) for f in ("ipv4", "arp", "stp", "ipv4.v20", "ipv4.v0")),
    *(D("access10-guard", OUT, f, R.QINQ) for f in (*DOUBLE, "cut.v10.v")),
    *(D("access10-guard", OUT, f, R.MALFORMED) for f in CUT),
    P("access4094", OUT, "ipv4.v4094", 4094, "ipv4"),
    D("access4094", OUT, "ipv4.v4095", R.VLAN_MISMATCH),
    # trunk carrying 10, 20 and untagged frames: either way, unchanged
    *(P("trunk-untagged", d, f, vid) for d in BOTH for f, vid in TRUNK_PASSES.items()),
    *(
        D("trunk-untagged", d, f, R.VLAN_NOT_ALLOWED)
        for d in BOTH
        for f in ("ipv4.v30", "ipv4.v0", "ipv4.v4095")
    ),
    *(D("trunk-untagged", d, f, R.QINQ) for d in BOTH for f in DOUBLE),
    *(D("trunk-untagged", d, f, R.MALFORMED) for d in BOTH for f in CUT),
    # trunk without untagged frames
    *(D("trunk", d, f, R.UNTAGGED) for d in BOTH for f in ("ipv4", "arp", "eth-only", "stp")),
    *(P("trunk", d, "ipv4.v10", 10) for d in BOTH),
    *(D("trunk", d, "ipv4.v30", R.VLAN_NOT_ALLOWED) for d in BOTH),
    # a guarded trunk refuses control frames from its device, before any VLAN decision
    *(D("trunk-guard", IN, f, R.CONTROL_FRAME) for f in ("stp", "stp.v10", "lldp.v30", "pvst", "lacp")),
    P("trunk-guard", IN, "ipv4.v20", 20),
    P("trunk-guard", OUT, "stp.v10", 10),  # the guard is for frames from the device only
    D("trunk-guard", OUT, "stp", R.UNTAGGED),
    # the allowed bitmap at word and range edges
    *(P("trunk-bits", IN, f"ipv4.v{vid}", vid) for vid in (1, 63, 64, 4094)),
    *(D("trunk-bits", IN, f"ipv4.v{vid}", R.VLAN_NOT_ALLOWED) for vid in (0, 2, 62, 65, 4095)),
    # a plain port: untagged frames only
    *(P("plain", d, f, NO_VLAN) for d in BOTH for f in ("ipv4", "arp", "ipv6", "stp")),
    *(D("plain", d, f, R.VLAN_NOT_ALLOWED) for d in BOTH for f in ("ipv4.v10", "ipv4.v4094")),
    *(D("plain", d, "ipv4.ad10", R.QINQ) for d in BOTH),
    *(D("plain-guard", IN, f, R.CONTROL_FRAME) for f in ("lldp", "cdp")),
    P("plain-guard", IN, "ipv4", NO_VLAN),
    # fail closed: an all-zero entry drops everything, before looking at the frame
    *(D("unconfigured", d, f, R.NO_PORT) for d in BOTH for f in ("ipv4", "ipv4.v10", "stp", "cut.v14")),
]


def configure(dp: SwitchDataplane, profile: str) -> None:
    vlans = PROFILES[profile]
    if vlans is None:
        dp.unconfigure(PORT)
        assert not any(bytes(dp.port(PORT))), "unconfigure must leave an all-zero entry"
    else:
        dp.configure(PORT, vlans)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_row(dataplane: SwitchDataplane, counters: Counters, row: Row) -> None:
    configure(dataplane, row.profile)
    frame = FRAMES[row.frame]
    before = counters.snapshot()

    result = testrun.run(dataplane.programs[PROGRAM[row.direction]], frame, ifindex=PORT, cb=(SENTINEL,))

    delta = counters.delta(before)
    assert delta == {(row.direction, row.reason): (1, len(frame))}, f"counted {delta}"
    if row.reason is Reason.PASS:
        assert result.retval == testrun.TC_ACT_OK
        assert result.cb[CB_VLAN] == row.cb
        assert result.data == FRAMES[row.out or row.frame]
    else:
        assert result.retval == testrun.TC_ACT_SHOT
        assert result.cb[CB_VLAN] == SENTINEL, "a drop must not classify"


def test_table_covers_every_profile_and_reason() -> None:
    assert {row.profile for row in ROWS} == set(PROFILES)
    never = {Reason.VLAN_HELPER}  # a failing push/pop cannot be provoked from a test-run
    vlan_reasons = {r for r in Reason if r <= Reason.VLAN_HELPER}  # the rest: tests/bpf/test_firewall*.py
    assert {row.reason for row in ROWS} == vlan_reasons - never
    assert len({row.id for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("length", [0, 1, 13])
@pytest.mark.parametrize("direction", [IN, OUT])
def test_runts_are_refused_by_the_kernel(
    dataplane: SwitchDataplane, counters: Counters, direction: Direction, length: int
) -> None:
    """Test-run rejects frames shorter than an Ethernet header (EINVAL) before the program runs,
    so the program's own runt check (MALFORMED) is unreachable here: nothing may be counted."""
    configure(dataplane, "access10-guard")
    before = counters.snapshot()
    with pytest.raises(BpfError) as err:
        testrun.run(dataplane.programs[PROGRAM[direction]], FRAMES["ipv4"][:length], ifindex=PORT)
    assert err.value.errno == 22
    assert counters.delta(before) == {}


def test_tag_in_skb_metadata_is_seen(dataplane: SwitchDataplane, counters: Counters) -> None:
    """The outer tag usually sits in skb->vlan_tci, not in the bytes. Test-run reuses one skb
    across repeats, so a second run sees the tag the first pushed: a tagged frame on an access
    port (TAGGED_ON_ACCESS), judged from the metadata, with the same byte count."""
    configure(dataplane, "access10")
    frame = FRAMES["ipv4"]
    before = counters.snapshot()

    result = testrun.run(dataplane.programs["vlan_from_port"], frame, ifindex=PORT, repeat=2)

    assert result.retval == testrun.TC_ACT_SHOT
    assert counters.delta(before) == {
        (IN, Reason.PASS): (1, len(frame)),
        (IN, Reason.TAGGED_ON_ACCESS): (1, len(frame)),
    }


def test_empty_program_passes_and_counts_nothing(dataplane: SwitchDataplane, counters: Counters) -> None:
    before = counters.snapshot()
    frame = FRAMES["ipv4.v10"]
    result = testrun.run(dataplane.programs["nlab_empty"], frame, ifindex=PORT, cb=(SENTINEL,))
    assert (result.retval, result.data, result.cb[CB_VLAN]) == (testrun.TC_ACT_OK, frame, SENTINEL)
    assert counters.delta(before) == {}
