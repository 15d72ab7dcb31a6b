"""A reference classifier of frames, written from the RFCs and independent of ebpf/include/flow.h:
what the parser must make of a frame (upper-layer protocol, ports, fragment) or why it must
refuse it. The firewall tables read events against it (fwtools.Flow) and the differential test
(test_parser_differential.py) holds the real program to it, frame by frame.

Rules it states (docs: README "What port security guards"):
- IPv6 extension headers are walked to the upper layer: hop-by-hop (first only), routing,
  destination options (length in 8-byte units), AH (4-byte units), one fragment header; at most
  `abi.IPV6_MAX_EXT` of them. A later fragment stops at its fragment header. Mobility, HIP, shim6
  and the experimental 253/254 are refused; ESP, No Next Header and anything else are the upper
  layer. A header past the payload (a first fragment included: RFC 7112) refuses the packet.
- ICMP is protocol 1 in IPv4 and 58 in IPv6 only; the other pairings are "other" protocols.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from dataplane.abi import IPV6_MAX_EXT, Reason

HOPOPTS, ROUTING, FRAGMENT, AH, DSTOPTS = 0, 43, 44, 51, 60
UNWALKED = frozenset({135, 139, 140, 253, 254})
L4_MIN = {6: 20, 17: 8}
ICMP_QUERIES = {1: frozenset({0, 8, 13, 14, 15, 16, 17, 18}), 58: frozenset({128, 129})}
FIRST, LATER, NONE = "first", "later", "none"


@dataclass(frozen=True)
class Parsed:
    """What the parser makes of a frame: `refused` is the reason it refuses it (None: parsed)."""

    refused: Reason | None
    family: int = 0
    proto: int = 0
    src: str = "::"
    dst: str = "::"
    sport: int = 0
    dport: int = 0
    frag: str = NONE
    frag_id: int = 0
    frag_off: int = 0  # bytes
    frag_more: bool = False
    frag_len: int = 0  # bytes of the fragmentable part in this packet
    icmp_type: int | None = None
    l4: bytes = b""  # the upper-layer bytes of this packet (first fragment: its part)


def is_icmp(family: int, proto: int) -> bool:
    return proto == (58 if family == 6 else 1)


def parse(frame: bytes) -> Parsed:
    """The frame (untagged Ethernet) as the parser must see it."""
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x0800:
        return _upper(_ipv4(frame[14:]))
    if ethertype == 0x86DD:
        return _upper(_ipv6(frame[14:]))
    return Parsed(Reason.UNSUPPORTED)


def _ipv4(ip: bytes) -> Parsed:
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[0] & 0xF < 5:
        return Parsed(Reason.L3_MALFORMED)
    hlen, total = (ip[0] & 0xF) * 4, int.from_bytes(ip[2:4], "big")
    if total < hlen or total > len(ip):
        return Parsed(Reason.L3_MALFORMED)
    flags = int.from_bytes(ip[6:8], "big")
    off, more = (flags & 0x1FFF) * 8, bool(flags & 0x2000)
    frag = LATER if off else FIRST if more else NONE
    return Parsed(
        None,
        4,
        ip[9],
        str(IPv4Address(ip[12:16])),
        str(IPv4Address(ip[16:20])),
        frag=frag,
        frag_id=int.from_bytes(ip[4:6], "big"),
        frag_off=off,
        frag_more=more,
        frag_len=total - hlen,
        l4=ip[hlen:total],
    )


def _ipv6(ip: bytes) -> Parsed:
    if len(ip) < 40:
        return Parsed(Reason.L3_MALFORMED)
    end = 40 + int.from_bytes(ip[4:6], "big")
    if ip[0] >> 4 != 6 or end > len(ip):
        return Parsed(Reason.L3_MALFORMED)
    src, dst = str(IPv6Address(ip[8:24])), str(IPv6Address(ip[24:40]))
    chain = Parsed(Reason.IPV6_CHAIN, 6, 0, src, dst)
    nxt, off, walked = ip[6], 40, 0
    frag = dict(frag=NONE, frag_id=0, frag_off=0, frag_more=False)
    frag_start = 0
    while True:
        if nxt in (HOPOPTS, ROUTING, DSTOPTS, AH, FRAGMENT):
            if walked == IPV6_MAX_EXT or (nxt == HOPOPTS and walked):
                return chain
            walked += 1
            if nxt == FRAGMENT:
                if frag_start or off + 8 > end:
                    return chain
                word = int.from_bytes(ip[off + 2 : off + 4], "big")
                fo, more = word & 0xFFF8, bool(word & 1)
                frag = dict(
                    frag=LATER if fo else FIRST if more else NONE,
                    frag_id=int.from_bytes(ip[off + 4 : off + 8], "big"),
                    frag_off=fo,
                    frag_more=more,
                )
                nxt, off = ip[off], off + 8
                frag_start = off
                if frag["frag"] == LATER:
                    break
                continue
            if off + 8 > end:
                return chain
            size = (ip[off + 1] + 2) * 4 if nxt == AH else (ip[off + 1] + 1) * 8
            nxt, off = ip[off], off + size
            if off > end:
                return chain
            continue
        if nxt in UNWALKED:
            return chain
        break
    return Parsed(
        None,
        6,
        nxt,
        src,
        dst,
        frag_len=end - (frag_start or off),
        l4=ip[off:end],
        **frag,  # type: ignore[arg-type]
    )


def _upper(p: Parsed) -> Parsed:
    """Ports, ICMP type and identifier of an unfragmented packet or a first fragment."""
    if p.refused is not None or p.frag == LATER:
        return p
    icmp = is_icmp(p.family, p.proto)
    need = 8 if icmp else L4_MIN.get(p.proto, 0)
    if need == 0:
        return p
    if len(p.l4) < need:
        return _with(p, refused=Reason.FRAG_TINY if p.frag == FIRST else Reason.L3_MALFORMED)
    if not icmp:
        return _with(p, sport=int.from_bytes(p.l4[0:2], "big"), dport=int.from_bytes(p.l4[2:4], "big"))
    ident = int.from_bytes(p.l4[4:6], "big") if p.l4[0] in ICMP_QUERIES[p.proto] else 0
    return _with(p, icmp_type=p.l4[0], sport=ident, dport=ident)


def _with(p: Parsed, **changes: object) -> Parsed:
    return Parsed(**{**p.__dict__, **changes})  # type: ignore[arg-type]
