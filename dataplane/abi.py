"""The ABI of ebpf/include/abi.h in Python: drop reasons, directions, port modes, map structs.

tests/bpf/test_abi.py checks that every value and struct size here equals the header's.
"""

from __future__ import annotations

import ctypes
import enum

MAX_IFINDEX = 1024
NR_REASONS = 32
MAX_ENDPOINTS = 4096
MAX_RULES = 65536
CT_SIZE = 65536
POLICY_SIZE = 262144
IPCACHE_SIZE = 65536
POLICY_FIXED_BITS = 80
IPCACHE_FIXED_BITS = 16
NR_DIRS = 2
CT_SHARES = MAX_ENDPOINTS * 2  # quota counts: index endpoint * 2 + origin (FwDirection)
PEER_BUCKETS = 256  # peer-quota counts: index endpoint * PEER_BUCKETS + bucket of the peer
CB_VLAN = 0
CB_MIRROR = 1
NO_VLAN = 0xFFFF


class Reason(enum.IntEnum):
    PASS = 0
    NO_PORT = 1
    MALFORMED = 2
    TAGGED_ON_ACCESS = 3
    QINQ = 4
    CONTROL_FRAME = 5
    VLAN_MISMATCH = 6
    VLAN_NOT_ALLOWED = 7
    UNTAGGED = 8
    VLAN_HELPER = 9
    SPOOF_MAC = 10
    SPOOF_IP = 11
    SPOOF_ARP = 12
    DHCP_SERVER = 13
    ROUTER_ADVERT = 14
    POLICY = 15
    CT_INVALID = 16
    CT_FULL = 17
    CT_QUOTA = 18
    ICMP_UNRELATED = 19
    FRAG_TINY = 20
    FRAG_ORPHAN = 21
    FRAG_OVERLAP = 22
    FRAG_DUP = 23
    L3_MALFORMED = 24
    UNSUPPORTED = 25
    ANALYZER_TX = 26
    ANALYZER_RX = 27
    IPV6_CHAIN = 28
    SPOOF_ND = 29
    DST_MAC = 30
    FRAG_REORDERED = 31

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


REASON_TEXT = {
    Reason.PASS: "passed",
    Reason.NO_PORT: "port not configured (fail closed)",
    Reason.MALFORMED: "frame too short for its headers",
    Reason.TAGGED_ON_ACCESS: "802.1Q-tagged frame on an access port or from a guarded vNIC",
    Reason.QINQ: "802.1ad or double-tagged frame",
    Reason.CONTROL_FRAME: "switch-control frame (STP/LLDP/CDP/DTP) from an edge port",
    Reason.VLAN_MISMATCH: "frame of another VLAN towards an access port",
    Reason.VLAN_NOT_ALLOWED: "VLAN not allowed on the trunk",
    Reason.UNTAGGED: "untagged frame on a port that carries none",
    Reason.VLAN_HELPER: "VLAN push/pop helper failed",
    Reason.SPOOF_MAC: "source MAC is not the vNIC's (forged transmit)",
    Reason.SPOOF_IP: "source address is not one of the vNIC's",
    Reason.SPOOF_ARP: "ARP for an address that is not the vNIC's",
    Reason.DHCP_SERVER: "DHCP or DHCPv6 server message from a VM that is no DHCP server",
    Reason.ROUTER_ADVERT: "IPv6 router advertisement, or a redirect from a VM that does not forward",
    Reason.POLICY: "denied by the firewall policy",
    Reason.CT_INVALID: "no connection and not a valid start (lone ACK/FIN/RST, odd flags)",
    Reason.CT_FULL: "connection table full: new flow refused",
    Reason.CT_QUOTA: "the VM's connection quota is used up",
    Reason.ICMP_UNRELATED: "ICMP error about no tracked flow",
    Reason.FRAG_TINY: "first fragment too short for its transport header",
    Reason.FRAG_ORPHAN: "fragment without a first fragment",
    Reason.FRAG_OVERLAP: "overlapping fragment",
    Reason.FRAG_DUP: "duplicate first fragment",
    Reason.L3_MALFORMED: "malformed IP header",
    Reason.UNSUPPORTED: "protocol the firewall does not pass (not IP or ARP)",
    Reason.ANALYZER_TX: "sent by a receive-only analyzer port",
    Reason.ANALYZER_RX: "towards an analyzer port but not a mirror copy",
    Reason.IPV6_CHAIN: "IPv6 extension-header chain too long, out of order, cut or not walkable",
    Reason.SPOOF_ND: "neighbour discovery for an address or MAC that is not the vNIC's",
    Reason.DST_MAC: "unicast frame for another MAC (flooded)",
    Reason.FRAG_REORDERED: "first fragment after later ones (its datagram was lost to reordering)",
}


class FwDirection(enum.IntEnum):
    OUT = 0  # out of the VM
    IN = 1  # into the VM


class Verdict(enum.IntEnum):
    DENY = 0
    ALLOW = 1


class CtState(enum.IntEnum):
    NEW = 1
    ESTABLISHED = 2
    CLOSING = 3


VNIC_F_PORTSEC = 0x1
VNIC_F_FIREWALL = 0x2
VNIC_F_ANY_SOURCE = 0x4
VNIC_F_DHCP_SERVER = 0x8
FRAG_PENDING = 2  # Frag.verdict: later fragments came first
IPV6_MAX_EXT = 8  # extension headers the parser walks; a longer chain is refused (ipv6-chain)


class Direction(enum.IntEnum):
    INGRESS = 0  # into the switch from the port's device
    EGRESS = 1  # out of the switch to the port's device


class Mode(enum.IntEnum):
    UNCONFIGURED = 0
    ACCESS = 1
    TRUNK = 2


