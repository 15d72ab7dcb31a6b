"""The frames of NIC teaming, packed and parsed without I/O: beacons, RARP announcements, ARP
probes of the ARP target and their replies.

A beacon is a broadcast of ethertype 0x88B5 (IEEE 802 local experimental) whose payload is
``NLABTEAM`` then JSON ``{"lab", "host", "vswitch", "member", "seq"}``: a receiver knows which
team and member sent it, and beacons of other hosts' teams are told apart from its own.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

ETH_P_BEACON = 0x88B5
ETH_P_RARP = 0x8035
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
BROADCAST = b"\xff" * 6
MAGIC = b"NLABTEAM"
MIN_FRAME = 60  # without the FCS: shorter frames are padded, as a NIC would
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype, ptype, hlen, plen, op, sha, spa, tha, tpa
ARP_REQUEST, ARP_REPLY, RARP_REQUEST = 1, 2, 3


@dataclass(frozen=True)
class Beacon:
    lab: str
    host: str
    vswitch: str
    member: str
    seq: int


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes, vlan: int | None = None) -> bytes:
    tag = struct.pack("!HH", ETH_P_8021Q, vlan) if vlan is not None else b""
    frame = dst + src + tag + struct.pack("!H", ethertype) + payload
    return frame.ljust(MIN_FRAME, b"\0")


def beacon(b: Beacon, src_mac: str) -> bytes:
    payload = MAGIC + json.dumps(b.__dict__, separators=(",", ":")).encode()
    return _ethernet(BROADCAST, mac_bytes(src_mac), ETH_P_BEACON, payload)


def parse_beacon(frame: bytes) -> Beacon | None:
    """The beacon in an untagged frame, or None when it is not one of ours."""
    if len(frame) < 14 + len(MAGIC) or frame[12:14] != b"\x88\xb5" or frame[14:22] != MAGIC:
        return None
    try:
        data = json.loads(frame[22:].rstrip(b"\0"))
        return Beacon(
            str(data["lab"]), str(data["host"]), str(data["vswitch"]), str(data["member"]), int(data["seq"])
        )
    except (ValueError, KeyError, TypeError):
        return None


def rarp(mac: str, vlan: int | None = None) -> bytes:
    """A RARP request from ``mac`` (what a hypervisor sends so switches learn a moved MAC)."""
    raw = mac_bytes(mac)
    zero = bytes(4)
    body = _ARP.pack(1, 0x0800, 6, 4, RARP_REQUEST, raw, zero, raw, zero)
    return _ethernet(BROADCAST, raw, ETH_P_RARP, body, vlan)


def arp_probe(src_mac: str, src_ip: IPv4Address, target: IPv4Address, vlan: int | None = None) -> bytes:
    """Who has ``target``? From ``src_ip`` (0.0.0.0: an RFC 5227 probe, answered all the same)."""
    raw = mac_bytes(src_mac)
    body = _ARP.pack(1, 0x0800, 6, 4, ARP_REQUEST, raw, src_ip.packed, bytes(6), target.packed)
    return _ethernet(BROADCAST, raw, ETH_P_ARP, body, vlan)


def is_arp_reply(frame: bytes, target: IPv4Address) -> bool:
    """Is this (untagged, as a packet socket hands it over) an ARP reply from ``target``?"""
    if len(frame) < 14 + _ARP.size or frame[12:14] != b"\x08\x06":
        return False
    *_, op, _sha, spa, _tha, _tpa = _ARP.unpack_from(frame, 14)
    return op == ARP_REPLY and spa == target.packed


def is_rarp_from(frame: bytes, mac: str) -> bool:
    """A RARP announcement of ``mac`` (tagged or not)?"""
    offset = 16 if frame[12:14] == b"\x81\x00" else 12
    return frame[offset : offset + 2] == b"\x80\x35" and frame[6:12] == mac_bytes(mac)
