"""Port mirroring of a lab (NIST 5): topology sessions -> per-host sessions in the dataplanes.

Planning is pure: a session's sources (VM names, port groups, security groups) are resolved to
vSwitch ports by name whenever the session is installed, so a session follows a VM. Each
session has one id on every host; ids are kept in the lab's state directory so that a live
change keeps the ids, and thus the counters, of the sessions it does not touch.

A promiscuous NIC (VM-TM-R2) is an implicit session named ``promiscuous:VM.ethN`` whose
sources are the other VM ports of its port group, tapped after the firewall both ways.

``taps`` is the contract `nlab watch` reads: where the copies of a session can be captured.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dataplane import abi
from dataplane.mirror import MIRROR_PORT, Mirrors, Session, Stats
from netns_lab import fwlive, loader, model
from netns_lab.model import MirrorSession, Topology
from netns_lab.state import LabState

IDS_FILE = "mirror-ids.json"
_TAPS = {
    ("out", "before"): abi.TAP_OUT_BEFORE,
    ("out", "after"): abi.TAP_OUT_AFTER,
    ("in", "before"): abi.TAP_IN_BEFORE,
    ("in", "after"): abi.TAP_IN_AFTER,
}


@dataclass(frozen=True)
class Tap:
    session: str
    namespace: str  # full netns name that receives the copies, e.g. "nist-analyzer"
    ifname: str  # the interface inside it, e.g. "eth0"
    sources: tuple[str, ...]  # VM names mirrored by the session
    encapsulated: bool  # True when copies arrive in the mirror encapsulation (physical analyzer)


@dataclass(frozen=True)
class Planned:
    """One session on one host, in port names."""

    name: str
    dest_vm: str
    dest_port: str
    sources: tuple[str, ...]  # vSwitch ports
    source_vms: tuple[str, ...]
    taps: int
    snaplen: int = 0
    sample: int = 1
    promisc_mac: str | None = None


@dataclass(frozen=True)
class HostPlan:
    host: str
    sessions: tuple[Planned, ...] = ()
    analyzers: tuple[str, ...] = ()  # receive-only ports: every NIC of an analyzer VM

    def ports(self, ids: dict[str, int]) -> dict[str, list[tuple[int, int]]]:
        """Source port -> its (session id, taps)."""
        found: dict[str, list[tuple[int, int]]] = {}
        for s in self.sessions:
            for port in s.sources:
                found.setdefault(port, []).append((ids[s.name], s.taps))
        return found


def taps_bits(direction: str, tap: str) -> int:
    directions = ("in", "out") if direction == "both" else (direction,)
    return sum(_TAPS[(d, tap)] for d in directions)


def promiscuous_name(vm: str, nic: int) -> str:
    return f"promiscuous:{vm}.eth{nic}"


def _session(topo: Topology, s: MirrorSession) -> Planned:
    nics = list(dict.fromkeys((vm.name, nic.index) for src in s.sources for vm, nic in topo.mirror_nics(src)))
    dest = topo.vm(s.dest)
    return Planned(
        name=s.name,
        dest_vm=dest.name,
        dest_port=model.vm_port(dest.name, dest.nics[0].index),
        sources=tuple(model.vm_port(vm, index) for vm, index in nics),
        source_vms=tuple(dict.fromkeys(vm for vm, _ in nics)),
        taps=taps_bits(s.direction, s.tap),
        snaplen=s.snaplen,
        sample=s.sample,
    )


def sessions(topo: Topology) -> list[Planned]:
    """Every session of the topology, the promiscuous NICs' included, in a stable order."""
    found = [_session(topo, s) for s in topo.mirrors]
    for vm in topo.vms:
        for nic in (n for n in vm.nics if n.promiscuous):
            group = topo.port_group(vm, nic)
            found.append(
                Planned(
                    name=promiscuous_name(vm.name, nic.index),
                    dest_vm=vm.name,
                    dest_port=model.vm_port(vm.name, nic.index),
                    sources=tuple(model.vm_port(o.name, n.index) for o, n in group),
                    source_vms=tuple(dict.fromkeys(o.name for o, _ in group)),
                    taps=abi.TAP_OUT_AFTER | abi.TAP_IN_AFTER,
                    promisc_mac=nic.mac,
                )
            )
    return found


def plan(topo: Topology) -> dict[str, HostPlan]:
    """Per host: the sessions whose destination is there, and its analyzer ports.

    Validation keeps every source on its destination's host, so a session lives on one host."""
    vm_host = {vm.name: vm.host for vm in topo.vms}
    result = {}
    for host in topo.hosts:
        mine = tuple(s for s in sessions(topo) if vm_host[s.dest_vm] == host.name)
        analyzers = tuple(
            model.vm_port(vm.name, nic.index)
            for vm in topo.vms
            if vm.host == host.name and vm.role == "analyzer"
            for nic in vm.nics
        )
        result[host.name] = HostPlan(host.name, mine, analyzers)
    return result