PORT_F_UNTAGGED = 0x1
PORT_F_GUARD = 0x2


class Port(ctypes.Structure):
    _fields_ = (
        ("access_vid", ctypes.c_uint16),
        ("mode", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("_pad", ctypes.c_uint32),
        ("allowed", ctypes.c_uint64 * 64),
    )


class Counter(ctypes.Structure):
    _fields_ = (("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64))


def counter_index(ifindex: int, direction: Direction, reason: Reason) -> int:
    return (ifindex * NR_DIRS + direction) * NR_REASONS + reason


# ---- firewall and port security ----
class Vnic(ctypes.Structure):
    _fields_ = (
        ("mac", ctypes.c_uint8 * 6),
        ("endpoint", ctypes.c_uint16),
        ("flags", ctypes.c_uint32),
        ("ip4", ctypes.c_uint8 * 4),  # __be32 in C: the bytes in network order
        ("ip6", ctypes.c_uint8 * 16),
    )


class AddrKey(ctypes.Structure):
    _fields_ = (
        ("ifindex", ctypes.c_uint32),
        ("family", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 3),
        ("addr", ctypes.c_uint8 * 16),
    )


class CtKey(ctypes.Structure):
    _fields_ = (
        ("saddr", ctypes.c_uint8 * 16),
        ("daddr", ctypes.c_uint8 * 16),
        ("sport", ctypes.c_uint16),  # network order
        ("dport", ctypes.c_uint16),
        ("endpoint", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
    )


class CtReap(ctypes.Structure):
    _fields_ = (("key", CtKey), ("force", ctypes.c_uint8), ("_pad", ctypes.c_uint8 * 3))


class CtEntry(ctypes.Structure):
    _fields_ = (
        ("last_seen", ctypes.c_uint64),
        ("rule", ctypes.c_uint32),
        ("generation", ctypes.c_uint32),
        ("state", ctypes.c_uint8),
        ("origin", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 6),
    )


class FragKey(ctypes.Structure):
    _fields_ = (
        ("saddr", ctypes.c_uint8 * 16),
        ("daddr", ctypes.c_uint8 * 16),
        ("id", ctypes.c_uint32),
        ("endpoint", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
    )


class Frag(ctypes.Structure):
    _fields_ = (
        ("last_seen", ctypes.c_uint64),
        ("end", ctypes.c_uint32),
        ("verdict", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 3),
    )


class FwConfig(ctypes.Structure):
    _fields_ = (
        ("generation", ctypes.c_uint32),
        ("ct_quota", ctypes.c_uint32),
        ("timeout_tcp", ctypes.c_uint64),
        ("timeout_tcp_open", ctypes.c_uint64),
        ("timeout_udp", ctypes.c_uint64),
        ("timeout_icmp", ctypes.c_uint64),
        ("timeout_frag", ctypes.c_uint64),
        ("timeout_tcp_close", ctypes.c_uint64),
        ("ct_quota_in", ctypes.c_uint32),
        ("ct_quota_peer", ctypes.c_uint32),
    )


# PolicyKey, PolicyValue and IpcacheKey live in dataplane/lpm.py with the policy encoder.


class FwEvent(ctypes.Structure):
    _fields_ = (
        ("time_ns", ctypes.c_uint64),
        ("saddr", ctypes.c_uint8 * 16),
        ("daddr", ctypes.c_uint8 * 16),
        ("sport", ctypes.c_uint16),  # host order
        ("dport", ctypes.c_uint16),
        ("ifindex", ctypes.c_uint32),
        ("rule", ctypes.c_uint32),
        ("endpoint", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("verdict", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("icmp_type", ctypes.c_uint8),  # of an ICMP packet
    )


# ---- port mirroring ----
MAX_MIRRORS = 64
MIRROR_PER_PORT = 8
TAP_OUT_BEFORE = 0x1
TAP_OUT_AFTER = 0x2
TAP_IN_BEFORE = 0x4
TAP_IN_AFTER = 0x8
MIRROR_PORT_ANALYZER = 0x1
MIRROR_F_PROMISC = 0x1
MIRROR_F_ENCAP = 0x2
MIRROR_F_RX = 0x4
MIRROR_ETHERTYPE = 0x88B5
MIRROR_MAGIC = 0x4E4C4D52
MIRROR_VERSION = 1
MIRROR_DIR_OUT = 1
MIRROR_DIR_IN = 2
MIRROR_MARK = 0x4E4D0000
MIRROR_MARK_MASK = 0xFFFF0000
MIRROR_DELIVER = 0x10000


class MirrorPort(ctypes.Structure):
    _fields_ = (
        ("taps", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("nr", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8),
        ("session", ctypes.c_uint8 * MIRROR_PER_PORT),
    )


class MirrorSession(ctypes.Structure):
    _fields_ = (
        ("ifindex", ctypes.c_uint32),
        ("dest", ctypes.c_uint32),
        ("snaplen", ctypes.c_uint32),
        ("sample", ctypes.c_uint32),
        ("taps", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("dest_mac", ctypes.c_uint8 * 6),
        ("vlan", ctypes.c_uint16),
        ("outer_dst", ctypes.c_uint8 * 6),
        ("outer_src", ctypes.c_uint8 * 6),
        ("_pad", ctypes.c_uint16),
    )


class MirrorTrailer(ctypes.BigEndianStructure):
    _pack_ = 1
    _fields_ = (
        ("inner", ctypes.c_uint8 * 14),
        ("version", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("session", ctypes.c_uint16),
        ("orig_len", ctypes.c_uint32),
        ("magic", ctypes.c_uint32),
    )


class MirrorStats(ctypes.Structure):
    _fields_ = (
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
        ("dropped", ctypes.c_uint64),
        ("skipped", ctypes.c_uint64),
    )
