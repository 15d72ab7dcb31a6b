"""The NIC firewall and port security (ebpf/include/abi/fw.h): vNICs, conntrack, fragments,
settings, the policy and ipcache LPM keys, events."""

from __future__ import annotations

import ctypes
import enum

MAX_ENDPOINTS = 4096
MAX_RULES = 65536
CT_SIZE = 65536
POLICY_SIZE = 262144
IPCACHE_SIZE = 65536
CT_SHARES = MAX_ENDPOINTS * 2  # quota counts: index endpoint * 2 + origin (FwDirection)
PEER_BUCKETS = 256  # peer-quota counts: index endpoint * PEER_BUCKETS + bucket of the peer
IPV6_MAX_EXT = 8  # extension headers the parser walks; a longer chain is refused (ipv6-chain)
POLICY_FIXED_BITS = 80  # gen, direction, proto, pad, endpoint, identity: always fully covered
IPCACHE_FIXED_BITS = 16  # gen and family: always fully covered
IDENTITY_ANY = 0xFFFFFFFF  # the identity of policy rows that hold for any peer
FRAG_PENDING = 2  # Frag.verdict: later fragments came first
VNIC_F_PORTSEC = 0x1
VNIC_F_FIREWALL = 0x2
VNIC_F_ANY_SOURCE = 0x4
VNIC_F_DHCP_SERVER = 0x8


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


REAP_REWRITTEN = 2  # CtReap.force: bump the key's endpoint's deletion epoch, delete nothing


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


class FcEntry(ctypes.Structure):
    _fields_ = (
        ("key", ctypes.c_uint64 * 5),
        ("tick", ctypes.c_uint64),
        ("generation", ctypes.c_uint32),
        ("epoch", ctypes.c_uint32),
        ("state", ctypes.c_uint8),
        ("reply", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 6),
    )


class PcEntry(ctypes.Structure):
    _fields_ = (
        ("key", ctypes.c_uint64 * 4),
        ("tick", ctypes.c_uint64),
        ("rule", ctypes.c_uint32),
        ("verdict", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 3),
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


# The LPM keys are in network order after `prefixlen` (the trie compares bytes in order).
_be16 = ctypes.c_uint16.__ctype_be__
_be32 = ctypes.c_uint32.__ctype_be__


class IpcacheKey(ctypes.Structure):
    _pack_ = 1
    _fields_ = (
        ("prefixlen", ctypes.c_uint32),
        ("gen", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("addr", ctypes.c_uint8 * 16),
    )


class IpcacheValue(ctypes.Structure):
    _fields_ = (("identity", ctypes.c_uint32),)


class PolicyKey(ctypes.Structure):
    _pack_ = 1
    _fields_ = (
        ("prefixlen", ctypes.c_uint32),
        ("gen", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8),
        ("endpoint", _be16),
        ("identity", _be32),
        ("port", _be16),
    )


class PolicyValue(ctypes.Structure):
    _fields_ = (
        ("rule", ctypes.c_uint32),
        ("verdict", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 3),
        ("rank", ctypes.c_uint64),
    )


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
