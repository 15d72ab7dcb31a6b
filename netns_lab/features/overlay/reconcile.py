"""The difference between a host's planned overlay tables and what its kernel holds, and its repair.

`diff_segment` is pure (kernel entries in, changes out), so the rules are tested without root:
  - an entry that already matches is never touched (a restart of the controller rewrites
    nothing: no notification, no moment without the entry);
  - a wrong entry is replaced in place, never deleted first;
  - in controller mode, entries nobody planned are removed whoever made them (the segment's
    tables are the controller's); in flood mode only missing replication entries are added and
    what the device learned stays.
`apply` carries changes out through the FDB door (netns_lab.kernel.fdb).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from netns_lab.features.overlay.plan import ZERO_MAC, HostTables, SegmentTables
from netns_lab.kernel import fdb
from netns_lab.kernel.fdb import Fdb, Neigh

Action = Literal["add", "fix", "remove", "missing"]
Table = Literal["flood", "vxlan", "bridge", "neigh", "device"]


@dataclass(frozen=True)
class Change:
    """One entry that differs from the plan (`want` None: it should not be there)."""

    host: str
    segment: str
    action: Action
    table: Table
    dev: str
    key: str  # the VTEP of a flood entry, the MAC of an FDB entry, the IP of a neighbour
    want: str | None = None
    have: str | None = None
    entry: Fdb | Neigh | None = None  # the kernel entry to remove

    def __str__(self) -> str:
        what = f"{self.host} {self.dev} {self.table} {self.key}: {self.action}"
        if self.have is not None or self.want is not None:
            what += f" (have {self.have or '-'}, want {self.want or '-'})"
        return what

    def as_dict(self) -> dict[str, str | None]:
        keys = ("host", "segment", "action", "table", "dev", "key", "want", "have")
        return {k: getattr(self, k) for k in keys}


def _describe(entry: Fdb | Neigh) -> str:
    if isinstance(entry, Neigh):
        return f"{entry.mac} {entry.origin}"
    return f"{entry.dst} {entry.origin}" if entry.dst else entry.origin


def diff_segment(
    host: str, seg: SegmentTables, entries: Iterable[Fdb], neighbours: Iterable[Neigh]
) -> list[Change]:
    """What must change on `host` for `seg`'s devices to hold exactly the plan."""
    own = [e for e in entries if not e.master]
    changes = _flood(host, seg, [e for e in own if e.mac == ZERO_MAC])
    if seg.mode != "controller":
        return changes
    changes += _remote_macs(host, seg, [e for e in own if e.mac != ZERO_MAC])
    changes += _pinned(host, seg, [e for e in entries if e.master])
    changes += _neighbours(host, seg, list(neighbours))
    return changes


def _flood(host: str, seg: SegmentTables, entries: list[Fdb]) -> list[Change]:
    have = {e.dst: e for e in entries}
    changes = [Change(host, seg.segment, "add", "flood", seg.vxlan, v) for v in seg.flood if v not in have]
    if seg.mode == "controller":
        extra = [e for dst, e in have.items() if dst not in seg.flood]
        changes += [
            Change(host, seg.segment, "remove", "flood", seg.vxlan, str(e.dst), entry=e) for e in extra
        ]
    return changes


def _remote_macs(host: str, seg: SegmentTables, entries: list[Fdb]) -> list[Change]:
    by_mac: dict[str, list[Fdb]] = {}
    for e in entries:
        by_mac.setdefault(e.mac, []).append(e)
    changes = []
    for want in seg.macs:
        have = by_mac.pop(want.mac, [])
        right = [e for e in have if e.dst == want.vtep]
        if not (right and right[0].origin == fdb.CONTROLLER):
            # A replace rewrites the entry's first destination when `vtep` is not among them.
            action: Action = "fix" if have else "add"
            was = ", ".join(_describe(e) for e in have) or None
            changes.append(Change(host, seg.segment, action, "vxlan", seg.vxlan, want.mac, want.vtep, was))
        stale = [e for e in have if e.dst != want.vtep][0 if right else 1 :]
        changes += [_remove(host, seg, "vxlan", e.mac, e) for e in stale]
    for mac, have in by_mac.items():
        changes += [_remove(host, seg, "vxlan", mac, e) for e in have]
    return changes


def _pinned(host: str, seg: SegmentTables, entries: list[Fdb]) -> list[Change]:
    # The bridge's own entry for the port's MAC is its business; a remote MAC made `local`
    # by hand (permanent) would swallow that VM's frames, so that one is ours to fix.
    planned = {m.mac for m in seg.macs}
    have = {e.mac: e for e in entries if e.origin != fdb.LOCAL or e.mac in planned}
    changes = []
    for want in seg.macs:
        e = have.pop(want.mac, None)
        if e is None or e.origin != fdb.CONTROLLER:
            action: Action = "fix" if e else "add"
            was = _describe(e) if e else None
            changes.append(
                Change(host, seg.segment, action, "bridge", seg.vxlan, want.mac, fdb.CONTROLLER, was)
            )
    return changes + [_remove(host, seg, "bridge", mac, e) for mac, e in have.items()]


def _neighbours(host: str, seg: SegmentTables, entries: list[Neigh]) -> list[Change]:
    have = {e.ip: e for e in entries}
    changes = []
    for want in seg.neighbours:
        e = have.pop(want.ip, None)
        if e is None or e.mac != want.mac or e.origin != fdb.CONTROLLER or not e.state & fdb.NUD_PERMANENT:
            action: Action = "fix" if e else "add"
            was = _describe(e) if e else None
            changes.append(Change(host, seg.segment, action, "neigh", seg.bridge, want.ip, want.mac, was))
    return changes + [_remove(host, seg, "neigh", ip, e) for ip, e in have.items()]


def _remove(host: str, seg: SegmentTables, table: Table, key: str, e: Fdb | Neigh) -> Change:
    dev = seg.bridge if table == "neigh" else seg.vxlan
    return Change(host, seg.segment, "remove", table, dev, key, None, _describe(e), e)


def read_host(tables: fdb.Tables, host: HostTables) -> list[Change]:
    """The changes `host` needs (its tables read in one dump each; a missing device is a change)."""
    present = tables.refresh()
    entries, neighbours = tables.all_fdb(), tables.all_neighbours()
    changes = []
    for seg in host.segments:
        devices = (seg.vxlan, seg.bridge)
        missing = [d for d in devices if d not in present]
        if missing:
            changes += [Change(host.host, seg.segment, "missing", "device", d, d) for d in missing]
            continue
        own = neighbours.get(seg.bridge, []) if seg.mode == "controller" else []
        changes += diff_segment(host.host, seg, entries.get(seg.vxlan, []), own)
    return changes


def apply(tables: fdb.Tables, change: Change) -> None:
    """Carry out one change; a `missing` device is the builder's to make, not ours."""
    if change.action == "missing":
        return
    if change.action == "remove":
        if isinstance(change.entry, Neigh):
            tables.delete_neigh(change.entry)
        elif change.entry is not None:
            tables.delete_fdb(change.entry)
        return
    if change.table == "flood":
        tables.append_flood(change.dev, change.key)
    elif change.table == "vxlan":
        tables.replace_remote(change.dev, change.key, str(change.want))
    elif change.table == "bridge":
        tables.pin_to_port(change.dev, change.key)
    else:
        tables.replace_neigh(change.dev, change.key, str(change.want))
