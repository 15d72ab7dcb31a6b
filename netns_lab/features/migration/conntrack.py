"""A migrating VM's connection entries, carried from one host's connection table to another's.

Entries are keyed by firewall endpoint (lab-wide, per VM NIC), not by ifindex, so a key is
valid on any host as it is. What is per host: the quota counts the datapath keeps beside the
table (ct_count, ct_peer_count; see ebpf/include/conntrack.h), taken here for each adopted entry
exactly as `ct_create` would. That read-modify-write is safe only because no port of the
endpoint carries traffic on the target yet: the counts it writes are the endpoint's own.

An adopted entry carries a policy generation the target has already left behind, so its next
packet is checked once against the target's policy (`fw_tracked`), as after any policy change:
the rules that let it through are the target's, not a copy of the source's verdict.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterable

from dataplane import abi, syscalls
from dataplane.firewall import Firewall

Item = tuple[abi.CtKey, abi.CtEntry]


def entries(fw: Firewall, endpoints: Iterable[int]) -> list[Item]:
    wanted = frozenset(endpoints)
    return [
        (key, entry)
        for key, entry in syscalls.map_items(fw.maps["conntrack"], abi.CtKey, abi.CtEntry)
        if key.endpoint in wanted
    ]


def peer_bucket(key: abi.CtKey) -> int:
    """`ct_peer_bucket` of conntrack.h: MurmurHash3's finalizer of the source address's words."""
    w = struct.unpack("<4I", bytes(key.saddr))
    h = w[0] ^ w[1] ^ w[2] ^ w[3]
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return key.endpoint * abi.PEER_BUCKETS + (h & (abi.PEER_BUCKETS - 1))


def _take(fd: int, index: int) -> None:
    count = ctypes.c_uint32()
    syscalls.map_lookup(fd, ctypes.c_uint32(index), count)
    syscalls.map_update(fd, ctypes.c_uint32(index), ctypes.c_uint32(count.value + 1))


def adopt(fw: Firewall, items: Iterable[Item]) -> list[abi.CtKey]:
    """Insert `items` into `fw`'s table with their quota shares; returns the keys inserted (an
    entry already there is left as it is)."""
    seen = (fw.config().generation - 1) & 0xFFFFFFFF  # a generation the target has left behind
    done = []
    for key, entry in items:
        copy = abi.CtEntry.from_buffer_copy(bytes(entry))
        copy.generation = seen
        try:
            syscalls.map_update(fw.maps["conntrack"], key, copy, flags=BPF_NOEXIST)
        except OSError:
            continue  # there already (or the table is full: the flow then fails closed there)
        _take(fw.maps["ct_count"], key.endpoint * 2 + (entry.origin & 1))
        if entry.origin == abi.FwDirection.IN:
            _take(fw.maps["ct_peer_count"], peer_bucket(key))
        done.append(key)
    return done


def forget(fw: Firewall, keys: Iterable[abi.CtKey]) -> int:
    """Delete entries and give their quota shares back (through the kernel's ct_reap)."""
    return sum(fw.forget(key) for key in keys)


BPF_NOEXIST = 1
