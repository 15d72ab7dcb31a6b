"""The ABI of ebpf/include/abi.h in Python: drop reasons, directions, port modes, map structs.

tests/bpf/test_abi.py checks that every value and struct size here equals the header's.
"""

from __future__ import annotations

import ctypes
import enum

MAX_IFINDEX = 1024
NR_REASONS = 16
NR_DIRS = 2
CB_VLAN = 0
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

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


REASON_TEXT = {
    Reason.PASS: "passed",
    Reason.NO_PORT: "port not configured (fail closed)",
    Reason.MALFORMED: "frame too short for its headers",
    Reason.TAGGED_ON_ACCESS: "802.1Q-tagged frame on an access port",
    Reason.QINQ: "802.1ad or double-tagged frame",
    Reason.CONTROL_FRAME: "switch-control frame (STP/LLDP/CDP/DTP) from an edge port",
    Reason.VLAN_MISMATCH: "frame of another VLAN towards an access port",
    Reason.VLAN_NOT_ALLOWED: "VLAN not allowed on the trunk",
    Reason.UNTAGGED: "untagged frame on a port that carries none",
    Reason.VLAN_HELPER: "VLAN push/pop helper failed",
}


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
