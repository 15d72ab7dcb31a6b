"""Bridge FDB and neighbour tables inside one lab namespace, with who programmed each entry.

The door the overlay uses for the VTEP tables: the vxlan device's own FDB (`self` entries:
MAC -> remote VTEP, and the all-zero head-end replication list), the bridge's FDB entries on
the vxlan port (`master`), and the neighbour entries on the segment bridge that ARP/ND
suppression answers from; and the vxlan device itself. Sockets are opened inside the namespace
(netlink.Netlink), so no fork per namespace.

Who programmed an entry is read from the kernel alone, so `nlab overlay show` needs no model:

  origin       vxlan `self` entry        bridge `master` entry       neighbour entry
  bgp          extern_learn              extern_learn                extern_learn
  controller   permanent + `router`      static + `sticky`           protocol RTPROT_NLAB
  static       permanent, no `router`    static, no `sticky`         permanent / noarp
  learned      reachable/stale...        dynamic                     any other state
  local        -                         permanent (a port's own MAC, made by the bridge)

FRR's zebra marks what BGP installs `extern_learn`; the controller never sets it. `router`
(NTF_ROUTER) on a vxlan entry only means something with the device's `rsc` option, which the
lab never sets; `sticky` on a bridge entry is wanted anyway (learning must not move a pinned
remote MAC to a local port). Neighbour entries carry a protocol number of their own.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Container
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from dataplane import nlwire
from netns_lab.kernel import netns, rtnl
from netns_lab.kernel.netlink import Netlink

AF_BRIDGE = 7
NTF_SELF, NTF_MASTER, NTF_EXT_LEARNED, NTF_STICKY, NTF_ROUTER = 0x02, 0x04, 0x10, 0x40, 0x80
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
RTPROT_NLAB = 230  # neighbour entries of the overlay controller (unassigned in iproute2's rt_protos)
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NDA_DST, NDA_LLADDR, NDA_MASTER, NDA_PROTOCOL = 1, 2, 9, 12
_REPLACE = rtnl.F_CREATE | 0x100  # NLM_F_REPLACE
_APPEND = rtnl.F_CREATE | 0x800  # NLM_F_APPEND: one more destination of the same MAC
RTMGRP_NEIGH = 0x4  # 1 << (RTNLGRP_NEIGH - 1): neighbour and FDB changes
VXLAN_PORT = 4789
_NDMSG = struct.Struct("=BxxxiHBB")  # struct ndmsg: family, (pad), ifindex, state, flags, type

CONTROLLER, BGP, LEARNED, STATIC, LOCAL = "controller", "bgp", "learned", "static", "local"


@dataclass(frozen=True)
class Fdb:
    """One FDB entry on a device: `master` False is the vxlan device's own entry (with `dst`)."""

    dev: str
    mac: str
    dst: str | None
    master: bool
    state: int
    flags: int
    origin: str

    def as_dict(self) -> dict[str, Any]:
        table = "bridge" if self.master else "vxlan"
        return {"dev": self.dev, "table": table, "mac": self.mac, "dst": self.dst, "origin": self.origin}


@dataclass(frozen=True)
class Neigh:
    dev: str
    ip: str
    mac: str | None
    state: int
    flags: int
    protocol: int | None
    origin: str

    def as_dict(self) -> dict[str, Any]:
        return {"dev": self.dev, "ip": self.ip, "mac": self.mac, "origin": self.origin}


def fdb_origin(master: bool, state: int, flags: int) -> str:
    if flags & NTF_EXT_LEARNED:
        return BGP
    if master:
        if state & NUD_PERMANENT:
            return LOCAL
        if state & NUD_NOARP:
            return CONTROLLER if flags & NTF_STICKY else STATIC
        return LEARNED
    if state & (NUD_PERMANENT | NUD_NOARP):
        return CONTROLLER if flags & NTF_ROUTER else STATIC
    return LEARNED


def neigh_origin(state: int, flags: int, protocol: int | None) -> str:
    if protocol == RTPROT_NLAB:
        return CONTROLLER
    if flags & NTF_EXT_LEARNED:
        return BGP
    return STATIC if state & (NUD_PERMANENT | NUD_NOARP) else LEARNED


