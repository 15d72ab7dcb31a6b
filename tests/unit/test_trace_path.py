"""The path `nlab trace` works out from a topology (no kernel): next hops and the ports of a leg."""

from __future__ import annotations

from pathlib import Path

import pytest

from netns_lab.observe.trace import Target, TraceError, leg, next_hop
from netns_lab.topology import loader

REFERENCE = Path(__file__).resolve().parents[2] / "labs" / "nist-800-125b.yaml"
TOPO = loader.load(REFERENCE)


def _to(vm: str, nic: int) -> Target:
    target = TOPO.vm(vm)
    return Target(vm, target.nics[nic].mac, vm=target, nic=target.nics[nic])


def _ports(src: str, nic: int, target: Target) -> list[tuple[str, str, str, int | None]]:
    vm = TOPO.vm(src)
    return [(s.node, s.port, s.program, s.vlan) for s in leg(TOPO, vm, vm.nics[nic], target)]


@pytest.mark.parametrize(
    ("vm", "dst", "nic", "hop"),
    [
        ("app2", "10.40.0.31", "eth1", "10.40.0.31"),  # on a connected network
        ("web1", "10.30.0.21", "eth0", "10.20.0.254"),  # a route via vm4
        ("web1", "203.0.113.9", "eth0", "10.20.0.1"),  # the default gateway, vm1
        ("vm4", "10.20.0.11", "eth0", "10.20.0.11"),
    ],
)
def test_next_hop(vm: str, dst: str, nic: str, hop: str) -> None:
    out, via = next_hop(TOPO, TOPO.vm(vm), dst)
    assert (out.name, via) == (nic, hop)


def test_no_route_is_a_trace_error() -> None:
    with pytest.raises(TraceError, match=r"db1 has no route to 10\.20\.0\.11"):
        next_hop(TOPO, TOPO.vm("db1"), "10.20.0.11")


def test_a_leg_across_hosts_crosses_both_uplinks_and_the_switch_tagged() -> None:
    assert _ports("app2", 1, _to("db1", 0)) == [
        ("hv3", "app2-1", "port_from_vm", None),
        ("hv3", "eth1", "vlan_to_port", 130),
        ("tor2", "hv3-eth1", "vlan_from_port", 130),
        ("tor2", "hv2-eth1", "vlan_to_port", 130),
        ("hv2", "eth1", "vlan_from_port", 130),
        ("hv2", "db1-0", "port_to_vm", 130),
    ]


def test_a_leg_on_one_vswitch_stays_in_the_host() -> None:
    assert _ports("web1", 0, _to("vm4", 0)) == [
        ("hv1", "web1-0", "port_from_vm", None),
        ("hv1", "vm4-0", "port_to_vm", 110),
    ]


def test_internal_only_vswitches_have_no_leg_out() -> None:
    """hv2's sandbox and prod share no uplink path (NIST 2.2); web1's vs2 has no uplink at all."""
    with pytest.raises(TraceError, match="sandbox is internal-only"):
        leg(TOPO, TOPO.vm("sandbox1"), TOPO.vm("sandbox1").nics[0], _to("app1", 0))
    with pytest.raises(TraceError, match="vs2 is internal-only"):
        leg(TOPO, TOPO.vm("web1"), TOPO.vm("web1").nics[0], _to("app1", 0))


def test_no_route_is_the_answer_unreachable_not_bad_input() -> None:
    doc = trace("db1", "10.20.0.11")
    assert (doc["outcome"], doc["delivered"], doc["stages"]) == ("unreachable", False, [])
    assert doc["why"] == "db1 has no route to 10.20.0.11"
    with pytest.raises(TraceError, match="no VM 'nosuch'"):
        trace("nosuch", "10.20.0.11")
    with pytest.raises(TraceError, match="not an IP address"):
        trace("db1", "db2")


def trace(vm: str, dst: str) -> dict:
    from netns_lab.observe import trace as tracing

    return tracing.trace(TOPO, vm, dst, "tcp", 80)
