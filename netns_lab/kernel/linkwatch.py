"""Link state of one namespace as it changes: an rtnetlink socket joined to RTNLGRP_LINK.

The kernel sends RTM_NEWLINK to the group when a link's flags or carrier change (a veth's
carrier follows its peer at once: its link-watch events are urgent), so carrier loss is seen
without polling. The same socket also asks for a dump of every link, with its counters, whose
answers arrive in the same stream as the events: `poll()` returns both, in the kernel's order.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from dataclasses import dataclass

from dataplane import nlwire
from netns_lab.kernel import netns, rtnl

RTNLGRP_LINK = 1
RTM_DELLINK = 17
IFF_LOWER_UP = 0x10000  # the carrier, as ifi_flags report it
IFLA_STATS64 = 23
_RX_PACKETS = struct.Struct("=Q")  # the first field of struct rtnl_link_stats64
_RCVBUF = 1 << 20
_RECV_SIZE = 65536


@dataclass(frozen=True)
class LinkState:
    index: int
    name: str
    mac: str | None
    up: bool  # administratively (IFF_UP)
    carrier: bool  # up and with carrier (IFF_LOWER_UP)
    rx_packets: int | None  # None when the message carried no counters
    gone: bool = False  # RTM_DELLINK
    dumped: bool = False  # an answer to `request_dump()` (its counters were read in that call)


class LinkWatch:
    """Link events (and dump answers) of namespace `ns`; non-blocking, for a poll loop."""

    def __init__(self, ns: str | None) -> None:
        with netns.inside(ns) if ns is not None else contextlib.nullcontext():
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            self.sock.bind((0, 1 << (RTNLGRP_LINK - 1)))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self._seq = 0
        self._buf = bytearray(_RECV_SIZE)
        self.overrun = False  # events were lost: the caller should dump to resynchronise

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def request_dump(self) -> None:
        """Ask for every link with its counters; the answers come through `poll()`.

        The kernel fills the first answer datagram within this call (a few links fit in it), so
        their counters are as of now."""
        self._seq += 1
        self.sock.send(
            nlwire.request(rtnl.RTM_GETLINK, nlwire.F_REQUEST | nlwire.F_DUMP, self._seq, rtnl.ifinfo())
        )

    def poll(self) -> list[LinkState]:
        """Every link message queued now (events and dump answers), oldest first."""
        found: list[LinkState] = []
        while True:
            try:
                size = self.sock.recv_into(self._buf)
            except BlockingIOError:
                return found
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                self.overrun = True
                continue
            for kind, _, seq, payload in nlwire.messages(memoryview(self._buf)[:size]):
                if kind in (rtnl.RTM_NEWLINK, RTM_DELLINK):
                    found.append(_state(payload, gone=kind == RTM_DELLINK, dumped=seq != 0))

    def snapshot(self, timeout: float = 2.0) -> dict[str, LinkState]:
        """Every link now, by name (a blocking dump; events read meanwhile are folded in)."""
        self.request_dump()
        seq, found = self._seq, {}
        self.sock.settimeout(timeout)
        try:
            while True:
                size = self.sock.recv_into(self._buf)
                for kind, _, mseq, payload in nlwire.messages(memoryview(self._buf)[:size]):
                    if kind in (rtnl.RTM_NEWLINK, RTM_DELLINK):
                        state = _state(payload, gone=kind == RTM_DELLINK)
                        found[state.name] = state
                    elif mseq == seq and kind in (nlwire.NLMSG_DONE, nlwire.NLMSG_ERROR):
                        return {name: s for name, s in found.items() if not s.gone}
        finally:
            self.sock.setblocking(False)


def _state(payload: memoryview, gone: bool, dumped: bool = False) -> LinkState:
    index, flags = rtnl.link_header(payload)
    attrs = rtnl.link_attrs(payload)
    stats = attrs.get(IFLA_STATS64)
    return LinkState(
        index=index,
        name=nlwire.string(attrs[rtnl.IFLA_IFNAME]),
        mac=rtnl.hw_address(attrs.get(rtnl.IFLA_ADDRESS)),
        up=bool(flags & rtnl.IFF_UP),
        carrier=bool(flags & rtnl.IFF_UP and flags & IFF_LOWER_UP),
        rx_packets=_RX_PACKETS.unpack_from(stats)[0] if stats is not None and len(stats) >= 8 else None,
        gone=gone,
        dumped=dumped,
    )
