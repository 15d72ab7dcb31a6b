"""NIC teaming and fault injection (ebpf/include/abi/team.h): members, faults, beacons."""

from __future__ import annotations

import ctypes

TEAM_STANDBY = 0
TEAM_ACTIVE = 1
TEAM_NONE = 0
TEAM_MEMBER = 1
TEAM_EDGE = 2
FAULT_NONE = 0
FAULT_SILENT = 1
FAULT_LOSS = 2
FAULT_LOSS_ALL = 0x100000000
BEACON_ETHERTYPE = 0x88B5
BEACON_MAGIC = 0x4E4C41425445414D
BEACON_MIN_LEN = 22


class TeamMember(ctypes.Structure):
    _fields_ = (("member", ctypes.c_uint8), ("active", ctypes.c_uint8), ("_pad", ctypes.c_uint16))


class Fault(ctypes.Structure):
    _fields_ = (("loss", ctypes.c_uint64), ("mode", ctypes.c_uint8), ("_pad", ctypes.c_uint8 * 7))
