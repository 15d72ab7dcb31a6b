"""Dataplanes made from one compile (`SwitchDataplane.load(like=...)`): the same programs, maps
of their own. `nlab up` compiles each kind once and gives every other switching namespace such an
instance, so an instance must decide exactly as a compiled one and share no state with it.

    compile ──> template (programs, maps A)
           └──> instance (same instructions, map fds replaced: maps B)
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from dataplane import fwpolicy, testrun
from dataplane.firewall import Settings
from dataplane.switch import ON_DEMAND, PortVlans, SwitchDataplane
from tests.bench import fwbench
from tests.bpf.conftest import PORT, require_kernel
from tests.bpf.fwtools import reset


@pytest.fixture(scope="module")
def pair(dataplane: SwitchDataplane) -> Iterator[tuple[SwitchDataplane, SwitchDataplane]]:
    require_kernel()
    instance = SwitchDataplane.load(like=dataplane)
    try:
        yield dataplane, instance
    finally:
        instance.close()
        reset(dataplane)  # the session's dataplane goes on to other modules as it came
        dataplane.unconfigure(PORT)


def _configure(dp: SwitchDataplane) -> None:
    dp.configure(PORT, PortVlans(access=10, guard=True))
    dp.firewall.set_settings(Settings())
    dp.firewall.set_vnic(
        PORT, fwbench.VM_MAC, fwbench.ENDPOINT, True, False, True, [ip_address(fwbench.VM_IP)]
    )
    dp.firewall.install(fwpolicy.compile(fwbench.policy(3)))


def test_instance_has_programs_and_maps_of_its_own(pair: tuple[SwitchDataplane, SwitchDataplane]) -> None:
    template, instance = pair
    assert set(instance.programs) == set(template.programs) - set(ON_DEMAND)  # those load where used
    assert set(instance.maps) == set(template.maps)
    assert not set(instance.programs.values()) & set(template.programs.values())
    assert not set(instance.maps.values()) & set(template.maps.values())


def test_instance_decides_like_a_compiled_dataplane_and_shares_no_state(
    pair: tuple[SwitchDataplane, SwitchDataplane],
) -> None:
    template, instance = pair
    template.unconfigure(PORT)
    _configure(instance)
    syn = fwbench.tcp_frame(fwbench.peer(2), "S")
    denied = fwbench.tcp_frame("10.200.0.1", "S")
    conns_before = len(list(template.firewall.connections()))

    assert testrun.run(instance.programs["port_from_vm"], syn).passed  # rule 2 opens the flow
    assert not testrun.run(instance.programs["port_from_vm"], denied).passed  # default deny
    assert not testrun.run(template.programs["port_from_vm"], syn).passed, (
        "the template's port is not configured"
    )
    [conn] = instance.firewall.connections()
    assert (conn.dst, conn.rule) == (fwbench.peer(2), 2)
    assert len(list(template.firewall.connections())) == conns_before
    assert instance.firewall.rule_hits([2])[2][0] == 1

    _configure(template)  # the same policy compiled into the template's own maps: same verdicts
    allowed = fwbench.tcp_frame(fwbench.peer(3), "S")  # a new flow in both: rule 3 must open it
    hits = (template.firewall.rule_hits([3])[3][0], instance.firewall.rule_hits([3])[3][0])
    for frame, passes in ((allowed, True), (denied, False)):
        results = [testrun.run(dp.programs["port_from_vm"], frame) for dp in (template, instance)]
        assert [r.passed for r in results] == [passes, passes], frame.hex()
        assert results[0].data == results[1].data
    assert (template.firewall.rule_hits([3])[3][0], instance.firewall.rule_hits([3])[3][0]) == (
        hits[0] + 1,
        hits[1] + 1,
    )


def test_like_must_be_of_the_same_kind(dataplane: SwitchDataplane) -> None:
    require_kernel()
    with pytest.raises(ValueError, match="same kind"):
        SwitchDataplane.load(vm_ports=False, like=dataplane)
