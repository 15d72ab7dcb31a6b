"""A running lab, loaded once: its topology as built (or as last changed), every host's pinned
dataplane, and live changes as transactions.

A change edits the topology data, is validated exactly like a topology file, then installed
host by host by every feature (`features.registry.FEATURES`, in order) beside what is live; only
when every host took it do the features record their state and the topology copy is replaced.
If a host refuses, every host touched so far (the one refusing too: an earlier feature may have
installed its part there) gets the old topology back, so a failed change leaves the lab as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from dataplane.switch import SwitchDataplane
from netns_lab.features.base import HostPlane
from netns_lab.features.registry import FEATURES
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.state import LabState, NotRunning, pin_dir

__all__ = ["HostPlane", "NotRunning", "RunningLab", "opened"]
from netns_lab.topology import loader, machines, names
from netns_lab.topology.model import Topology

log = logging.getLogger(__name__)
T = TypeVar("T")


class RunningLab:
    def __init__(self, lab: str) -> None:
        state = LabState.read(lab)
        text = state.topology_text() if state else None
        if state is None or text is None:
            raise NotRunning(lab)
        self.lab, self.state, self.text = lab, state, text
        self.topo = state.topology(text, state.source or "topology.yaml")
        self.hosts: list[HostPlane] = []
        try:
            for h in self.topo.hosts:
                self.hosts.append(self._open(h.name))
        except BaseException:
            self.close()
            raise
        self._txn: dict[str, Any] = {}

    def _open(self, host: str) -> HostPlane:
        dp = SwitchDataplane.open(pin_dir(self.lab) / host)
        with Netlink(names.namespace(self.lab, host)) as nl:
            ifindexes = {link.name: link.index for link in nl.links()}
        return HostPlane(host, dp, ifindexes)

    def close(self) -> None:
        for h in self.hosts:
            h.dataplane.close()
        self.hosts = []

    def __enter__(self) -> RunningLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def memo(self, key: str, make: Callable[[], T]) -> T:
        """A value computed once per change (e.g. a feature's plan of the old topology)."""
        if key not in self._txn:
            self._txn[key] = make()
        return self._txn[key]

    # -- changes -----------------------------------------------------------------------------
    def change(self, edit: Callable[[dict[str, Any]], None]) -> Topology:
        """Apply `edit` to the topology data, validate, install on every host, then record it.
        Bad input raises the loader's error before anything is touched."""
        return self.apply(*self.prepare(edit))

    def prepare(self, edit: Callable[[dict[str, Any]], None]) -> tuple[Topology, str]:
        """`edit` applied to the topology data and validated, nothing installed: (topology, its
        text) for `apply`. A caller that must change the kernel between the two (a migration
        moves a port) validates first and installs after."""
        data, _ = loader.parse_yaml(self.text, "state")  # the loader's YAML 1.2 reading, not PyYAML's 1.1
        edit(data)
        text = yaml.safe_dump(data, sort_keys=False)
        new = machines.like(loader.load_text(text, f"{self.lab} (live change)", lab=self.lab), self.topo)
        return new, text

    def apply(self, new: Topology, text: str) -> Topology:
        """Install a prepared topology on every host, then record it (all or nothing)."""
        old = self.topo
        self._txn = {}
        touched: list[HostPlane] = []
        try:
            for h in self.hosts:
                touched.append(h)  # before: a host that refuses may have taken part of the change
                self._install(h, old, new)
        except BaseException:
            self._undo(touched, new, old)
            raise
        for feature in FEATURES:
            feature.live_commit(self, new)
        self.state.replace_topology(text)
        self.topo, self.text, self._txn = new, text, {}
        return new

    def _install(self, h: HostPlane, old: Topology, new: Topology) -> None:
        for feature in FEATURES:
            feature.live_install(self, h, old, new)

    def _undo(self, done: list[HostPlane], new: Topology, old: Topology) -> None:
        self._txn = {}
        for h in done:
            try:
                self._install(h, new, old)
            except Exception:  # the original error is the one to report
                log.exception("%s: putting the old topology back on %s failed", self.lab, h.host)
        self._txn = {}


def opened(lab: str) -> RunningLab:
    """The running lab `lab` (NotRunning if it is not up); use it as a context manager."""
    return RunningLab(lab)
