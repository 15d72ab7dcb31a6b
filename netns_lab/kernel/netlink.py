"""rtnetlink inside one lab namespace: the only module that talks to pyroute2.

Verb-first calls that mirror ip(8). A `Netlink` opens its socket while the thread sits in the
target namespace, so the socket (and everything done through it) belongs there, without the
fork per socket that `IPRoute(netns=...)` costs.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_interface

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netns_lab.kernel import netns


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
        if ns is None:
            self._ipr = IPRoute()
        else:
            with netns.inside(ns):
                self._ipr = IPRoute()
        self._index: dict[str, int] = {}

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def index(self, name: str) -> int:
        if name not in self._index:
            found = self._ipr.link_lookup(ifname=name)
            if not found:
                raise NetlinkError(errno.ENODEV, f"no interface {name!r} in namespace {self.ns}")
            self._index[name] = found[0]
        return self._index[name]

    def veth(self, name: str, peer: str, peer_ns: str, mac: str | None = None) -> None:
        """A veth pair: `name` here, `peer` (with `mac`) created directly in `peer_ns`.

        Both ends are born inside lab namespaces; nothing ever appears in the root namespace.
        """
        fd = os.open(netns.path(peer_ns), os.O_RDONLY)
        try:
            peer_attrs: dict[str, object] = {"ifname": peer, "net_ns_fd": fd}
            if mac:
                peer_attrs["address"] = mac
            self._ipr.link("add", ifname=name, kind="veth", peer=peer_attrs)
        finally:
            os.close(fd)

    def bridge(self, name: str) -> None:
        # STP off (the default) forwards at once; the lab's physical switches are loop-free.
        self._ipr.link("add", ifname=name, kind="bridge")
        self.up(name)

    def enslave(self, port: str, bridge: str) -> None:
        self._ipr.link("set", index=self.index(port), master=self.index(bridge))

    def up(self, name: str) -> None:
        self._ipr.link("set", index=self.index(name), state="up")

    def address(self, name: str, ifaddr: str) -> None:
        iface = ip_interface(ifaddr)
        self._ipr.addr(
            "add", index=self.index(name), address=str(iface.ip), prefixlen=iface.network.prefixlen
        )

    def route(self, dst: str, gateway: str) -> None:
        """`dst` is a CIDR, or "default"."""
        family = 10 if ":" in gateway else 2
        if dst == "default":
            self._ipr.route("add", dst="::/0" if family == 10 else "0.0.0.0/0", gateway=gateway)
        else:
            self._ipr.route("add", dst=dst, gateway=gateway, family=family)

    def links(self) -> list[Link]:
        result = []
        for msg in self._ipr.link("dump"):
            info = msg.get("IFLA_LINKINFO")
            result.append(
                Link(
                    index=msg["index"],
                    name=msg.get("IFLA_IFNAME"),
                    kind=info.get("IFLA_INFO_KIND") if info else None,
                    mac=msg.get("IFLA_ADDRESS"),
                    up=bool(msg["flags"] & 1),
                    master=msg.get("IFLA_MASTER"),
                )
            )
        return result


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