def assign_ids(names: Iterable[str], previous: dict[str, int]) -> dict[str, int]:
    """Ids of `names`: those of `previous` kept, the lowest free one for each new name."""
    names = list(names)
    ids = {name: previous[name] for name in names if name in previous}
    free = (i for i in range(1, abi.MAX_MIRRORS) if i not in ids.values())
    for name in names:
        if name not in ids:
            ids[name] = next(free)
    return ids


def read_ids(state_dir: Path) -> dict[str, int]:
    try:
        return {str(k): int(v) for k, v in json.loads((state_dir / IDS_FILE).read_text()).items()}
    except FileNotFoundError:
        return {}


def write_ids(state_dir: Path, ids: dict[str, int]) -> None:
    tmp = state_dir / (IDS_FILE + ".tmp")
    tmp.write_text(json.dumps(ids, indent=2, sort_keys=True))
    tmp.replace(state_dir / IDS_FILE)


def install(
    mirrors: Mirrors,
    new: HostPlan,
    ids: dict[str, int],
    ifindex: Callable[[str], int],
    old: HostPlan | None = None,
    old_ids: dict[str, int] | None = None,
) -> None:
    """Write `new` over `old` on one host: sessions first, then ports, then stale sessions cleared."""
    via = ifindex(MIRROR_PORT[0])
    for s in new.sessions:
        session = Session(ifindex(s.dest_port), s.taps, s.snaplen, s.sample, s.promisc_mac, via)
        if old is None or ids[s.name] not in {(old_ids or {}).get(o.name) for o in old.sessions}:
            mirrors.clear_session(ids[s.name])  # new id: fresh counters
        mirrors.set_session(ids[s.name], session)
    ports = new.ports(ids)
    stale_ports = set(old.ports(old_ids or {})) | set(old.analyzers) if old else set()
    for port in sorted(set(ports) | set(new.analyzers) | stale_ports):
        if port in ports or port in new.analyzers:
            mirrors.set_port(ifindex(port), ports.get(port, []), analyzer=port in new.analyzers)
        else:
            mirrors.clear_port(ifindex(port))
    live = {ids[s.name] for s in new.sessions}
    for s in old.sessions if old else ():
        sid = (old_ids or {})[s.name]
        if sid not in live:
            mirrors.clear_session(sid)


# -- a running lab -----------------------------------------------------------------------------
class LiveMirrors(fwlive.LiveFirewall):
    """The mirror sessions of a running lab: changes go through the lab's topology, validated
    like a file, installed on every host, then recorded (`LiveFirewall.change`)."""

    def __init__(self, lab: str) -> None:
        super().__init__(lab)
        self.ids = read_ids(self.state.dir)  # type: ignore[union-attr]
        self._new_ids = self.ids

    def change(self, edit: Callable[[dict[str, Any]], None]) -> Topology:
        self._plans_old = plan(self.topo)
        new_topo = self._validated(edit)
        self._new_ids = assign_ids((s.name for s in sessions(new_topo)), self.ids)
        result = super().change(edit)
        write_ids(self.state.dir, self._new_ids)  # type: ignore[union-attr]
        self.ids = self._new_ids
        return result

    def _validated(self, edit: Callable[[dict[str, Any]], None]) -> Topology:
        data, _ = loader.parse_yaml(self.text, "state")
        edit(data)
        return loader.load_text(
            yaml.safe_dump(data, sort_keys=False), f"{self.lab} (live mirror)", lab=self.lab
        )

    def _install(self, h: fwlive.HostPlane, old: Topology, new: Topology) -> None:
        install(
            h.dataplane.mirrors,
            plan(new)[h.host],
            self._new_ids,
            lambda name: h.ifindexes[name],
            old=self._plans_old[h.host],
            old_ids=self.ids,
        )

    def stats(self) -> dict[str, Stats]:
        total: dict[str, Stats] = {}
        for h in self.hosts:
            for s in plan(self.topo)[h.host].sessions:
                total[s.name] = total.get(s.name, Stats()) + h.dataplane.mirrors.stats(self.ids[s.name])
        return total


def opened(lab: str) -> LiveMirrors:
    return LiveMirrors(lab)


def _running_topology(lab: str) -> Topology:
    state = LabState.read(lab)
    text = state.topology_text() if state else None
    if state is None or text is None:
        raise fwlive.NotRunning(lab)
    return loader.load_text(text, state.source or "topology.yaml", lab=lab)


def taps(lab: str, session: str | None = None) -> list[Tap]:
    """Where the copies of `session` (all sessions: None) of a running lab can be captured."""
    topo = _running_topology(lab)
    planned = sessions(topo)
    if session is not None:
        planned = [s for s in planned if s.name == session]
        if not planned:
            raise KeyError(session)
    result = []
    for s in planned:
        vm = topo.vm(s.dest_vm)
        index = int(s.dest_port.rsplit("-", 1)[1])
        nic = next(n for n in vm.nics if n.index == index)
        result.append(Tap(s.name, model.namespace(lab, vm.name), nic.name, s.source_vms, False))
    return result
