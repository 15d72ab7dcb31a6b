"""Port mirroring of one hypervisor's dataplane, from user space: sessions, port taps, counters.

Works on the maps of a loaded or reopened `SwitchDataplane` (like `Firewall`), in ifindexes and
session ids only. Order of writes: a session before the ports that refer to it, ports before
the session they stop referring to is cleared, so a packet never meets a half-made session.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from dataclasses import dataclass

from dataplane import abi, syscalls

MIRROR_PORT = ("mirror0", "mirror1")  # a hypervisor's mirror port: copies to truncate go in, out


class MirrorError(ValueError):
    pass


@dataclass(frozen=True)
class Session:
    dest: int  # ifindex of the destination's vSwitch port
    taps: int  # abi.TAP_* bits
    snaplen: int = 0
    sample: int = 1
    promisc_mac: str | None = None  # a promiscuous NIC's MAC: skip what it gets anyway
    via: int = 0  # ifindex of the host's mirror port (mirror0), needed for snaplen and encap
    encap: bool = False  # `dest` is a pNIC: copies leave in the mirror encapsulation
    rx: bool = False  # encapsulated copies arriving on an uplink are delivered to `dest`
    vlan: int = 0  # the mirror VLAN (encap, rx)
    outer_dst: str | None = None  # encap: the far endpoint's MAC; rx: this host's
    outer_src: str | None = None  # encap: this host's mirror MAC


@dataclass(frozen=True)
class Stats:
    packets: int = 0
    bytes: int = 0
    dropped: int = 0
    skipped: int = 0

    def __add__(self, other: Stats) -> Stats:
        return Stats(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[int, int, int, int]:
        return self.packets, self.bytes, self.dropped, self.skipped


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def _check_id(sid: int) -> None:
    if not 0 < sid < abi.MAX_MIRRORS:
        raise MirrorError(f"session id {sid} is outside 1..{abi.MAX_MIRRORS - 1} (NLAB_MAX_MIRRORS)")


def session_entry(s: Session) -> abi.MirrorSession:
    """The `mirror_sessions` value of a session (what `Mirrors.set_session` writes)."""
    indirect = bool(s.snaplen or s.encap)
    if indirect and not s.via:
        raise MirrorError("a truncated or encapsulated session needs the host's mirror port (via)")
    if (s.encap or s.rx) and not 1 <= s.vlan <= 4094:
        raise MirrorError(f"mirror VLAN {s.vlan} is not in 1..4094")
    value = abi.MirrorSession(
        ifindex=s.via if indirect else s.dest,
        dest=s.dest,
        snaplen=s.snaplen,
        sample=s.sample,
        taps=s.taps,
        flags=(abi.MIRROR_F_PROMISC if s.promisc_mac else 0)
        | (abi.MIRROR_F_ENCAP if s.encap else 0)
        | (abi.MIRROR_F_RX if s.rx else 0),
        vlan=s.vlan,
    )
    for field, mac in (
        ("dest_mac", s.promisc_mac),
        ("outer_dst", s.outer_dst),
        ("outer_src", s.outer_src),
    ):
        if mac:
            ctypes.memmove(getattr(value, field), _mac(mac), 6)
    return value


def port_entry(sessions: Iterable[tuple[int, int]], analyzer: bool = False) -> abi.MirrorPort:
    """The `mirror_ports` value of a port with `sessions` as (id, taps) (what `Mirrors.set_port` writes)."""
    sessions = list(sessions)
    if len(sessions) > abi.MIRROR_PER_PORT:
        raise MirrorError(f"{len(sessions)} sessions on one port; at most {abi.MIRROR_PER_PORT}")
    port = abi.MirrorPort(flags=abi.MIRROR_PORT_ANALYZER if analyzer else 0, nr=len(sessions))
    for i, (sid, taps) in enumerate(sessions):
        _check_id(sid)
        port.session[i] = sid
        port.taps |= taps
    return port


class Mirrors:
    def __init__(self, maps: dict[str, int]) -> None:
        self.maps = maps
        self._ncpu = syscalls.num_possible_cpus()

    def set_session(self, sid: int, s: Session) -> None:
        _check_id(sid)
        syscalls.map_update(self.maps["mirror_sessions"], ctypes.c_uint32(sid), session_entry(s))

    def clear_session(self, sid: int) -> None:
        """The session and its counters back to zero: an id is reused with fresh counters."""
        _check_id(sid)
        syscalls.map_update(self.maps["mirror_sessions"], ctypes.c_uint32(sid), abi.MirrorSession())
        zero = (abi.MirrorStats * self._ncpu)()
        syscalls.map_update(self.maps["mirror_stats"], ctypes.c_uint32(sid), zero)

    def set_port(self, ifindex: int, sessions: Iterable[tuple[int, int]], analyzer: bool = False) -> None:
        """A port's sessions as (id, taps); `analyzer`: receive-only, receives copies only."""
        if not 0 < ifindex < abi.MAX_IFINDEX:
            raise MirrorError(f"ifindex {ifindex} is outside 1..{abi.MAX_IFINDEX - 1}")
        syscalls.map_update(
            self.maps["mirror_ports"], ctypes.c_uint32(ifindex), port_entry(sessions, analyzer)
        )

    def clear_port(self, ifindex: int) -> None:
        syscalls.map_update(self.maps["mirror_ports"], ctypes.c_uint32(ifindex), abi.MirrorPort())

    def port(self, ifindex: int) -> abi.MirrorPort:
        value = abi.MirrorPort()
        syscalls.map_lookup(self.maps["mirror_ports"], ctypes.c_uint32(ifindex), value)
        return value

    def session(self, sid: int) -> abi.MirrorSession:
        value = abi.MirrorSession()
        syscalls.map_lookup(self.maps["mirror_sessions"], ctypes.c_uint32(sid), value)
        return value

    def stats(self, sid: int) -> Stats:
        values = (abi.MirrorStats * self._ncpu)()
        if not syscalls.map_lookup(self.maps["mirror_stats"], ctypes.c_uint32(sid), values):
            return Stats()
        return Stats(
            sum(v.packets for v in values),
            sum(v.bytes for v in values),
            sum(v.dropped for v in values),
            sum(v.skipped for v in values),
        )
