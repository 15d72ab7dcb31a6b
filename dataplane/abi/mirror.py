"""Port mirroring (ebpf/include/abi/mirror.h): ports, sessions, the copy's mark and trailer."""

from __future__ import annotations

import ctypes

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
