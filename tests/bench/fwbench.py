"""Firewall benchmark material: policies of N allow rules, the frames that hit them, and a
reader that empties the `fw_events` ring buffer between measurements.

Rule i (1-based) allows the endpoint to open TCP port 80 towards 10.128.0.0 + i - 1 (a /32
each, all distinct): 10k rules fit in 10.128.0.0/18. The frames are 60 bytes (64 on the wire
with the FCS) from the vNIC's own MAC and address, so port security passes them.
"""

from __future__ import annotations

import ctypes
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from dataplane import fwpolicy

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

VM_MAC = "02:00:00:00:0a:01"
PEER_MAC = "02:00:00:00:0a:02"
VM_IP = "10.0.10.1"
ENDPOINT = 1
FIRST_PEER = IPv4Address("10.128.0.0")
DPORT = 80
SPORT = 40000
FRAME_BYTES = 60  # without the FCS: the 64-byte minimum Ethernet frame


PROF_CACHE = 0x200  # NLAB_PROF_CACHE of ebpf/include/prof.h: the flow and policy caches left out


def load_dataplane(skip: int = 0) -> SwitchDataplane:
    """A VM-port dataplane; `skip`, a mask of ebpf/include/prof.h's NLAB_PROF_* parts to build
    without (benchmark-only variants, never attached to anything but a benchmark's veth)."""
    from dataplane import abi, bpf
    from dataplane.switch import MAPS, ON_DEMAND, PROGRAMS, SOURCE, SwitchDataplane

    if not skip:
        return SwitchDataplane.load()
    defines = {"NLAB_MAX_IFINDEX": abi.MAX_IFINDEX, "NLAB_PROF_SKIP": skip}
    loaded = bpf.load(SOURCE, PROGRAMS, MAPS, defines, later=ON_DEMAND)
    return SwitchDataplane(loaded.programs, loaded.maps, loaded)


def peer(rule: int) -> str:
    """The /32 that rule `rule` (1-based) allows."""
    return str(FIRST_PEER + rule - 1)


def policy(rules: int, proto: str = "tcp", port: int = DPORT) -> fwpolicy.Policy:
    """`rules` allow rules of endpoint ENDPOINT, direction out, one /32 each; default deny."""
    return fwpolicy.Policy(
        endpoints=(fwpolicy.Endpoint(ENDPOINT, ips=(VM_IP,)),),
        rules=tuple(
            fwpolicy.Rule(i, {ENDPOINT}, "out", fwpolicy.Cidr(f"{peer(i)}/32"), proto, (port, port))
            for i in range(1, rules + 1)
        ),
    )


def tcp_frame(dst: str, flags: str, reply: bool = False, vlan: int | None = None) -> bytes:
    """A TCP segment of the flow VM_IP:SPORT -> dst:DPORT (`reply`: the other way), padded to 60 bytes."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Dot1Q, Ether
    from scapy.packet import raw

    src_mac, dst_mac = (PEER_MAC, VM_MAC) if reply else (VM_MAC, PEER_MAC)
    pkt = Ether(src=src_mac, dst=dst_mac)
    if vlan is not None:
        pkt = pkt / Dot1Q(vlan=vlan)
    if reply:
        pkt = pkt / IP(src=dst, dst=VM_IP) / TCP(sport=DPORT, dport=SPORT, flags=flags)
    else:
        pkt = pkt / IP(src=VM_IP, dst=dst) / TCP(sport=SPORT, dport=DPORT, flags=flags)
    data = raw(pkt)
    size = FRAME_BYTES + (4 if vlan is not None else 0)
    return data + bytes(max(0, size - len(data)))


_SAMPLE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class RingDrain:
    """Consumes (and counts) every record of a BPF ring buffer, as a live `nlab fw events` would.

    A full ring makes bpf_ringbuf_output fail fast, so a benchmark that never read it would
    measure the cheaper lost-event path after a few thousand new flows.
    """

    def __init__(self, map_fd: int) -> None:
        self._lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        self._lib.ring_buffer__new.restype = ctypes.c_void_p
        self._lib.ring_buffer__new.argtypes = [ctypes.c_int, _SAMPLE, ctypes.c_void_p, ctypes.c_void_p]
        self._lib.ring_buffer__consume.argtypes = [ctypes.c_void_p]
        self._lib.ring_buffer__free.argtypes = [ctypes.c_void_p]
        self.records = 0
        self._callback = _SAMPLE(self._on_sample)  # kept alive as long as the ring buffer
        self._rb = self._lib.ring_buffer__new(map_fd, self._callback, None, None)
        if not self._rb:
            raise OSError(ctypes.get_errno(), "ring_buffer__new failed")

    def _on_sample(self, _ctx: int, _data: int, _size: int) -> int:
        self.records += 1
        return 0

    def drain(self) -> int:
        rc = self._lib.ring_buffer__consume(self._rb)
        if rc < 0:
            raise OSError(-rc, "ring_buffer__consume failed")
        return self.records

    def close(self) -> None:
        if self._rb:
            self._lib.ring_buffer__free(self._rb)
            self._rb = None
