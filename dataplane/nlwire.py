"""Netlink framing shared by every rtnetlink encoder of the project (no I/O): message headers,
attributes, multipart replies and acks with their extended-ack text.

Layouts follow <linux/netlink.h>: host byte order, every message and attribute padded to 4 bytes.
dataplane/rtnl_tc.py (TC) and netns_lab/kernel/rtnl.py (links, addresses, routes) build on it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

NLMSG_ERROR = 2
NLMSG_DONE = 3
F_REQUEST = 0x1
F_ACK = 0x4
F_CAPPED = 0x100  # in an ack: only the request's header is quoted back
F_ACK_TLVS = 0x200  # in an ack: extended-ack attributes follow
F_DUMP = 0x300
NLMSGERR_ATTR_MSG = 1
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER

HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_ATTR = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")
_ERROR = struct.Struct("=i")


def attr(kind: int, payload: bytes) -> bytes:
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size & 3)


def u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def name(kind: int, value: str) -> bytes:
    """A NUL-terminated string attribute."""
    return attr(kind, value.encode() + b"\0")


def request(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return HEADER.pack(HEADER.size + len(body), kind, flags, seq, 0) + body


def messages(data: memoryview) -> Iterator[tuple[int, int, int, memoryview]]:
    """(type, flags, seq, payload) of each message in one datagram."""
    offset, end = 0, len(data)
    while offset + HEADER.size <= end:
        size, kind, flags, seq, _ = HEADER.unpack_from(data, offset)
        if size < HEADER.size or offset + size > end:
            raise ValueError(f"malformed netlink message (length {size} at offset {offset})")
        yield kind, flags, seq, data[offset + HEADER.size : offset + size]
        offset += (size + 3) & ~3


def attrs(data: memoryview, offset: int) -> dict[int, memoryview]:
    """Attributes from `offset` to the end, by type (nested ones stay packed)."""
    found = {}
    end = len(data)
    while offset + _ATTR.size <= end:
        size, kind = _ATTR.unpack_from(data, offset)
        if size < _ATTR.size:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + _ATTR.size : offset + size]
        offset += (size + 3) & ~3
    return found


def string(value: memoryview) -> str:
    return bytes(value).split(b"\0", 1)[0].decode()


def u32_value(value: memoryview | None) -> int | None:
    return _U32.unpack(value)[0] if value is not None else None


def error(flags: int, payload: memoryview, done: bool = False) -> tuple[int, str]:
    """The errno of an NLMSG_ERROR (0: the ack of a success) or of a dump's NLMSG_DONE, and the
    kernel's extended-ack text. An error quotes the request: its header only when capped."""
    (code,) = _ERROR.unpack_from(payload)
    if not flags & F_ACK_TLVS:
        return -code, ""
    if done:
        quoted = 0
    elif flags & F_CAPPED:
        quoted = HEADER.size
    else:
        quoted = HEADER.unpack_from(payload, _ERROR.size)[0]
    text = attrs(payload, _ERROR.size + quoted).get(NLMSGERR_ATTR_MSG)
    return -code, string(text) if text is not None else ""
