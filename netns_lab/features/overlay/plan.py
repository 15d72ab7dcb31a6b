"""What every VTEP's tables should hold, computed from plain data: no kernel, no I/O.

Input is plain data (a VTEP address per host, the segments, the VM NICs attached to them);
`from_topology` extracts it from the topology model. Output is a `Plan`: per host, per segment
hosted there (a segment is hosted where at least one of its NICs is), the entries the overlay
controller keeps in the kernel:

  flood       one head-end replication entry per remote VTEP hosting the segment
              (`00:00:00:00:00:00 dst VTEP` on vx-<vni>): broadcasts, unknown unicast and
              multicast are copied to exactly the hosts that have members, never further;
  macs        (controller mode) each remote member MAC -> its VTEP on vx-<vni>;
  neighbours  (controller mode) each member IP -> MAC on sg-<vni>, local members included: the
              bridge answers ARP/ND from them (neigh_suppress) and, for a MAC it knows, keeps
              the request off the underlay.

Flood mode plans only the head-end replication entries: the vxlan device learns the rest.
Segments in `evpn` mode are left out: BGP fills their tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from netns_lab.topology.model import Topology

Mode = Literal["flood", "controller", "evpn"]
PLANNED_MODES = ("flood", "controller")  # the modes whose tables this plan (and the controller) own
ZERO_MAC = "00:00:00:00:00:00"  # the all-zero MAC of head-end replication entries


def segment_bridge(vni: int) -> str:
    return f"sg-{vni}"


def vxlan_dev(vni: int) -> str:
    return f"vx-{vni}"


# -- input -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentSpec:
    name: str
    vni: int
    tenant: str
    mode: Mode


@dataclass(frozen=True)
class Member:
    """One VM NIC attached to a segment; `addresses` are bare IPs (v4 or v6), no prefix."""

    host: str
    vm: str
    nic: int
    segment: str
    mac: str
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class OverlayData:
    vteps: tuple[tuple[str, str], ...]  # (host, VTEP IPv4 address)
    segments: tuple[SegmentSpec, ...]
    members: tuple[Member, ...]


# -- output ------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class RemoteMac:
    mac: str
    vtep: str


@dataclass(frozen=True, order=True)
class Neighbour:
    ip: str
    mac: str


@dataclass(frozen=True)
class SegmentTables:
    segment: str
    vni: int
    tenant: str
    mode: Mode
    flood: tuple[str, ...] = ()  # remote VTEPs, sorted
    macs: tuple[RemoteMac, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()

    @property
    def bridge(self) -> str:
        return segment_bridge(self.vni)

    @property
    def vxlan(self) -> str:
        return vxlan_dev(self.vni)


@dataclass(frozen=True)
class HostTables:
    host: str
    vtep: str
    segments: tuple[SegmentTables, ...] = ()


@dataclass(frozen=True)
class Plan:
    hosts: tuple[HostTables, ...] = field(default_factory=tuple)

    def host(self, name: str) -> HostTables:
        return next(h for h in self.hosts if h.host == name)

    def to_dict(self) -> dict[str, Any]:
        return {"hosts": [_host_dict(h) for h in self.hosts]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(tuple(_host_from(h) for h in data["hosts"]))


def _host_dict(h: HostTables) -> dict[str, Any]:
    segments = [
        {
            "segment": s.segment,
            "vni": s.vni,
            "tenant": s.tenant,
            "mode": s.mode,
            "flood": list(s.flood),
            "macs": [[m.mac, m.vtep] for m in s.macs],
            "neighbours": [[n.ip, n.mac] for n in s.neighbours],
        }
        for s in h.segments
    ]
    return {"host": h.host, "vtep": h.vtep, "segments": segments}


def _host_from(data: dict[str, Any]) -> HostTables:
    segments = tuple(
        SegmentTables(
            segment=s["segment"],
            vni=s["vni"],
            tenant=s["tenant"],
            mode=s["mode"],
            flood=tuple(s["flood"]),
            macs=tuple(RemoteMac(mac, vtep) for mac, vtep in s["macs"]),
            neighbours=tuple(Neighbour(ip, mac) for ip, mac in s["neighbours"]),
        )
        for s in data["segments"]
    )
    return HostTables(data["host"], data["vtep"], segments)


# -- planning ----------------------------------------------------------------------------------
def plan(data: OverlayData) -> Plan:
    """The tables of every host that hosts at least one planned segment, hosts and segments sorted.

    ValueError names a member whose segment is unknown or whose host has no VTEP (the topology
    validator refuses both first; this guards callers that skip it).
    """
    vteps = dict(data.vteps)
    segments = {s.name: s for s in data.segments}
    for m in data.members:
        if m.segment not in segments:
            raise ValueError(f"{m.vm}.eth{m.nic}: unknown segment {m.segment!r}")
        if m.host not in vteps:
            raise ValueError(f"{m.vm}.eth{m.nic}: host {m.host!r} has no VTEP for segment {m.segment!r}")
    by_segment: dict[str, list[Member]] = {}
    for m in data.members:
        by_segment.setdefault(m.segment, []).append(m)
    for members in by_segment.values():
        _unique_addresses(members)
    hosts: dict[str, list[SegmentTables]] = {}
    for name in sorted(by_segment, key=lambda n: segments[n].vni):
        spec = segments[name]
        if spec.mode not in PLANNED_MODES:
            continue
        members = by_segment[name]
        for host in sorted({m.host for m in members}):
            hosts.setdefault(host, []).append(_segment_tables(spec, host, members, vteps))
    return Plan(tuple(HostTables(h, vteps[h], tuple(hosts[h])) for h in sorted(hosts)))


def _unique_addresses(members: list[Member]) -> None:
    """Two NICs of one segment with one address would make the controller rewrite its
    neighbour entry forever, one MAC after the other."""
    owner: dict[str, Member] = {}
    for m in members:
        for ip in m.addresses:
            first = owner.setdefault(ip, m)
            if first.mac.lower() != m.mac.lower():
                where = f"{first.vm}.eth{first.nic} and {m.vm}.eth{m.nic}"
                raise ValueError(f"{where}: both have {ip} on segment {m.segment!r}")


def _segment_tables(
    spec: SegmentSpec, host: str, members: list[Member], vteps: dict[str, str]
) -> SegmentTables:
    remote = [m for m in members if m.host != host]
    flood = tuple(sorted({vteps[m.host] for m in remote}, key=ip_address))
    if spec.mode == "flood":
        return SegmentTables(spec.name, spec.vni, spec.tenant, spec.mode, flood)
    macs = tuple(sorted({RemoteMac(m.mac.lower(), vteps[m.host]) for m in remote}))
    neighbours = tuple(sorted({Neighbour(ip, m.mac.lower()) for m in members for ip in m.addresses}))
    return SegmentTables(spec.name, spec.vni, spec.tenant, spec.mode, flood, macs, neighbours)


def hosted(data: OverlayData) -> dict[str, list[int]]:
    """Per host, the VNIs of every segment it hosts, in any mode (what `show` reads)."""
    vni = {s.name: s.vni for s in data.segments}
    found: dict[str, set[int]] = {}
    for m in data.members:
        if m.segment in vni:
            found.setdefault(m.host, set()).add(vni[m.segment])
    return {host: sorted(found[host]) for host in sorted(found)}


def from_topology(topo: Topology) -> OverlayData:
    """The overlay's plain data from the model: VTEP per host, segments, NICs on segments."""
    vteps = tuple((h.name, str(ip)) for h in topo.hosts if (ip := topo.vtep_ip(h.name)) is not None)
    segments = tuple(SegmentSpec(s.name, s.vni, s.tenant, s.mode) for s in topo.segments)
    members = tuple(_members(topo.vms))
    return OverlayData(vteps, segments, members)


def _members(vms: Iterable[Any]) -> Iterable[Member]:
    for vm in vms:
        for nic in vm.nics:
            if nic.segment is None:
                continue
            # Only the NIC's own address: an allowed address may be a prefix or a VIP that moves.
            addresses = (str(nic.ip.ip),) if nic.ip is not None else ()
            yield Member(vm.host, vm.name, nic.index, nic.segment, nic.mac, addresses)
