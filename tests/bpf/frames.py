"""Frames for the VLAN program tests, built with scapy and named by what they are.

A tagged frame is its untagged base with tags inserted after the MAC addresses, so the
expected output of an egress pop is simply the base frame (`UNTAGGED_OF`). Names:
`<base>.v<vid>` one 802.1Q tag, `.ad<vid>` an 802.1ad tag, outermost first; `cut.*` frames
end inside their tag.
"""

from __future__ import annotations

from scapy.contrib.cdp import CDPMsgDeviceID, CDPv2_HDR
from scapy.contrib.lacp import LACP, SlowProtocol
from scapy.contrib.lldp import LLDPDUChassisID, LLDPDUEndOfLLDPDU, LLDPDUPortID, LLDPDUTimeToLive
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, LLC, SNAP, STP, Dot1AD, Dot1Q, Dot3, Ether
from scapy.packet import Packet, Raw, raw

VM = "02:00:00:00:0a:01"
PEER = "02:00:00:00:0a:02"
BROADCAST = "ff:ff:ff:ff:ff:ff"
TPID_8021Q, TPID_8021AD = 0x8100, 0x88A8

# Destination addresses a guarded port refuses (parsing.h: is_control_frame)
STP_MAC = "01:80:c2:00:00:00"
LACP_MAC = "01:80:c2:00:00:02"
LLDP_MAC = "01:80:c2:00:00:0e"
CISCO_MAC = "01:00:0c:cc:cc:cc"  # CDP, DTP, VTP
PVST_MAC = "01:00:0c:cc:cc:cd"


def _snap(dst: str, code: int, payload: Packet) -> Packet:
    return Dot3(dst=dst, src=VM) / LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0x00000C, code=code) / payload


BASES: dict[str, Packet] = {
    "ipv4": Ether(dst=PEER, src=VM)
    / IP(src="10.0.10.1", dst="10.0.10.2")
    / UDP(sport=4000, dport=5000)
    / Raw(b"x" * 18),
    "arp": Ether(dst=BROADCAST, src=VM) / ARP(hwsrc=VM, psrc="10.0.10.1", pdst="10.0.10.2"),
    "ipv6": Ether(dst="33:33:00:00:00:01", src=VM) / IPv6(src="fe80::1", dst="ff02::1") / ICMPv6EchoRequest(),
    # 14 bytes, a header and nothing else; not IPv4/IPv6: test-run refuses those when their
    # network header does not fit (EINVAL)
    "eth-only": Ether(dst=PEER, src=VM, type=0x88B5),
    "stp": Dot3(dst=STP_MAC, src=VM) / LLC() / STP(),
    "lacp": Ether(dst=LACP_MAC, src=VM) / SlowProtocol() / LACP(),
    "lldp": Ether(dst=LLDP_MAC, src=VM)
    / LLDPDUChassisID(subtype=4, id=VM)
    / LLDPDUPortID(subtype=5, id="eth0")
    / LLDPDUTimeToLive(ttl=120)
    / LLDPDUEndOfLLDPDU(),
    "cdp": _snap(CISCO_MAC, 0x2000, CDPv2_HDR(msg=[CDPMsgDeviceID(val=b"sw1")])),
    "dtp": _snap(CISCO_MAC, 0x2004, Raw(b"\x01\x00\x01\x00\x0a" + b"lab" + b"\x00" * 2)),
    "pvst": _snap(PVST_MAC, 0x010B, STP()),
    # group addresses just outside the guarded ranges: ordinary multicast
    "gvrp": Dot3(dst="01:80:c2:00:00:21", src=VM) / LLC(dsap=0x42, ssap=0x42, ctrl=3) / Raw(b"\x00\x01"),
    "cisco-other": _snap("01:00:0c:cc:cc:ce", 0x2000, Raw(b"\x00" * 8)),
}


