"""Port mirroring of a lab (NIST 5), planned (pure): topology sessions -> per-host sessions.

A session's sources (VM names, port groups, security groups) are resolved to vSwitch ports by
name whenever the session is installed, so a session follows a VM.

A promiscuous NIC (VM-TM-R2) is an implicit session named ``promiscuous:VM.ethN`` whose
sources are the other VM ports of its port group, tapped after the firewall both ways.

``Tap`` is the contract `nlab watch` reads (see live.taps): where a session's copies arrive.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from dataclasses import dataclass

from dataplane.abi import mirror as abi
from netns_lab import encoding
from netns_lab.topology import names
from netns_lab.topology.model import MirrorSession, MirrorSource, Topology

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
    marked: bool = False  # the destination's vSwitch port: each copy's mark names its session


@dataclass(frozen=True)
class Planned:
    """One session as one host holds it, in port names."""

    name: str
    dest_vm: str | None  # the analyzer VM (None: an uplink destination)
    dest_port: str | None  # this host's port copies go to: the analyzer's, or the pNIC out
    sources: tuple[str, ...]  # this host's source ports (vSwitch ports)
    source_vms: tuple[str, ...]  # every VM of the session, on any host
    taps: int
    snaplen: int = 0
    sample: int = 1
    promisc_mac: str | None = None
    encap: bool = False  # copies leave encapsulated through pNIC dest_port
    rx: bool = False  # encapsulated copies from other hosts arrive for dest_port
    vlan: int = 0
    outer_dst: str | None = None
    outer_src: str | None = None


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


def endpoint_mac(lab: str, endpoint: str) -> str:
    """The MAC of a mirror endpoint (a host, an uplink destination): never a VM's (no ':' in a VM)."""
    return names.default_mac(lab, f"mirror:{endpoint}", 0)


@dataclass(frozen=True)
class _Session:
    """A session before it is split per host: source ports by host."""

    name: str
    dest_vm: str | None
    dest_host: str | None
    dest_port: str | None
    sources: dict[str, list[str]]
    source_vms: tuple[str, ...]
    taps: int
    snaplen: int = 0
    sample: int = 1
    promisc_mac: str | None = None
    decl: MirrorSession | None = None


def _declared(topo: Topology, s: MirrorSession) -> _Session:
    nics = list(dict.fromkeys((vm, nic.index) for src in s.sources for vm, nic in topo.mirror_nics(src)))
    by_host: dict[str, list[str]] = {}
    for vm, index in nics:
        by_host.setdefault(vm.host, []).append(names.vm_port(vm.name, index))
    dest = topo.vm(s.dest) if s.dest is not None else None
    return _Session(
        name=s.name,
        dest_vm=dest.name if dest else None,
        dest_host=dest.host if dest else None,
        dest_port=names.vm_port(dest.name, dest.nics[0].index) if dest else None,
        sources=by_host,
        source_vms=tuple(dict.fromkeys(vm.name for vm, _ in nics)),
        taps=taps_bits(s.direction, s.tap),
        snaplen=s.snaplen,
        sample=s.sample,
        decl=s,
    )


def _all(topo: Topology) -> list[_Session]:
    found = [_declared(topo, s) for s in topo.mirrors]
    for vm in topo.vms:
        for nic in (n for n in vm.nics if n.promiscuous):
            group = topo.port_group(vm, nic)
            found.append(
                _Session(
                    name=promiscuous_name(vm.name, nic.index),
                    dest_vm=vm.name,
                    dest_host=vm.host,
                    dest_port=names.vm_port(vm.name, nic.index),
                    sources={vm.host: [names.vm_port(o.name, n.index) for o, n in group]} if group else {},
                    source_vms=tuple(dict.fromkeys(o.name for o, _ in group)),
                    taps=abi.TAP_OUT_AFTER | abi.TAP_IN_AFTER,
                    promisc_mac=nic.mac,
                )
            )
    return found


