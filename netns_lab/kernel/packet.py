"""Packet sockets on a lab namespace's devices: taps that see a bridge port's frames before the
bridge and TC ingress do, filtered in the kernel by ethertype, and counters that keep nothing.

A socket is made while the thread sits in the namespace and stays there; it is bound by name,
which the kernel resolves in the socket's namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct

from netns_lab.kernel import netns


def packet_socket(ns: str | None, ifname: str, ethertype: int, count_others: bool = False) -> socket.socket:
    """A packet socket on `ifname` in `ns` (it stays there after the thread leaves) that receives
    the frames of `ethertype` arriving there (ETH_P_ALL: every frame), and sends any frame.

    It taps the device (ETH_P_ALL) with a classic BPF filter on the ethertype rather than binding
    to that ethertype: a bridge port hands its frames to the bridge before protocol handlers run,
    so only taps see them, before TC ingress. The kernel filters, so other frames cost no copy;
    outgoing frames are not looked at (PACKET_IGNORE_OUTGOING: no clone per transmitted frame).

    `count_others`: the opposite, every frame but `ethertype`, kept one byte each in the smallest
    receive buffer and never read: once it is full the kernel only counts them (tp_drops, checked
    before any copy), and PACKET_STATISTICS says how many arrived.
    """
    with netns.inside(ns) if ns is not None else contextlib.nullcontext():
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # 0: nothing queued before bind
    try:
        if count_others:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)  # the kernel's minimum
            _attach_filter(sock, _program(_OTHERS_FILTER, ethertype))
        elif ethertype != ETH_P_ALL:
            _attach_filter(sock, _program(_ETHERTYPE_FILTER, ethertype))
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.bind((ifname, ETH_P_ALL))
    except BaseException:
        sock.close()
        raise
    return sock


def arrived(sock: socket.socket) -> int:
    """Frames that passed the socket's filter since the last call (queued or dropped)."""
    packets, _drops = struct.unpack("=II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return int(packets)  # the kernel has added the drops, and resets both


ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26
# classic BPF, "code jt jf k;...": ldh [12]; jeq #ethertype; ret #65535 (all of it) or #0 (none)
_ETHERTYPE_FILTER = "40 0 0 12;21 0 1 {ethertype};6 0 0 65535;6 0 0 0"
_OTHERS_FILTER = "40 0 0 12;21 0 1 {ethertype};6 0 0 0;6 0 0 1"  # others: one byte each


def _program(text: str, ethertype: int) -> list[tuple[int, ...]]:
    return [tuple(int(x) for x in ins.split()) for ins in text.format(ethertype=ethertype).split(";")]


def _attach_filter(sock: socket.socket, program: list[tuple[int, ...]]) -> None:
    code = b"".join(struct.pack("=HBBI", *ins) for ins in program)
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buf))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