class Tables:
    """The FDB and neighbour tables of namespace `ns` (None: this thread's own). Not thread-safe.

    Entries are read and written on the raw rtnetlink socket of a `Netlink` (packed here with
    struct): through pyroute2 a pass over the tables of a thousand segments took seconds, on
    the raw socket it takes milliseconds. pyroute2 (`ipr`) makes the rare vxlan device.
    """

    def __init__(self, ns: str | None) -> None:
        self.ns = ns
        self.nl = Netlink(ns)
        self._index: dict[str, int] = {}

    @property
    def ipr(self) -> IPRoute:
        return self.nl.iproute()

    def close(self) -> None:
        self.nl.close()

    def __enter__(self) -> Tables:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def index(self, dev: str) -> int:
        """`dev`'s ifindex; NetlinkError ENODEV when it is not there."""
        if dev not in self._index:
            found = self.ipr.link_lookup(ifname=dev)
            if not found:
                raise NetlinkError(errno.ENODEV, f"no interface {dev!r} in namespace {self.ns}")
            self._index[dev] = found[0]
        return self._index[dev]

    def refresh(self) -> dict[str, int]:
        """Look every interface up again, in one dump (a device may have been made again)."""
        self._index = {link.name: link.index for link in self.nl.links()}
        return self._index

    # -- reading ---------------------------------------------------------------------------
    def fdb(self, dev: str) -> list[Fdb]:
        """Every FDB entry of `dev`: its own (a vxlan device's) and the bridge's on its port."""
        self.index(dev)
        return self.all_fdb().get(dev, [])

    def neighbours(self, dev: str) -> list[Neigh]:
        """IPv4 and IPv6 unicast neighbour entries of `dev` (the kernel's multicast ones left out)."""
        self.index(dev)
        return self.all_neighbours().get(dev, [])

    def all_fdb(self) -> dict[str, list[Fdb]]:
        """Every FDB entry of the namespace by device name, in one dump (a pass over a thousand
        segments must not dump the table a thousand times); devices looked up so far only, so
        call refresh() first for all."""
        names = self._names()
        found: dict[str, list[Fdb]] = {}
        for ifindex, state, flags, attrs in self._dump(AF_BRIDGE):
            if (dev := names.get(ifindex)) is None:
                continue
            master = NDA_MASTER in attrs
            dst = _ip(attrs.get(NDA_DST))
            entry = Fdb(
                dev, _mac(attrs.get(NDA_LLADDR)), dst, master, state, flags, fdb_origin(master, state, flags)
            )
            found.setdefault(dev, []).append(entry)
        return found

    def all_neighbours(self) -> dict[str, list[Neigh]]:
        """Every IPv4 and IPv6 unicast neighbour entry of the namespace by device name."""
        names = self._names()
        found: dict[str, list[Neigh]] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            for ifindex, state, flags, attrs in self._dump(family):
                dev, ip = names.get(ifindex), _ip(attrs.get(NDA_DST))
                if dev is None or ip is None or ip_address(ip).is_multicast:
                    continue
                proto = attrs[NDA_PROTOCOL][0] if NDA_PROTOCOL in attrs else None
                origin = neigh_origin(state, flags, proto)
                found.setdefault(dev, []).append(
                    Neigh(dev, ip, _mac(attrs.get(NDA_LLADDR)), state, flags, proto, origin)
                )
        return found

    def _names(self) -> dict[int, str]:
        return {index: name for name, index in self._index.items()}

    def _dump(self, family: int) -> list[tuple[int, int, int, dict[int, bytes]]]:
        what = f"cannot list the {'FDB' if family == AF_BRIDGE else 'neighbour'} entries"
        return self.nl.dump(RTM_GETNEIGH, _NDMSG.pack(family, 0, 0, 0, 0), what, RTM_NEWNEIGH, _entry)

    # -- writing (each call is one request; the kernel changes nothing it already holds) ------
    def replace_remote(self, dev: str, mac: str, vtep: str) -> None:
        """`mac` is behind `vtep`: the vxlan device's own entry, permanent, marked the controller's."""
        self._own_entry(_REPLACE, dev, mac, vtep, f"cannot point {mac} at {vtep} on {dev}")

    def pin_to_port(self, dev: str, mac: str) -> None:
        """The bridge forwards `mac` to port `dev` (static, sticky: learning cannot move it)."""
        body = _NDMSG.pack(AF_BRIDGE, self.index(dev), NUD_NOARP, NTF_MASTER | NTF_STICKY, 0) + _lladdr(mac)
        self.nl.request(RTM_NEWNEIGH, _REPLACE, body, f"cannot pin {mac} to port {dev}")

    def append_flood(self, dev: str, vtep: str) -> None:
        """Add `vtep` to the head-end replication list (`bridge fdb append 00:00:00:00:00:00 dst`)."""
        self._own_entry(_APPEND, dev, "00:00:00:00:00:00", vtep, f"cannot replicate {dev} to {vtep}")

    def _own_entry(self, how: int, dev: str, mac: str, dst: str, what: str) -> None:
        head = _NDMSG.pack(AF_BRIDGE, self.index(dev), NUD_PERMANENT, NTF_SELF | NTF_ROUTER, 0)
        self.nl.request(RTM_NEWNEIGH, how, head + _lladdr(mac) + _dst(dst), what)

    def delete_fdb(self, entry: Fdb) -> None:
        """Remove exactly `entry` (for a vxlan entry: only its `dst`, other destinations stay)."""
        flags = NTF_MASTER if entry.master else NTF_SELF
        body = _NDMSG.pack(AF_BRIDGE, self.index(entry.dev), 0, flags, 0) + _lladdr(entry.mac)
        if not entry.master and entry.dst is not None:
            body += _dst(entry.dst)
        self.nl.request(RTM_DELNEIGH, 0, body, f"cannot delete {entry.mac} from {entry.dev}")

    def replace_neigh(self, dev: str, ip: str, mac: str) -> None:
        head = _NDMSG.pack(_family(ip), self.index(dev), NUD_PERMANENT, 0, 0)
        body = head + _dst(ip) + _lladdr(mac) + nlwire.attr(NDA_PROTOCOL, bytes([RTPROT_NLAB]))
        self.nl.request(RTM_NEWNEIGH, _REPLACE, body, f"cannot set neighbour {ip} on {dev}")

    def delete_neigh(self, entry: Neigh) -> None:
        body = _NDMSG.pack(_family(entry.ip), self.index(entry.dev), 0, 0, 0) + _dst(entry.ip)
        self.nl.request(RTM_DELNEIGH, 0, body, f"cannot delete neighbour {entry.ip} from {entry.dev}")

    # -- devices ---------------------------------------------------------------------------
    def vxlan(self, name: str, vni: int, local: str, bridge: str | None, learning: bool = False) -> int:
        """A vxlan device `id VNI local LOCAL dstport 4789 [no]learning`, enslaved to `bridge`, up;
        `bridge` None: left down and alone (the builder attaches its programs first)."""
        self.ipr.link(
            "add",
            ifname=name,
            kind="vxlan",
            vxlan_id=vni,
            vxlan_local=local,
            vxlan_port=VXLAN_PORT,
            vxlan_learning=int(learning),
        )
        index = self.index(name)
        if bridge is not None:
            self.ipr.link("set", index=index, master=self.index(bridge), state="up")
        return index

    def bgp_port(self, port: str) -> None:
        """Make vxlan port `port` learn nothing: BGP installs the remote MACs (FRR's advice for
        its traditional bridge model); ARP/ND still floods (no neighbour entries to answer from)."""
        self.ipr.brport("set", index=self.index(port), learning=0)

    def controller_port(self, port: str) -> None:
        """Make vxlan port `port` answer-only: the bridge answers ARP/ND for it from neighbour
        entries (neigh_suppress) and learns nothing on it (a remote MAC is known only from the
        controller's pinned entry, never from a frame that came through the tunnel)."""
        self.ipr.brport("set", index=self.index(port), neigh_suppress=1, learning=0)