def sessions(topo: Topology) -> list[Planned]:
    """Every session of the topology (the promiscuous NICs' included), as its analyzer's host
    (or, for an uplink destination, its first source host) holds it; in a stable order."""
    plans = plan(topo)
    found = []
    for s in _all(topo):
        host = s.dest_host or min(s.sources, default=None)
        held = [p for p in plans[host].sessions if p.name == s.name] if host in plans else []
        found += held[:1] or [
            Planned(s.name, s.dest_vm, s.dest_port, (), s.source_vms, s.taps, s.snaplen, s.sample)
        ]
    return found


def _on_host(topo: Topology, s: _Session, host: str) -> Planned | None:
    local = tuple(s.sources.get(host, ()))
    common = {
        "name": s.name,
        "dest_vm": s.dest_vm,
        "source_vms": s.source_vms,
        "taps": s.taps,
        "snaplen": s.snaplen,
        "sample": s.sample,
        "promisc_mac": s.promisc_mac,
    }
    route = topo.mirror_path(s.decl) if s.decl is not None else None
    vlan = s.decl.vlan if s.decl is not None and s.decl.vlan is not None else 0
    if host == s.dest_host:
        remote = bool(route and route.out)
        if not local and not remote:
            return None
        own = endpoint_mac(topo.lab, host)
        return Planned(**common, dest_port=s.dest_port, sources=local, rx=remote, vlan=vlan, outer_dst=own)
    if not local or route is None:
        return None
    pnic = dict(route.out).get(host)
    if pnic is None:
        return None
    if route.into is not None:
        far = endpoint_mac(topo.lab, route.into[0])
    else:
        far = endpoint_mac(topo.lab, s.decl.uplink if s.decl and s.decl.uplink else host)
    return Planned(
        **common,
        dest_port=pnic,
        sources=local,
        encap=True,
        vlan=vlan,
        outer_dst=far,
        outer_src=endpoint_mac(topo.lab, host),
    )


def plan(topo: Topology) -> dict[str, HostPlan]:
    """Per host: its part of every session, and its analyzer ports."""
    everything = _all(topo)
    result = {}
    for host in topo.hosts:
        mine = tuple(p for s in everything if (p := _on_host(topo, s, host.name)) is not None)
        analyzers = tuple(
            names.vm_port(vm.name, nic.index)
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


def source_text(source: MirrorSource) -> str:
    """A session's source as the topology declares it: ``app1``, ``app1.eth0``, ``group:web``,
    ``vlan:app`` or ``vlan:app@hv1.vs1`` (a port group on one vSwitch)."""
    if source.kind == "vm":
        return source.name if source.nic is None else encoding.nic_name(source.name, source.nic)
    if source.kind == "group":
        return f"group:{source.name}"
    return f"vlan:{source.name}" + (f"@{'.'.join(source.vswitch)}" if source.vswitch else "")


def _promiscuous_sources(topo: Topology, name: str) -> list[str]:
    """The port group of a promiscuous NIC, in the words of a declared one."""
    vm_name, _, nic_name = name.removeprefix("promiscuous:").partition(".")
    vm = topo.vm(vm_name)
    nic = next(n for n in vm.nics if n.name == nic_name)
    return [
        source_text(
            MirrorSource("vlan", topo.vlan_name(nic.vlan) or "untagged", vswitch=(vm.host, nic.vswitch))
        )
    ]


def decapsulate(frame: bytes) -> tuple[int, str, bytes] | None:
    """(session id, direction "in"/"out", the copy as the VM sent or received it) of a frame in
    the mirror encapsulation (untagged, as the analyzer on the physical network receives it);
    None for any other frame. See ebpf/include/abi/mirror.h for the format."""
    size = ctypes.sizeof(abi.MirrorTrailer)
    if len(frame) < 14 + size or frame[12:14] != abi.MIRROR_ETHERTYPE.to_bytes(2, "big"):
        return None
    tr = abi.MirrorTrailer.from_buffer_copy(frame[-size:])
    if tr.magic != abi.MIRROR_MAGIC or tr.version != abi.MIRROR_VERSION:
        return None
    direction = {abi.MIRROR_DIR_OUT: "out", abi.MIRROR_DIR_IN: "in"}.get(tr.direction)
    if direction is None:
        return None
    return tr.session, direction, bytes(tr.inner) + frame[14:-size]
