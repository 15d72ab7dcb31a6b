"""NIC teams and injected faults of one switching node's dataplane, from user space.

Works on the maps of a loaded or reopened `SwitchDataplane` (like `Mirrors`), in ifindexes only:

    team_state   member ifindex -> active | standby   (one write flips a team's member)
    port_faults  port ifindex   -> silent | loss P    (any port of a host or physical switch)
    team_beacons beacons consumed (ingress) and sent (egress) per port

The drops themselves are verdicts like any other (reasons TEAM_STANDBY_RX/TX, FAULT_SILENT,
FAULT_LOSS in the port's counters); `counters()` gathers them with the beacons per port.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from dataplane import abi, syscalls
from dataplane.abi import Direction, Reason

TEAM_MAPS = ("team_state", "port_faults", "team_beacons")
FAULT_MODES = ("silent", "loss")
TEAM_REASONS = (Reason.TEAM_STANDBY_RX, Reason.TEAM_STANDBY_TX, Reason.FAULT_SILENT, Reason.FAULT_LOSS)
BEACON_MAGIC = abi.BEACON_MAGIC.to_bytes(8, "big")  # b"NLABTEAM", the start of a beacon's payload


class TeamError(ValueError):
    pass


@dataclass(frozen=True)
class PortFault:
    mode: str  # "silent" | "loss"
    p: float = 1.0  # loss: the probability of a drop, as stored (a multiple of 2^-32)


@dataclass(frozen=True)
class PortCounts:
    """A port's team traffic: beacons seen, and frames the gates dropped, by reason, in packets."""

    beacons_rx: int = 0  # consumed at ingress (the monitor read them before)
    beacons_tx: int = 0  # sent at egress
    dropped: tuple[tuple[Direction, Reason, int], ...] = ()

    def drops(self, direction: Direction, reason: Reason) -> int:
        return sum(n for d, r, n in self.dropped if d == direction and r == reason)


def loss_units(p: float) -> int:
    """P as the dataplane compares it: a drop when a 32-bit random number is below P * 2^32."""
    if not 0.0 <= p <= 1.0:
        raise TeamError(f"loss probability {p} is not in 0..1")
    return round(p * abi.FAULT_LOSS_ALL)


def _check_ifindex(ifindex: int) -> None:
    if not 0 < ifindex < abi.MAX_IFINDEX:
        raise TeamError(f"ifindex {ifindex} is outside 1..{abi.MAX_IFINDEX - 1} (NLAB_MAX_IFINDEX)")


