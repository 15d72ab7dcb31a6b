"""Switch ports, VLANs and the verdict counters (ebpf/include/abi/port.h)."""

from __future__ import annotations

import ctypes
import enum

from dataplane.abi.reasons import NR_REASONS, Reason

MAX_IFINDEX = 1024
NR_DIRS = 2
NO_VLAN = 0xFFFF
CB_VLAN = 0
CB_MIRROR = 1


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
