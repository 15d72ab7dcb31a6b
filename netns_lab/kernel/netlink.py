"""rtnetlink inside one lab namespace: the one door to rtnetlink; pyroute2 objects come only from here.

Verb-first calls that mirror ip(8). A `Netlink` opens a raw NETLINK_ROUTE socket while the
thread sits in the target namespace, so the socket (and everything done through it) belongs
there, without the fork per socket that `IPRoute(netns=...)` costs. Requests are packed by
`rtnl` and sent one at a time with NLM_F_ACK; each call returns when the kernel has answered.
pyroute2's sync API runs an asyncio loop per request, many times what the same link change
costs on a raw socket (README, Performance), so nothing on the build path uses it:
`tc_socket()` hands dataplane.tc a second raw socket in the namespace, and `iproute()` is left
for tests that want an independent view. The kernel does a request's work inside send(), so
waiting for each ack costs nothing worth batching away.

Creating calls return the new ifindex, read from the NLM_F_ECHO copy of RTM_NEWLINK (kernel
6.1+; on older kernels the echo is absent and `index()` looks the name up when needed).
A `Netlink` is not thread-safe: one per namespace per thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from dataplane import nlwire
from netns_lab.kernel import netns, rtnl

_RECV_SIZE = 65536  # a dump datagram is at most ~32 KiB (netlink caps max_recvmsg_len)
_DUMP_RETRIES = 3
_CREATE = rtnl.F_CREATE | rtnl.F_EXCL
T = TypeVar("T")


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None
    mac: str | None
    up: bool
    master: int | None


class Netlink:
    """An rtnetlink socket bound to the namespace `ns` (None: this thread's own namespace)."""

    def __init__(self, ns: str | None) -> None:
        self.ns = ns
        with self._inside():
            self._sock = _open_socket()
        self._seq = 0
        self._buf = bytearray(_RECV_SIZE)
        self._index: dict[str, int] = {"lo": rtnl.LOOPBACK_INDEX}
        self._ipr: IPRoute | None = None
        self._tc: socket.socket | None = None

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self._tc is not None:
            self._tc.close()
            self._tc = None
        self._sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tc_socket(self) -> socket.socket:
        """A raw NETLINK_ROUTE socket of the same namespace for dataplane.tc; closed by close().

        A second socket, not this one: tc numbers and reads its own requests, and a reply can
        never land in the other conversation.
        """
        if self._tc is None:
            with self._inside():
                self._tc = _open_socket()
        return self._tc

    def iproute(self) -> IPRoute:
        """A pyroute2 IPRoute in the same namespace (an independent view for tests); closed by close()."""
        if self._ipr is None:
            with self._inside():
                self._ipr = IPRoute()
        return self._ipr

    def _inside(self) -> contextlib.AbstractContextManager[None]:
        return netns.inside(self.ns) if self.ns is not None else contextlib.nullcontext()

    # -- links -----------------------------------------------------------------------------
    def index(self, name: str) -> int:
        """`name`'s ifindex: remembered from its creation or an earlier call, else asked for.

        Remembered for the life of this Netlink: the lab never renames or re-creates a link
        while building. lo is always 1.
        """
        index = self._index.get(name)
        if index is None:
            what = f"no interface {name!r}"
            index = self._call(rtnl.RTM_GETLINK, 0, rtnl.get_link(name), what)
            if index is None:
                raise NetlinkError(errno.ENODEV, self._message(what, "no link in the answer"))
            self._index[name] = index
        return index

    def veth(
        self,
        name: str,
        peer: str,
        peer_ns: str,
        mac: str | None = None,
        master: str | None = None,
        up: bool = False,
    ) -> int:
        """A veth pair in one request: `name` here, `peer` (with `mac`) born in `peer_ns`.

        `name` is enslaved to bridge `master` and brought up by the same request when asked.
        The peer stays down (the kernel refuses IFF_UP on it with ENOTCONN at creation): bring
        it up from `peer_ns`. Nothing ever appears in the root namespace. Returns `name`'s ifindex.
        """
        master_index = self.index(master) if master else 0
        fd = os.open(netns.path(peer_ns), os.O_RDONLY)
        try:
            body = rtnl.veth(name, peer, fd, mac, master_index, up)
            what = f"cannot create veth {name!r} (peer {peer!r} in {peer_ns})"
            index = self._call(rtnl.RTM_NEWLINK, _CREATE | rtnl.F_ECHO, body, what)
        finally:
            os.close(fd)
        return self._remember(name, index)

    def bridge(self, name: str) -> int:
        """A bridge, already up. STP stays off (the default) so ports forward at once."""
        what = f"cannot create bridge {name!r}"
        index = self._call(rtnl.RTM_NEWLINK, _CREATE | rtnl.F_ECHO, rtnl.bridge(name, up=True), what)
        return self._remember(name, index)

    def enslave(self, port: str, bridge: str) -> None:
        master = nlwire.u32(rtnl.IFLA_MASTER, self.index(bridge))
        self._set(port, False, master, f"cannot enslave {port!r} to {bridge!r}")

    def up(self, name: str) -> None:
        self._set(name, True, b"", f"cannot bring {name!r} up")

    def down(self, name: str) -> None:
        """Administratively down: a veth's peer loses its carrier, as with a pulled cable."""
        index, ref = rtnl.link_ref(self._index.get(name, 0), name)
        self._call(rtnl.RTM_NEWLINK, 0, rtnl.ifinfo_down(index, ref), f"cannot bring {name!r} down")

    def flush_fdb(self, port: str) -> None:
        """Forget the dynamic FDB entries the bridge of `port` learned on it (static ones stay)."""
        self._set(port, False, rtnl.brport_flush(), f"cannot flush the FDB entries of {port!r}")

    def links(self) -> list[Link]:
        return self.dump(rtnl.RTM_GETLINK, rtnl.dump_links(), "cannot list links", rtnl.RTM_NEWLINK, _link)

    # -- addresses and routes --------------------------------------------------------------
    def address(self, name: str, ifaddr: str) -> None:
        body = rtnl.address(self.index(name), ifaddr)
        self._call(rtnl.RTM_NEWADDR, _CREATE, body, f"cannot add address {ifaddr} to {name!r}")

    def route(self, dst: str, gateway: str) -> None:
        """`dst` is a CIDR, or "default"."""
        body = rtnl.route(None if dst == "default" else dst, gateway)
        self._call(rtnl.RTM_NEWROUTE, _CREATE, body, f"cannot add route {dst} via {gateway}")

    # -- the socket ------------------------------------------------------------------------
    def _remember(self, name: str, index: int | None) -> int:
        if index is None:  # no echo (kernel before 6.1): ask
            self._index.pop(name, None)
            return self.index(name)
        self._index[name] = index
        return index

    def _set(self, name: str, up: bool, attrs: bytes, what: str) -> None:
        index, ref = rtnl.link_ref(self._index.get(name, 0), name)
        self._call(rtnl.RTM_NEWLINK, 0, rtnl.ifinfo(index, up, ref + attrs), what)

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self._seq += 1
        self._sock.send(nlwire.request(kind, nlwire.F_REQUEST | flags, self._seq, body))
        return self._seq

    def _call(self, kind: int, flags: int, body: bytes, what: str) -> int | None:
        """One request with NLM_F_ACK; the ifindex of an RTM_NEWLINK answer (echo or get), if any."""
        seq = self._send(kind, flags | nlwire.F_ACK, body)
        index = None
        while True:
            for mtype, mflags, mseq, payload in self._receive(what):
                if mseq != seq:
                    continue  # the late answer of a request interrupted before its ack
                if mtype == rtnl.RTM_NEWLINK:
                    index = rtnl.link_header(payload)[0]
                elif mtype == nlwire.NLMSG_ERROR:
                    code, detail = nlwire.error(mflags, payload)
                    if code:
                        raise NetlinkError(code, self._message(what, os.strerror(code), detail))
                    return index

    def request(self, kind: int, flags: int, body: bytes, what: str) -> None:
        """One request packed by the caller (e.g. a neighbour or FDB change), acknowledged."""
        self._call(kind, flags, body, what)

    def dump(
        self, kind: int, body: bytes, what: str, answer: int, parse: Callable[[memoryview], T]
    ) -> list[T]:
        """Every `answer` message of a `kind` dump, each through `parse`; retried while the
        kernel flags the dump as inconsistent (the table changed while it was read)."""
        for _ in range(_DUMP_RETRIES):
            found = self._dump(kind, body, what, answer, parse)
            if found is not None:
                return found
        raise NetlinkError(errno.EAGAIN, self._message(what, "the table kept changing"))

    def _dump(
        self, kind: int, body: bytes, what: str, answer: int, parse: Callable[[memoryview], T]
    ) -> list[T] | None:
        """None when the kernel flagged the dump as inconsistent (NLM_F_DUMP_INTR)."""
        seq = self._send(kind, nlwire.F_DUMP, body)
        found: list[T] = []
        consistent = True
        while True:
            for mtype, mflags, mseq, payload in self._receive(what):
                if mseq != seq:
                    continue
                consistent = consistent and not mflags & rtnl.F_DUMP_INTR
                if mtype in (nlwire.NLMSG_DONE, nlwire.NLMSG_ERROR):
                    code, detail = nlwire.error(mflags, payload, done=mtype == nlwire.NLMSG_DONE)
                    if code:
                        raise NetlinkError(code, self._message(what, os.strerror(code), detail))
                    return found if consistent else None
                if mtype == answer:
                    found.append(parse(payload))

    def _receive(self, what: str) -> Iterator[tuple[int, int, int, memoryview]]:
        """The messages of the datagram read now (valid until the next read).

        EINTR is retried by Python itself (PEP 475).
        """
        try:
            size = self._sock.recv_into(self._buf, 0, socket.MSG_TRUNC)
        except OSError as err:
            if err.errno != errno.ENOBUFS:
                raise
            # No multicast groups are joined and requests go one at a time, so only a reader
            # that stalled with replies queued gets here; what they said is lost.
            raise NetlinkError(errno.ENOBUFS, self._message(what, "kernel replies were lost")) from None
        if size > len(self._buf):
            raise NetlinkError(errno.EMSGSIZE, self._message(what, f"reply of {size} bytes truncated"))
        return nlwire.messages(memoryview(self._buf)[:size])

    def _message(self, what: str, reason: str, detail: str = "") -> str:
        where = f"namespace {self.ns}" if self.ns is not None else "this namespace"
        return f"{what} in {where}: {reason}" + (f" ({detail})" if detail else "")


def _open_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        # Acks quote only the request's header, and carry the kernel's text for errors.
        sock.setsockopt(rtnl.SOL_NETLINK, rtnl.NETLINK_CAP_ACK, 1)
        sock.setsockopt(rtnl.SOL_NETLINK, rtnl.NETLINK_EXT_ACK, 1)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def _link(payload: memoryview) -> Link:
    index, flags = rtnl.link_header(payload)
    attrs = rtnl.link_attrs(payload)
    return Link(
        index=index,
        name=nlwire.string(attrs[rtnl.IFLA_IFNAME]),
        kind=rtnl.link_kind(attrs.get(rtnl.IFLA_LINKINFO)),
        mac=rtnl.hw_address(attrs.get(rtnl.IFLA_ADDRESS)),
        up=bool(flags & rtnl.IFF_UP),
        master=nlwire.u32_value(attrs.get(rtnl.IFLA_MASTER)),
    )


def sysctl(ns: str, key: str, value: str) -> None:
    """Write a per-namespace sysctl (net.*): /proc/sys/net follows the writing thread's namespace."""
    with netns.inside(ns), open(f"/proc/sys/{key.replace('.', '/')}", "w") as f:
        f.write(value)


@contextlib.contextmanager
def session(ns: str | None) -> Iterator[Netlink]:
    nl = Netlink(ns)
    try:
        yield nl
    finally:
        nl.close()
