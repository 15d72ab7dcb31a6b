"""TC over rtnetlink, wire format: the clsact and cls_bpf requests tc.py sends, and their replies.

No I/O here. Layouts follow <linux/netlink.h>, <linux/rtnetlink.h>, <linux/pkt_sched.h> and
<linux/pkt_cls.h>: headers and attributes in host byte order, the protocol in tcm_info in
network order, every attribute padded to 4 bytes. netns_lab/kernel/rtnl.py frames link requests
the same way; the few framing helpers are repeated here because dataplane/ never imports netns_lab.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

# nlmsghdr types and flags
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWQDISC = 36
RTM_DELQDISC = 37
RTM_NEWTFILTER = 44
RTM_GETTFILTER = 46
F_REQUEST = 0x1
F_ACK = 0x4
F_REPLACE = 0x100
F_CREATE = 0x400
F_DUMP = 0x300
F_CAPPED = 0x100  # in an ack: only the request's header is quoted back
F_ACK_TLVS = 0x200  # in an ack: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER

TCA_KIND = 1
TCA_OPTIONS = 2
TCA_BPF_FD = 6
TCA_BPF_NAME = 7
TCA_BPF_FLAGS = 8
TCA_BPF_FLAG_ACT_DIRECT = 1 << 0  # the program's return value is the verdict: no action needed

TC_H_CLSACT = 0xFFFFFFF1  # the qdisc's parent (shared with TC_H_INGRESS)
CLSACT_HANDLE = 0xFFFF0000  # TC_H_MAKE(TC_H_CLSACT, 0), "ffff:" in tc(8)
INGRESS = 0xFFFFFFF2  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS), "ffff:fff2"
EGRESS = 0xFFFFFFF3  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS), "ffff:fff3"
ETH_P_ALL = 0x0003

_HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_TCMSG = struct.Struct("=BxxxiIII")  # family, (pad), ifindex, handle, parent, info
_ATTR = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")
_ERROR = struct.Struct("=i")


# -- packing -----------------------------------------------------------------------------------
def _attr(kind: int, payload: bytes) -> bytes:
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size & 3)


def _string(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, _U32.pack(value))


def request(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _HEADER.pack(_HEADER.size + len(body), kind, F_REQUEST | flags, seq, 0) + body


def clsact(ifindex: int) -> bytes:
    """RTM_NEWQDISC / RTM_DELQDISC body of the port's clsact qdisc (as `tc qdisc add dev X clsact`)."""
    return _TCMSG.pack(0, ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0) + _string(TCA_KIND, "clsact")


def bpf_filter(ifindex: int, parent: int, handle: int, prio: int, fd: int, name: str) -> bytes:
    """RTM_NEWTFILTER body: program `fd` in direct-action mode, for every protocol, at `prio`."""
    info = prio << 16 | socket.htons(ETH_P_ALL)  # TC_H_MAKE(prio << 16, protocol in network order)
    options = _u32(TCA_BPF_FD, fd) + _string(TCA_BPF_NAME, name)
    options += _u32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT)
    attrs = _string(TCA_KIND, "bpf") + _attr(TCA_OPTIONS, options)
    return _TCMSG.pack(0, ifindex, handle, parent, info) + attrs


def filter_dump(ifindex: int, parent: int) -> bytes:
    """RTM_GETTFILTER dump body: the filters of one hook of a port."""
    return _TCMSG.pack(0, ifindex, 0, parent, 0)


# -- unpacking ---------------------------------------------------------------------------------
def messages(data: memoryview) -> Iterator[tuple[int, int, int, memoryview]]:
    """(type, flags, seq, payload) of each message in one datagram."""
    offset, end = 0, len(data)
    while offset + _HEADER.size <= end:
        size, kind, flags, seq, _ = _HEADER.unpack_from(data, offset)
        if size < _HEADER.size or offset + size > end:
            raise ValueError(f"malformed netlink message (length {size} at offset {offset})")
        yield kind, flags, seq, data[offset + _HEADER.size : offset + size]
        offset += (size + 3) & ~3


def _attrs(data: memoryview, offset: int) -> dict[int, memoryview]:
    found = {}
    end = len(data)
    while offset + _ATTR.size <= end:
        size, kind = _ATTR.unpack_from(data, offset)
        if size < _ATTR.size:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + _ATTR.size : offset + size]
        offset += (size + 3) & ~3
    return found


def _text(value: memoryview) -> str:
    return bytes(value).split(b"\0", 1)[0].decode()


def error(flags: int, payload: memoryview, done: bool = False) -> tuple[int, str]:
    """The errno of an NLMSG_ERROR (0: the ack of a success) or of a dump's NLMSG_DONE, and the
    kernel's extended-ack text. An error quotes the request: its header only when capped."""
    (code,) = _ERROR.unpack_from(payload)
    if not flags & F_ACK_TLVS:
        return -code, ""
    if done:
        quoted = 0
    elif flags & F_CAPPED:
        quoted = _HEADER.size
    else:
        quoted = _HEADER.unpack_from(payload, _ERROR.size)[0]
    text = _attrs(payload, _ERROR.size + quoted).get(NLMSGERR_ATTR_MSG)
    return -code, _text(text) if text is not None else ""


def bpf_program_name(payload: memoryview) -> str | None:
    """The TCA_BPF_NAME of an RTM_NEWTFILTER message, None for other kinds and for the entry
    that stands for the filter chain itself (it has no options)."""
    attrs = _attrs(payload, _TCMSG.size)
    kind, options = attrs.get(TCA_KIND), attrs.get(TCA_OPTIONS)
    if kind is None or _text(kind) != "bpf" or options is None:
        return None
    name = _attrs(options, 0).get(TCA_BPF_NAME)
    return _text(name) if name is not None else None
