"""Mirror sessions of a lab in its dataplanes: installed per host at build time and by a live
change, their counters, and where their copies can be captured (`taps`, what `nlab watch` reads).

Each session has one id on every host; ids are kept in the lab's state (`mirror-ids`) so that a
live change keeps the ids, and thus the counters, of the sessions it does not touch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dataplane.mirror import Mirrors, Session, Stats
from netns_lab.features.mirror.plan import (
    HostPlan,
    Planned,
    Tap,
    _all,
    _promiscuous_sources,
    plan,
    sessions,
    source_text,
)
from netns_lab.lab import state
from netns_lab.topology import loader, names
from netns_lab.topology.model import Topology
from netns_lab.topology.names import MIRROR_PORT

if TYPE_CHECKING:
    from netns_lab.features.base import LiveContext

IDS = "mirror-ids"


def read_ids(lab: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in (state.read_record(lab, IDS) or {}).items()}


def write_ids(lab: str, ids: dict[str, int]) -> None:
    state.write_record(lab, IDS, ids)


def planned_session(s: Planned, ifindex: Callable[[str], int]) -> Session:
    """One host's session in dataplane terms, its ports resolved by `ifindex`."""
    return Session(
        ifindex(str(s.dest_port)),
        s.taps,
        s.snaplen,
        s.sample,
        s.promisc_mac,
        ifindex(MIRROR_PORT[0]),
        encap=s.encap,
        rx=s.rx,
        vlan=s.vlan,
        outer_dst=s.outer_dst,
        outer_src=s.outer_src,
    )


def install(
    mirrors: Mirrors,
    new: HostPlan,
    ids: dict[str, int],
    ifindex: Callable[[str], int],
    old: HostPlan | None = None,
    old_ids: dict[str, int] | None = None,
) -> None:
    """Write `new` over `old` on one host: sessions first, then ports, then stale sessions cleared."""
    for s in new.sessions:
        session = planned_session(s, ifindex)
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


def stats(lab: LiveContext) -> dict[str, Stats]:
    ids = read_ids(lab.lab)
    total: dict[str, Stats] = {}
    for h in lab.hosts:
        for s in plan(lab.topo)[h.host].sessions:
            total[s.name] = total.get(s.name, Stats()) + h.dataplane.mirrors.stats(ids[s.name])
    return total


def session_doc(topo: Topology, planned: Planned, stats: Stats) -> dict[str, Any]:
    """A session as `nlab mirror list --json` and `nlab status --json` show it: ``sources`` as
    declared, ``source_vms`` the VMs they stand for now."""
    declared = next((s for s in topo.mirrors if s.name == planned.name), None)
    return {
        "name": planned.name,
        "sources": [source_text(s) for s in declared.sources]
        if declared
        else _promiscuous_sources(topo, planned.name),
        "source_vms": list(planned.source_vms),
        "dest": planned.dest_vm or f"uplink:{declared.uplink if declared else '?'}",
        "vlan": topo.vlan_name(declared.vlan) if declared and declared.vlan else None,
        "direction": declared.direction if declared else "both",
        "tap": declared.tap if declared else "after",
        "snaplen": planned.snaplen or None,
        "sample": planned.sample,
        "kind": "session" if declared else "promiscuous",
        "counters": {
            "packets": stats.packets,
            "bytes": stats.bytes,
            "dropped": stats.dropped,
            "sampled_out": stats.skipped,
        },
    }


def _running_topology(lab: str) -> Topology:
    st = state.LabState.read(lab)
    text = st.topology_text() if st else None
    if st is None or text is None:
        raise state.NotRunning(lab)
    return loader.load_text(text, st.source or "topology.yaml", lab=lab)


def taps(lab: str, session: str | None = None) -> list[Tap]:
    """Where the copies of `session` (all sessions: None) of a running lab can be captured."""
    topo = _running_topology(lab)
    found = _all(topo)
    if session is not None:
        found = [s for s in found if s.name == session]
        if not found:
            raise KeyError(session)
    result = []
    for s in found:
        if s.dest_vm is not None:
            # on the host side of the destination's port, where the copies still carry their mark
            # (in the VM they do not, and sessions sharing the analyzer could not be told apart)
            ns = names.namespace(lab, topo.vm(s.dest_vm).host)
            result.append(Tap(s.name, ns, str(s.dest_port), s.source_vms, False, marked=True))
            continue
        uplink = str(s.decl.uplink) if s.decl is not None else ""
        if "." in uplink:  # copies leave through a pNIC: capture them there, still tagged
            host, pnic = uplink.split(".", 1)
            result.append(Tap(s.name, names.namespace(lab, host), pnic, s.source_vms, True))
        else:
            result.append(Tap(s.name, names.namespace(lab, uplink), names.NETWORK_IFNAME, s.source_vms, True))
    return result


def documents(lab: LiveContext) -> list[dict[str, Any]]:
    """Every session of a running lab with its counters, for `nlab status`."""
    counted = stats(lab)
    return [session_doc(lab.topo, s, counted.get(s.name, Stats())) for s in sessions(lab.topo)]