def _entry(payload: memoryview) -> tuple[int, int, int, dict[int, bytes]]:
    """(ifindex, state, flags, attributes) of one RTM_NEWNEIGH answer."""
    _, ifindex, state, flags, _ = _NDMSG.unpack_from(payload)
    attrs = {k: bytes(v) for k, v in nlwire.attrs(payload, _NDMSG.size).items()}
    return ifindex, state, flags, attrs


def _family(ip: str) -> int:
    return socket.AF_INET6 if ip_address(ip).version == 6 else socket.AF_INET


def _dst(ip: str) -> bytes:
    return nlwire.attr(NDA_DST, ip_address(ip).packed)


def _lladdr(mac: str) -> bytes:
    return nlwire.attr(NDA_LLADDR, bytes.fromhex(mac.replace(":", "")))


def _ip(value: bytes | None) -> str | None:
    return str(ip_address(value)) if value is not None and len(value) in (4, 16) else None


def _mac(value: bytes | None) -> str | None:
    return ":".join(f"{b:02x}" for b in value) if value is not None else None


def neigh_events(ns: str) -> socket.socket:
    """A non-blocking socket in `ns` that receives every neighbour and FDB change there."""
    with netns.inside(ns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_NEIGH))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def drain(sock: socket.socket, ifindexes: Container[int] | None = None) -> int:
    """Read what is queued on a `neigh_events` socket; the number of neighbour/FDB changes
    (only those of devices `ifindexes`, when given).

    An overrun (ENOBUFS: changes were lost) counts as one change: the reader must look again.
    """
    changes = 0
    while True:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return changes
        except OSError as err:
            if err.errno != errno.ENOBUFS:
                raise
            changes += 1
            continue
        for mtype, _, _, payload in nlwire.messages(memoryview(data)):
            if mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
                changes += ifindexes is None or _NDMSG.unpack_from(payload)[1] in ifindexes
