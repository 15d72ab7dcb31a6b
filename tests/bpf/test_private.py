"""Private copies of a live dataplane (dataplane/private.py), as `nlab trace` uses them.

    live (pinned): programs P, maps A  --save_code-->  code.json
    private_copy:  programs P' (tags of P), maps B = snapshot of A's configuration and state,
                   B's counters, rule hits, mirror statistics and ring buffer empty,
                   B's mirror sessions pointed at no device

A frame run through the copy must decide as the live programs would and leave every trace of
itself in B, none in A.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from dataplane import abi, bpf, fwpolicy, private, syscalls, testrun
from dataplane.events import EventReader
from dataplane.firewall import Settings
from dataplane.mirror import Mirrors, Session
from dataplane.switch import PortVlans, SwitchDataplane
from tests.bench import fwbench
from tests.bpf.conftest import PORT, require_kernel

PIN_ROOT = Path("/sys/fs/bpf/netns-lab")
SID, ANY_DEVICE = 1, 1000  # the live session's destination: never used, nothing runs it live


@pytest.fixture
def live(dataplane: SwitchDataplane, tmp_path: Path) -> Iterator[tuple[Path, Path, SwitchDataplane]]:
    require_kernel()
    pins = PIN_ROOT / f"tpriv{secrets.token_hex(3)}"
    dp = SwitchDataplane.load(pins, like=dataplane)
    try:
        code = tmp_path / "code.json"
        private.save_code(dp, code)
        dp.configure(PORT, PortVlans(access=10, guard=True))
        dp.firewall.set_settings(Settings())
        dp.firewall.set_vnic(
            PORT, fwbench.VM_MAC, fwbench.ENDPOINT, True, False, True, [ip_address(fwbench.VM_IP)]
        )
        dp.firewall.install(fwpolicy.compile(fwbench.policy(3)))
        Mirrors(dp.maps).set_session(SID, Session(dest=ANY_DEVICE, taps=abi.TAP_OUT_BEFORE))
        Mirrors(dp.maps).set_port(PORT, [(SID, abi.TAP_OUT_BEFORE)])
        yield pins, code, dp
    finally:
        dp.close()
        bpf.unpin(pins)


def _marks(dp: SwitchDataplane) -> tuple[object, ...]:
    return (
        dp.counters(PORT),
        dp.firewall.rule_hits(range(4)),
        Mirrors(dp.maps).stats(SID),
        sorted((c.dst, c.dport, c.state) for c in dp.firewall.connections()),
    )


def _events(dp: SwitchDataplane) -> list[abi.FwEvent]:
    with EventReader() as reader:
        reader.add(dp.maps["fw_events"], None)
        return [ev for _, ev in reader.poll(0)]


def test_a_frame_through_the_copy_decides_like_live_and_marks_only_the_copy(live) -> None:
    pins, code, dp = live
    opened = fwbench.tcp_frame(fwbench.peer(1), "S")
    assert testrun.run(dp.programs["port_from_vm"], opened).passed  # a live flow, for the snapshot
    _events(dp)
    before = _marks(dp)

    copy = private.private_copy(pins, code)
    try:
        for name, fd in dp.programs.items():
            assert syscalls.prog_tag(fd) == syscalls.prog_tag(copy.programs[name]), name
        assert _marks(copy)[3] == before[3], "the copy starts with the live connection table"
        assert Mirrors(copy.maps).session(SID).ifindex == private.NO_DEVICE
        result = testrun.run(copy.programs["port_from_vm"], fwbench.tcp_frame(fwbench.peer(2), "S"))
        denied = testrun.run(copy.programs["port_from_vm"], fwbench.tcp_frame("10.200.0.1", "S"))
        copied = Mirrors(copy.maps).stats(SID)
        hits = copy.firewall.rule_hits(range(4))
        flows = {(c.dst, c.rule) for c in copy.firewall.connections()}
        events = [(ev.verdict, ev.rule) for ev in private.events(copy)]
    finally:
        copy.close()

    assert result.passed and not denied.passed
    assert (copied.packets, copied.dropped) == (0, 2), "both copies were tried and none was sent"
    assert (hits[2][0], hits[0][0]) == (1, 1)
    assert flows == {(fwbench.peer(1), 1), (fwbench.peer(2), 2)}
    assert events == [(abi.Verdict.ALLOW, 2), (abi.Verdict.DENY, 0)]
    assert _marks(dp) == before and _events(dp) == [], "the live dataplane saw none of it"
    assert Mirrors(dp.maps).session(SID).ifindex == ANY_DEVICE


def test_instructions_that_are_not_the_live_ones_are_refused(live) -> None:
    pins, code, _ = live
    doc = json.loads(code.read_text())
    doc["code"]["nlab_empty"] = doc["code"]["vlan_to_port"]  # loads fine, but another program
    doc["refs"]["nlab_empty"] = doc["refs"]["vlan_to_port"]
    code.write_text(json.dumps(doc))
    with pytest.raises(private.PrivateCopyError, match="nlab_empty"):
        private.private_copy(pins, code)
