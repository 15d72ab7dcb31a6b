"""The overlay feature's decisions without a kernel: which ports the VLAN plan gives policies to,
what each VTEP's guard admits, what a live change may do, what the build refuses, and that a lab
without segments costs nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from netns_lab.features.base import HostPlane
from netns_lab.features.overlay import FEATURE, install
from netns_lab.features.vlan import plan as vlan_plan
from netns_lab.topology.loader import load, load_text
from netns_lab.topology.model import Topology

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "labs" / "overlay.yaml"
REFERENCE = ROOT / "labs" / "nist-800-125b.yaml"


def moded(mode: str) -> Topology:
    text = OVERLAY.read_text().replace("\n  mode: controller\n", f"\n  mode: {mode}\n")
    return load_text(text, "overlay.yaml")


class Untouchable:
    """A build or live context that fails the test on any use but `topo` (and `lab`)."""

    def __init__(self, topo: Topology) -> None:
        self.topo, self.lab = topo, topo.lab

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a lab without segments used {name}")


def test_a_lab_without_segments_costs_nothing() -> None:
    topo = load(REFERENCE)
    b = Untouchable(topo)
    for host in topo.hosts:
        FEATURE.host_wired(b, host)  # type: ignore[arg-type]
    FEATURE.lab_built(b)  # type: ignore[arg-type]
    plane = HostPlane(topo.hosts[0].name, None, {})  # type: ignore[arg-type]
    FEATURE.live_install(b, plane, topo, topo)  # type: ignore[arg-type]
    FEATURE.live_commit(b, topo)  # type: ignore[arg-type]


def test_every_vxlan_device_and_router_port_has_a_vlan_policy() -> None:
    topo = load(OVERLAY)
    policies = vlan_plan.port_vlans(topo)
    assert {p for p in policies["hv2"] if p.startswith("vx-")} == {"vx-10010", "vx-10020"}
    assert policies["hv3"]["vx-20010"].untagged and not policies["hv3"]["vx-20010"].allowed
    assert policies["tor1"]["spine-eth0"].untagged and policies["tor2"]["spine-eth1"].guard
    roles = {p.name: (p.role, p.owner) for p in vlan_plan.switch_ports(topo, "tor2")}
    assert roles["spine-eth1"] == ("router", "spine.eth1")


def test_a_vtep_admits_the_vteps_it_shares_a_segment_with() -> None:
    topo = load(OVERLAY)
    assert install.peers(topo, "hv1") == ["10.255.1.12", "10.255.2.13"]  # blue-web, red-web
    assert install.peers(topo, "hv3") == ["10.255.1.11", "10.255.1.12"]
    assert [p.name for p in install.routed_pnics(topo, "hv1")] == ["eth0"]  # eth1 is an uplink


def test_the_plan_of_each_mode() -> None:
    controller, flood, evpn = (moded(m) for m in ("controller", "flood", "evpn"))
    assert install.needs_controller(controller) and not install.needs_controller(flood)
    assert not install.plan_of(evpn).hosts and install.evpn_plan(evpn).hosts  # BGP's tables
    hv1 = {s.vni: s.flood for s in install.evpn_plan(evpn).host("hv1").segments}
    assert hv1 == {10010: ("10.255.1.12", "10.255.2.13"), 20010: ("10.255.2.13",)}
    assert install.evpn_hosts(evpn) == {h: evpn.vtep_ip(h) for h in ("hv1", "hv2", "hv3")}
    assert install.evpn_hosts(controller) == {}


def test_a_host_mixing_evpn_with_another_mode_is_refused() -> None:
    topo = moded("evpn")
    red = dataclasses.replace(topo.segment("red-web"), mode="controller")
    mixed = dataclasses.replace(
        topo, segments=tuple(red if s.name == "red-web" else s for s in topo.segments)
    )
    assert install.evpn_refusal(topo) is None
    path, reason = install.evpn_refusal(mixed) or ("", "")
    assert path == "hosts.hv1" and "red-web" in reason


def test_a_live_change_of_a_hosts_segments_is_refused() -> None:
    topo = load(OVERLAY)
    gone = dataclasses.replace(topo, vms=tuple(vm for vm in topo.vms if vm.name != "rweb1"))
    lab = Untouchable(topo)
    plane = HostPlane("hv1", None, {})  # type: ignore[arg-type]
    FEATURE.live_install(lab, plane, topo, topo)  # type: ignore[arg-type]
    FEATURE.live_install(lab, HostPlane("hv2", None, {}), topo, gone)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="hv1: the overlay segments or VTEP"):
        FEATURE.live_install(lab, plane, topo, gone)  # type: ignore[arg-type]
