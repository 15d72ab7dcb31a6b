"""The VXLAN underlay guard (ebpf/include/abi/overlay.h): local and peer VTEP addresses, hosted
VNIs and their counters."""

from __future__ import annotations

import ctypes

MAX_VTEP_PEERS = 1024
MAX_OVERLAY_VNIS = 4096
MAX_OVERLAY_LOCAL = 16
VXLAN_PORT = 4789
VXLAN_HLEN = 8
VXLAN_FLAGS_I = 0x08000000
VNI_MAX = 0xFFFFFF


class OverlayAddr(ctypes.Structure):
    _fields_ = (
        ("family", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 3),
        ("addr", ctypes.c_uint8 * 16),  # network order; IPv4 in the first 4 bytes
    )


class OverlayVni(ctypes.Structure):
    _fields_ = (("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64))
