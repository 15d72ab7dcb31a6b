"""Attach and detach programs on the clsact hooks of a port, over a raw rtnetlink socket.

Callers pass a NETLINK_ROUTE socket opened inside the port's namespace (netns_lab hands one out
with `Netlink.tc_socket()`): dataplane knows ports and ifindexes, not namespaces or topologies.
Requests are packed by rtnl_tc and sent one at a time with NLM_F_ACK; each call returns when
the kernel has answered, and a refusal raises TcError naming the port and the hook.
bcc never detaches TC filters: this module does.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
from collections.abc import Iterator
from typing import Literal

from dataplane import nlwire, rtnl_tc

Hook = Literal["ingress", "egress"]
PARENT: dict[Hook, int] = {"ingress": rtnl_tc.INGRESS, "egress": rtnl_tc.EGRESS}
HANDLE = 1  # one filter per hook: replacing it is atomic for packets in flight
PRIO = 1
_RECV_SIZE = 65536  # a dump datagram is at most ~32 KiB
_seq = itertools.count(1)  # per process, so replies match their request whichever socket is used


class TcError(OSError):
    """The kernel refused a tc request: errno, and what was asked (with the kernel's reason)."""


def add_clsact(sock: socket.socket, ifindex: int) -> None:
    """Give the port its clsact qdisc; one that is already there is kept (NLM_F_CREATE, no EXCL)."""
    what = f"cannot add clsact to ifindex {ifindex}"
    _call(sock, rtnl_tc.RTM_NEWQDISC, rtnl_tc.F_CREATE, rtnl_tc.clsact(ifindex), what)


def attach(sock: socket.socket, ifindex: int, hook: Hook, fd: int, name: str) -> None:
    """Attach the direct-action program `fd` on a hook of the port (its clsact must exist).

    A program already there under the same handle is replaced in one step (NLM_F_REPLACE):
    every packet sees the old program or the new one, never none.
    """
    body = rtnl_tc.bpf_filter(ifindex, PARENT[hook], HANDLE, PRIO, fd, name)
    what = f"cannot attach {name} to {hook} of ifindex {ifindex}"
    _call(sock, rtnl_tc.RTM_NEWTFILTER, rtnl_tc.F_CREATE | rtnl_tc.F_REPLACE, body, what)


def detach(sock: socket.socket, ifindex: int) -> None:
    """Remove the clsact qdisc and with it every filter on both hooks; fine if already gone."""
    what = f"cannot remove clsact from ifindex {ifindex}"
    try:
        _call(sock, rtnl_tc.RTM_DELQDISC, 0, rtnl_tc.clsact(ifindex), what)
    except TcError as err:
        if err.errno not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            raise


def attached(sock: socket.socket, ifindex: int, hook: Hook) -> list[str]:
    """Names of the programs on a hook ([] when the port has no clsact or no longer exists)."""
    body = rtnl_tc.filter_dump(ifindex, PARENT[hook])
    what = f"cannot list the filters on {hook} of ifindex {ifindex}"
    replies = _exchange(sock, rtnl_tc.RTM_GETTFILTER, nlwire.F_DUMP, body, what)
    names = (rtnl_tc.bpf_program_name(payload) for kind, payload in replies if kind == rtnl_tc.RTM_NEWTFILTER)
    return [name for name in names if name is not None]


def _call(sock: socket.socket, kind: int, flags: int, body: bytes, what: str) -> None:
    for _ in _exchange(sock, kind, flags | nlwire.F_ACK, body, what):
        pass


Reply = tuple[int, memoryview]  # (message type, payload)


def _exchange(sock: socket.socket, kind: int, flags: int, body: bytes, what: str) -> Iterator[Reply]:
    """Send one request; yield (type, payload) of its answers until the ack or NLMSG_DONE.

    A payload is valid only until the next one is asked for (the buffer is reused).
    """
    seq = next(_seq)
    sock.send(rtnl_tc.request(kind, flags, seq, body))
    buf = bytearray(_RECV_SIZE)
    while True:
        size = sock.recv_into(buf, 0, socket.MSG_TRUNC)  # EINTR is retried by Python (PEP 475)
        if size > len(buf):
            raise TcError(errno.EMSGSIZE, f"{what}: reply of {size} bytes truncated")
        for mtype, mflags, mseq, payload in nlwire.messages(memoryview(buf)[:size]):
            if mseq != seq:
                continue  # the late answer of a request interrupted before its ack
            if mtype in (nlwire.NLMSG_ERROR, nlwire.NLMSG_DONE):
                code, detail = nlwire.error(mflags, payload, done=mtype == nlwire.NLMSG_DONE)
                if code:
                    raise TcError(code, f"{what}: {os.strerror(code)}" + (f" ({detail})" if detail else ""))
                return
            yield mtype, payload
