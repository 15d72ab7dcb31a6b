"""A small, fast decoder of Ethernet frames for the live view (`nlab watch`).

Ethernet, 802.1Q/802.1ad tags, ARP, IPv4, IPv6 with its extension headers, TCP (with flags),
UDP, ICMP and ICMPv6 (types by name). Pure stdlib and a few `struct` calls per frame: scapy
is slow to import and dissects each packet far too slowly for a mirrored stream.

A truncated or malformed frame never raises: what could be read is returned and `info` says
`truncated`.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

ETH_P_IP, ETH_P_IPV6, ETH_P_ARP = 0x0800, 0x86DD, 0x0806
VLAN_TPIDS = (0x8100, 0x88A8)
TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
ICMP_TYPES = {
    0: "echo-reply",
    3: "dest-unreach",
    4: "source-quench",
    5: "redirect",
    8: "echo-request",
    11: "time-exceeded",
    12: "param-problem",
    13: "timestamp",
    14: "timestamp-reply",
}
ICMP6_TYPES = {
    1: "dest-unreach",
    2: "packet-too-big",
    3: "time-exceeded",
    4: "param-problem",
    128: "echo-request",
    129: "echo-reply",
    130: "mld-query",
    131: "mld-report",
    133: "router-solicit",
    134: "router-advert",
    135: "neighbor-solicit",
    136: "neighbor-advert",
    137: "redirect",
    143: "mldv2-report",
}
# Extension headers whose length is (byte 1 + 1) * 8; AH counts in 4-byte units (byte 1 + 2) * 4.
IPV6_EXT = {0, 43, 60, 135, 139, 140}
IPV6_FRAGMENT, IPV6_AH, IPV6_ESP, IPV6_NONE = 44, 51, 50, 59
IPV6_MAX_EXT = 8  # dataplane.abi.IPV6_MAX_EXT (this module stays stdlib-only)
ECHO_TYPES = {1: (0, 8), 58: (128, 129)}  # echo reply and request: they carry an id and a sequence
IP_PROTOS = {
    1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah", 58: "icmpv6", 132: "sctp",
}  # fmt: skip


@dataclass(slots=True)
class Decoded:
    length: int
    src_mac: str = ""
    dst_mac: str = ""
    vlans: list[int] = field(default_factory=list)
    proto: str = "eth"
    src: str | None = None
    dst: str | None = None
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_id: int | None = None  # of an echo request or reply
    info: str = ""

    def endpoints(self) -> str:
        if self.src is None:
            return f"{self.src_mac} -> {self.dst_mac}"
        left = _hostport(self.src, self.sport)
        return f"{left} -> {_hostport(self.dst or '?', self.dport)}"

    def summary(self) -> str:
        """One line like `tcp 10.0.0.1:1234 -> 10.0.0.2:80 SYN` (what a mirror JSON record carries)."""
        tag = f"vlan {','.join(map(str, self.vlans))} " if self.vlans else ""
        info = f" {self.info}" if self.info else ""
        return f"{tag}{self.proto} {self.endpoints()}{info} len {self.length}"


def _hostport(addr: str, port: int | None) -> str:
    if port is None:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def mac(raw: bytes) -> str:
    return raw.hex(":")


def decode(frame: bytes) -> Decoded:
    """Decode one Ethernet frame (its VLAN tags, if any, in the bytes)."""
    d = Decoded(length=len(frame))
    if len(frame) < 14:
        d.info = "truncated"
        return d
    d.dst_mac, d.src_mac = mac(frame[0:6]), mac(frame[6:12])
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    offset = 14
    while ethertype in VLAN_TPIDS:
        if len(frame) < offset + 4:
            d.info = "truncated"
            return d
        tci, ethertype = struct.unpack_from("!HH", frame, offset)
        d.vlans.append(tci & 0x0FFF)
        offset += 4
    _network(d, frame, offset, ethertype)
    return d


def _network(d: Decoded, frame: bytes, offset: int, ethertype: int) -> None:
    if ethertype == ETH_P_IP:
        _ipv4(d, frame, offset)
    elif ethertype == ETH_P_IPV6:
        _ipv6(d, frame, offset)
    elif ethertype == ETH_P_ARP:
        _arp(d, frame, offset)
    else:
        d.proto = f"0x{ethertype:04x}"


def _arp(d: Decoded, frame: bytes, offset: int) -> None:
    d.proto = "arp"
    if len(frame) < offset + 28:
        d.info = "truncated"
        return
    op = struct.unpack_from("!H", frame, offset + 6)[0]
    sender, target = frame[offset + 14 : offset + 18], frame[offset + 24 : offset + 28]
    d.src, d.dst = socket.inet_ntop(socket.AF_INET, sender), socket.inet_ntop(socket.AF_INET, target)
    d.info = {1: f"who-has {d.dst}", 2: f"{d.src} is-at {mac(frame[offset + 8 : offset + 14])}"}.get(
        op, f"op {op}"
    )


def _ipv4(d: Decoded, frame: bytes, offset: int) -> None:
    d.proto = "ipv4"
    if len(frame) < offset + 20:
        d.info = "truncated"
        return
    ihl = (frame[offset] & 0x0F) * 4
    frag, proto = struct.unpack_from("!H", frame, offset + 6)[0], frame[offset + 9]
    d.src = socket.inet_ntop(socket.AF_INET, frame[offset + 12 : offset + 16])
    d.dst = socket.inet_ntop(socket.AF_INET, frame[offset + 16 : offset + 20])
    d.proto = IP_PROTOS.get(proto, f"ip/{proto}")
    if ihl < 20:
        d.info = "bad header length"
    elif frag & 0x1FFF:  # a later fragment: no transport header in it
        d.info = f"fragment offset {(frag & 0x1FFF) * 8}"
    else:
        _transport(d, frame, offset + ihl, proto)
        if frag & 0x2000:
            d.info = f"{d.info} first-fragment".strip()


def _ipv6(d: Decoded, frame: bytes, offset: int) -> None:
    d.proto = "ipv6"
    if len(frame) < offset + 40:
        d.info = "truncated"
        return
    d.src = socket.inet_ntop(socket.AF_INET6, frame[offset + 8 : offset + 24])
    d.dst = socket.inet_ntop(socket.AF_INET6, frame[offset + 24 : offset + 40])
    nxt, offset = frame[offset + 6], offset + 40
    for _ in range(IPV6_MAX_EXT):  # the dataplane's bound: it refuses longer chains (ipv6-chain)
        if nxt in IPV6_EXT or nxt == IPV6_AH:
            if len(frame) < offset + 2:
                d.info = "truncated"
                return
            size = (frame[offset + 1] + 2) * 4 if nxt == IPV6_AH else (frame[offset + 1] + 1) * 8
            nxt, offset = frame[offset], offset + size
        elif nxt == IPV6_FRAGMENT:
            if len(frame) < offset + 8:
                d.info = "truncated"
                return
            frag = struct.unpack_from("!H", frame, offset + 2)[0]
            if frag & 0xFFF8:
                d.proto = IP_PROTOS.get(frame[offset], f"ip/{frame[offset]}")
                d.info = f"fragment offset {frag & 0xFFF8}"
                return
            nxt, offset = frame[offset], offset + 8
        else:
            break
    d.proto = IP_PROTOS.get(nxt, f"ip/{nxt}")
    if nxt in IPV6_EXT or nxt in (IPV6_AH, IPV6_FRAGMENT):
        d.info = f"extension-header chain longer than {IPV6_MAX_EXT}"
        return
    if nxt not in (IPV6_NONE, IPV6_ESP):
        _transport(d, frame, offset, nxt)


def _transport(d: Decoded, frame: bytes, offset: int, proto: int) -> None:
    if proto == 6:
        if len(frame) < offset + 14:
            d.info = "truncated"
            return
        d.sport, d.dport = struct.unpack_from("!HH", frame, offset)
        flags = frame[offset + 13]
        d.info = ",".join(name for bit, name in enumerate(TCP_FLAGS) if flags & (1 << bit)) or "none"
    elif proto == 17:
        if len(frame) < offset + 4:
            d.info = "truncated"
            return
        d.sport, d.dport = struct.unpack_from("!HH", frame, offset)
    elif proto in (1, 58):
        if len(frame) < offset + 2:
            d.info = "truncated"
            return
        kind, code = frame[offset], frame[offset + 1]
        d.icmp_type = kind
        name = (ICMP_TYPES if proto == 1 else ICMP6_TYPES).get(kind, f"type {kind}")
        d.info = name if code == 0 else f"{name} code {code}"
        if kind in ECHO_TYPES[proto] and len(frame) >= offset + 8:
            ident, seq = struct.unpack_from("!HH", frame, offset + 4)
            d.icmp_id = ident
            d.info = f"{name} id {ident} seq {seq}"