def tagged(base: str, *tags: tuple[int, int], prio: int = 0) -> Packet:
    """`base` with `tags` ((tpid, vid), outermost first) inserted after its MAC addresses."""
    frame = raw(BASES[base])
    pkt: Packet = Ether(dst=frame[0:6], src=frame[6:12], type=tags[0][0])
    for i, (tpid, vid) in enumerate(tags):
        inner_type = tags[i + 1][0] if i + 1 < len(tags) else int.from_bytes(frame[12:14], "big")
        layer = Dot1Q if tpid == TPID_8021Q else Dot1AD
        pkt = pkt / layer(prio=prio if i == 0 else 0, vlan=vid, type=inner_type)
    return pkt / Raw(frame[14:]) if len(frame) > 14 else pkt


def _q(vid: int) -> tuple[int, int]:
    return (TPID_8021Q, vid)


def _ad(vid: int) -> tuple[int, int]:
    return (TPID_8021AD, vid)


_TAGGED: dict[str, Packet] = {
    "ipv4.v10": tagged("ipv4", _q(10)),
    "arp.v10": tagged("arp", _q(10)),
    "ipv6.v10": tagged("ipv6", _q(10)),
    "ipv4.v10.prio5": tagged("ipv4", _q(10), prio=5),
    "eth-only.v10": tagged("eth-only", _q(10)),  # 18 bytes: the tag complete, nothing after
    "stp.v10": tagged("stp", _q(10)),
    "lldp.v30": tagged("lldp", _q(30)),
    "ipv4.v20": tagged("ipv4", _q(20)),
    "ipv6.v20": tagged("ipv6", _q(20)),
    "ipv4.v30": tagged("ipv4", _q(30)),
    "ipv4.v0": tagged("ipv4", _q(0)),  # priority tag
    "ipv4.v1": tagged("ipv4", _q(1)),
    "ipv4.v2": tagged("ipv4", _q(2)),
    "ipv4.v62": tagged("ipv4", _q(62)),
    "ipv4.v63": tagged("ipv4", _q(63)),
    "ipv4.v64": tagged("ipv4", _q(64)),
    "ipv4.v65": tagged("ipv4", _q(65)),
    "ipv4.v4094": tagged("ipv4", _q(4094)),
    "ipv4.v4095": tagged("ipv4", _q(4095)),
    "ipv4.v10.v20": tagged("ipv4", _q(10), _q(20)),
    "ipv4.v10.ad20": tagged("ipv4", _q(10), _ad(20)),
    "ipv4.ad10": tagged("ipv4", _ad(10)),
    "ipv4.ad100.v10": tagged("ipv4", _ad(100), _q(10)),
}

FRAMES: dict[str, bytes] = {name: raw(pkt) for name, pkt in {**BASES, **_TAGGED}.items()}
FRAMES |= {
    "cut.v14": raw(Ether(dst=PEER, src=VM, type=TPID_8021Q)),  # the TPID, then nothing
    "cut.v16": raw(Ether(dst=PEER, src=VM, type=TPID_8021Q) / Raw(b"\x00\x0a")),  # TCI only
    "cut.v17": raw(Ether(dst=PEER, src=VM, type=TPID_8021Q) / Raw(b"\x00\x0a\x08")),
    "cut.ad16": raw(Ether(dst=PEER, src=VM, type=TPID_8021AD) / Raw(b"\x00\x0a")),
    # a complete 802.1Q tag announcing a second one that never comes: a double tag first
    "cut.v10.v": raw(Ether(dst=PEER, src=VM, type=TPID_8021Q) / Dot1Q(vlan=10, type=TPID_8021Q)),
}

# What an access port's egress pop must turn a tagged frame into
UNTAGGED_OF = {
    "ipv4.v10": "ipv4",
    "arp.v10": "arp",
    "ipv6.v10": "ipv6",
    "ipv4.v10.prio5": "ipv4",
    "eth-only.v10": "eth-only",
    "stp.v10": "stp",
}
