"""The contract every feature package fulfils, and the two contexts it is handed.

The builder (`netns_lab.lab.builder`) and a live change (`netns_lab.lab.running`) never switch
on a feature: they call these hooks on every feature of `registry.FEATURES`, in that order.
Every hook has a default that does nothing, so a feature implements only the moments it needs.

Build-time moments, per switching node:
    host_loaded   the host's dataplane is loaded, no port exists yet (policies, lab processes)
    host_wired    the host's own ports exist (pNICs, vSwitches, VMkernel NICs), no VM yet
    port          a port exists and is configured before its programs attach (fail closed)
    host_built    the host and all its VMs exist (what refers to many ports at once)
    lab_built     every node exists (lab-wide processes)
Live moments, one transaction per change:
    live_install  the new topology onto one host's loaded dataplane (the old one still in place)
    live_commit   every host took it: record what the feature keeps in the lab's state
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import contextlib

    from dataplane.firewall import Firewall
    from dataplane.switch import SwitchDataplane
    from netns_lab.kernel.netlink import Netlink
    from netns_lab.lab.state import LabState
    from netns_lab.topology.model import Host, Nic, Topology, Vm

T = TypeVar("T")


class BuildContext(Protocol):
    """What the builder lends a feature while a lab is built."""

    topo: Topology
    state: LabState
    undo: contextlib.ExitStack  # register the undo of whatever the hook creates

    def ns(self, node: str) -> str: ...
    def sock(self, node: str) -> Netlink: ...
    def dataplane(self, node: str) -> SwitchDataplane | None: ...  # None: built without dataplanes
    def vnic(self, node: str, ifname: str) -> tuple[Vm, Nic] | None: ...  # the VM NIC behind a port
    def memo(self, key: str, make: Callable[[], T]) -> T: ...  # computed once per build
    def attach(self, node: str, ifname: str) -> None: ...  # a port the feature made: hooks, programs


@dataclass
class HostPlane:
    """One host of a running lab: its pinned dataplane, opened, and its ports' ifindexes."""

    host: str
    dataplane: SwitchDataplane
    ifindexes: dict[str, int]  # interface name -> ifindex in the host namespace

    @property
    def fw(self) -> Firewall:
        return self.dataplane.firewall


class LiveContext(Protocol):
    """What a running lab (`netns_lab.lab.running.RunningLab`) lends a feature during a change."""

    lab: str
    topo: Topology  # the topology live until the change is recorded
    hosts: list[HostPlane]

    def memo(self, key: str, make: Callable[[], T]) -> T: ...  # computed once per change


class Feature:
    name = ""
    requires: tuple[str, ...] = ()  # features that must come before this one in the registry

    # -- build time ------------------------------------------------------------------------
    def host_loaded(self, b: BuildContext, host: Host) -> None:
        pass

    def host_wired(self, b: BuildContext, host: Host) -> None:
        pass

    def port(self, b: BuildContext, node: str, ifindex: int, ifname: str) -> None:
        pass

    def host_built(self, b: BuildContext, host: Host) -> None:
        pass

    def lab_built(self, b: BuildContext) -> None:
        pass

    # -- a running lab ---------------------------------------------------------------------
    def live_install(self, lab: LiveContext, host: HostPlane, old: Topology, new: Topology) -> None:
        pass

    def live_commit(self, lab: LiveContext, new: Topology) -> None:
        pass

    # -- checks ----------------------------------------------------------------------------
    def checks(self, topo: Topology) -> list[dict[str, Any]]:
        """Static checks of the recommendations this feature realises:
        ``{"id", "status": "met" | "not met" | "not applicable", "reason", "objects"}``."""
        return []