class Team:
    def __init__(self, maps: dict[str, int]) -> None:
        self.maps = maps
        self._ncpu = syscalls.num_possible_cpus()

    # -- members ---------------------------------------------------------------------------------
    def set_member(self, ifindex: int, active: bool) -> None:
        """Make `ifindex` a team member, active or standby: one map write, so a frame meets the
        old state or the new (flipping a team: `activate`)."""
        _check_ifindex(ifindex)
        state = abi.TEAM_ACTIVE if active else abi.TEAM_STANDBY
        syscalls.map_update(
            self.maps["team_state"], ctypes.c_uint32(ifindex), abi.TeamMember(abi.TEAM_MEMBER, state)
        )

    def set_edge(self, ifindex: int) -> None:
        """Make `ifindex` a host uplink in no team: other hosts' beacons end at its ingress."""
        _check_ifindex(ifindex)
        syscalls.map_update(self.maps["team_state"], ctypes.c_uint32(ifindex), abi.TeamMember(abi.TEAM_EDGE))

    def activate(self, ifindex: int, team: list[int]) -> None:
        """Make `ifindex` the active member of `team` (its members' ifindexes): the others go
        standby first, so that no frame ever crosses two members; the frames of the moment
        between the two writes are lost, never duplicated."""
        for other in team:
            if other != ifindex:
                self.set_member(other, False)
        self.set_member(ifindex, True)

    def remove_member(self, ifindex: int) -> None:
        """`ifindex` is no team member any more: ungated, it forwards like any port."""
        _check_ifindex(ifindex)
        syscalls.map_update(self.maps["team_state"], ctypes.c_uint32(ifindex), abi.TeamMember())

    def members(self) -> dict[int, bool]:
        """Team members by ifindex: True when active."""
        found = {}
        for ifindex, value in self._entries("team_state", abi.TeamMember):
            if value.member == abi.TEAM_MEMBER:
                found[ifindex] = value.active == abi.TEAM_ACTIVE
        return found

    # -- faults ----------------------------------------------------------------------------------
    def set_fault(self, ifindex: int, mode: str | tuple[str, float], p: float | None = None) -> None:
        """Inject a fault on port `ifindex`: "silent", or a loss ("loss", p) / "loss", p."""
        _check_ifindex(ifindex)
        if isinstance(mode, tuple):
            if p is not None:
                raise TeamError("give the loss probability once: ('loss', p) or 'loss', p")
            mode, p = mode
        if mode == "silent":
            if p is not None:
                raise TeamError("a silent fault takes no probability")
            value = abi.Fault(mode=abi.FAULT_SILENT)
        elif mode == "loss":
            if p is None:
                raise TeamError("a loss fault needs a probability in 0..1")
            value = abi.Fault(mode=abi.FAULT_LOSS, loss=loss_units(p))
        else:
            raise TeamError(f"fault mode {mode!r} is not one of {', '.join(FAULT_MODES)}")
        syscalls.map_update(self.maps["port_faults"], ctypes.c_uint32(ifindex), value)

    def clear_fault(self, ifindex: int) -> None:
        _check_ifindex(ifindex)
        syscalls.map_update(self.maps["port_faults"], ctypes.c_uint32(ifindex), abi.Fault())

    def faults(self) -> dict[int, PortFault]:
        found = {}
        for ifindex, value in self._entries("port_faults", abi.Fault):
            if value.mode == abi.FAULT_SILENT:
                found[ifindex] = PortFault("silent")
            elif value.mode == abi.FAULT_LOSS:
                found[ifindex] = PortFault("loss", value.loss / abi.FAULT_LOSS_ALL)
        return found

    # -- counters --------------------------------------------------------------------------------
    def counters(self, ifindexes: list[int] | None = None) -> dict[int, PortCounts]:
        """Beacons and team/fault drops of `ifindexes` (default: every member and faulted port,
        and every port that has seen a beacon)."""
        beacons = self._beacons()
        if ifindexes is None:
            ifindexes = sorted({*self.members(), *self.faults(), *beacons})
        result = {}
        for ifindex in ifindexes:
            rx, tx = beacons.get(ifindex, (0, 0))
            result[ifindex] = PortCounts(rx, tx, self._drops(ifindex))
        return result

    def _packets(self, name: str, index: int) -> int:
        """Packets of entry `index` of per-CPU counter map `name`, summed over the CPUs."""
        values = (abi.Counter * self._ncpu)()
        if not syscalls.map_lookup(self.maps[name], ctypes.c_uint32(index), values):
            return 0
        return sum(v.packets for v in values)

    def _beacons(self) -> dict[int, tuple[int, int]]:
        found = {}
        for ifindex in range(1, abi.MAX_IFINDEX):
            rx, tx = (self._packets("team_beacons", ifindex * abi.NR_DIRS + d) for d in Direction)
            if rx or tx:
                found[ifindex] = (rx, tx)
        return found

    def _drops(self, ifindex: int) -> tuple[tuple[Direction, Reason, int], ...]:
        counted = (
            (d, r, self._packets("counters", abi.counter_index(ifindex, d, r)))
            for d in Direction
            for r in TEAM_REASONS
        )
        return tuple((d, r, n) for d, r, n in counted if n)

    def _entries(self, name: str, value_type: type[ctypes.Structure]):  # type: ignore[no-untyped-def]
        """(ifindex, value) of every entry of array map `name` that is not all zero."""
        value = value_type()
        for ifindex in range(1, abi.MAX_IFINDEX):
            if syscalls.map_lookup(self.maps[name], ctypes.c_uint32(ifindex), value) and any(bytes(value)):
                yield ifindex, value_type.from_buffer_copy(value)


def is_beacon(frame: bytes) -> bool:
    """The dataplane's test (team.h: is_beacon) on a frame's bytes as an AF_PACKET socket reads
    them (the outer tag, if any, already in the packet's auxiliary data, not in the bytes: a
    reader must also check that none was there)."""
    return (
        len(frame) >= abi.BEACON_MIN_LEN
        and int.from_bytes(frame[12:14], "big") == abi.BEACON_ETHERTYPE
        and frame[14:22] == BEACON_MAGIC
    )
