"""rtnetlink wire format: the requests netlink.py sends, packed with struct, and its replies unpacked.

No I/O here. Layouts follow <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h> and
<linux/if_addr.h>: headers and attributes in host byte order, addresses in network order, every
attribute padded to 4 bytes. struct is used instead of pyroute2's message classes because a
veth request packs far faster with it than through `ifinfmsg.encode()` (README, Performance).
"""

from __future__ import annotations

import struct
from ipaddress import IPv6Address, ip_address, ip_interface

from dataplane.nlwire import attr, attrs, name, string, u32  # the framing shared with dataplane/rtnl_tc.py

# nlmsghdr types and flags
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
F_MULTI = 0x2  # part of a multipart answer (a dump)
F_ECHO = 0x8
F_DUMP_INTR = 0x10  # the dumped table changed while it was read
F_EXCL = 0x200
F_CREATE = 0x400

# socket options (SOL_NETLINK)
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

IFF_UP = 0x1
LOOPBACK_INDEX = 1  # lo is registered first in every namespace (LOOPBACK_IFINDEX)

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_INFO_SLAVE_KIND = 4
IFLA_INFO_SLAVE_DATA = 5
IFLA_BRPORT_FLUSH = 24  # a flag: forget the dynamic FDB entries learned on the port
VETH_INFO_PEER = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3  # replies without the ~1 kB of counters we never read
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_GATEWAY = 5

RT_TABLE_MAIN = 254
RTPROT_STATIC = 4  # what pyroute2 sent before: routes the lab adds show as `proto static`
RTN_UNICAST = 1
AF_INET, AF_INET6 = 2, 10

_IFINFO = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type, flags


# -- packing -----------------------------------------------------------------------------------
def mac(value: str) -> bytes:
    return attr(IFLA_ADDRESS, bytes.fromhex(value.replace(":", "")))


def ifinfo(index: int = 0, up: bool = False, attrs: bytes = b"") -> bytes:
    """An ifinfomsg; `up` sets IFF_UP, otherwise the device's flags are left as they are."""
    flags = IFF_UP if up else 0
    return _IFINFO.pack(0, 0, index, flags, flags) + attrs


def ifinfo_down(index: int, attrs: bytes) -> bytes:
    """An ifinfomsg that clears IFF_UP (`ifinfo` can only set it)."""
    return _IFINFO.pack(0, 0, index, 0, IFF_UP) + attrs


def brport_flush() -> bytes:
    """IFLA_LINKINFO asking a bridge port's master to flush what it learned there."""
    data = attr(IFLA_BRPORT_FLUSH, b"")
    return attr(IFLA_LINKINFO, name(IFLA_INFO_SLAVE_KIND, "bridge") + attr(IFLA_INFO_SLAVE_DATA, data))


def link_ref(index: int, ifname: str) -> tuple[int, bytes]:
    """Name a device by index when known, else by IFLA_IFNAME (the kernel resolves it: no lookup)."""
    return (index, b"") if index else (0, name(IFLA_IFNAME, ifname))


def veth(ifname: str, peer: str, peer_ns_fd: int, peer_mac: str | None, master: int, up: bool) -> bytes:
    """RTM_NEWLINK body of a veth pair whose peer is born in the namespace behind `peer_ns_fd`.

    The peer's own ifinfomsg stays without IFF_UP: veth_open() refuses with ENOTCONN until the
    pair is tied together, which happens only after the peer is configured.
    """
    peer_attrs = name(IFLA_IFNAME, peer) + u32(IFLA_NET_NS_FD, peer_ns_fd)
    if peer_mac:
        peer_attrs += mac(peer_mac)
    data = attr(VETH_INFO_PEER, ifinfo(attrs=peer_attrs))
    info = name(IFLA_INFO_KIND, "veth") + attr(IFLA_INFO_DATA, data)
    attrs = name(IFLA_IFNAME, ifname) + attr(IFLA_LINKINFO, info)
    if master:
        attrs += u32(IFLA_MASTER, master)
    return ifinfo(up=up, attrs=attrs)


def bridge(ifname: str, up: bool) -> bytes:
    info = name(IFLA_INFO_KIND, "bridge")
    return ifinfo(up=up, attrs=name(IFLA_IFNAME, ifname) + attr(IFLA_LINKINFO, info))


def get_link(ifname: str) -> bytes:
    return ifinfo(attrs=name(IFLA_IFNAME, ifname) + u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))


def dump_links() -> bytes:
    return ifinfo(attrs=u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))


def address(index: int, ifaddr: str) -> bytes:
    """RTM_NEWADDR body: IFA_LOCAL and IFA_ADDRESS for IPv4 (as ip(8)), IFA_ADDRESS for IPv6."""
    iface = ip_interface(ifaddr)
    family = AF_INET6 if iface.version == 6 else AF_INET
    packed = iface.ip.packed
    attrs = attr(IFA_ADDRESS, packed)
    if family == AF_INET:
        attrs = attr(IFA_LOCAL, packed) + attrs
    return _IFADDR.pack(family, iface.network.prefixlen, 0, 0, index) + attrs


def route(dst: str | None, gateway: str) -> bytes:
    """RTM_NEWROUTE body of a unicast route in the main table; `dst` None is the default route."""
    via = ip_address(gateway)
    family = AF_INET6 if isinstance(via, IPv6Address) else AF_INET
    attrs, dst_len = b"", 0
    if dst is not None:
        target = ip_interface(dst)
        attrs, dst_len = attr(RTA_DST, target.ip.packed), target.network.prefixlen
    attrs += attr(RTA_GATEWAY, via.packed)
    return _RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, 0, RTN_UNICAST, 0) + attrs


# -- unpacking ---------------------------------------------------------------------------------
def link_header(payload: memoryview) -> tuple[int, int]:
    """(ifindex, flags) of an RTM_NEWLINK message."""
    _, _, index, flags, _ = _IFINFO.unpack_from(payload)
    return index, flags


def link_attrs(payload: memoryview) -> dict[int, memoryview]:
    return attrs(payload, _IFINFO.size)


def link_kind(linkinfo: memoryview | None) -> str | None:
    kind = attrs(linkinfo, 0).get(IFLA_INFO_KIND) if linkinfo is not None else None
    return string(kind) if kind is not None else None


def hw_address(value: memoryview | None) -> str | None:
    return ":".join(f"{b:02x}" for b in value) if value is not None else None
