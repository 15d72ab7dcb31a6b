"""Packet capture inside a lab namespace (AF_PACKET) and a classic pcap writer.

The socket is made while this thread sits in the namespace (`netns.inside`), then the thread
returns to its own namespace: the socket keeps belonging to the one it was made in. It is made
with protocol 0 (it hears nothing) and only then bound with ETH_P_ALL to one interface, so no
frame of another interface slips in between.

At receive the kernel has already taken the outer VLAN tag out of the bytes into the skb
(`vlan_tci`); PACKET_AUXDATA hands it back and `Capture.read` puts it back in place, so the
pcap and the decoded line show the frame as it was on the wire. PACKET_STATISTICS counts the
frames the kernel dropped because the socket buffer was full; it resets on each read, so the
drops are summed here. Frames the namespace sends itself (PACKET_OUTGOING) are skipped: a tap
is receive-only, what it sends is not a copy (PACKET_IGNORE_OUTGOING keeps them out of the
buffer, so drops count copies only).

A capture on a mirror destination's vSwitch port (`marked`) sees copies as the host sends them
to the VM, after the port's TC egress program, which leaves each copy's skb->mark in place
(session and direction, see ebpf/include/abi/mirror.h); SO_RCVMARK hands the mark over with each frame,
and only marked frames are kept: exactly the copies, each with the session that made it.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from dataclasses import dataclass
from typing import BinaryIO

from dataplane import abi
from netns_lab.kernel import netns

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC = 1, 1
PACKET_STATISTICS, PACKET_AUXDATA = 6, 8
PACKET_OUTGOING = 4
PACKET_IGNORE_OUTGOING = 23
SO_TIMESTAMPNS = 35  # also SCM_TIMESTAMPNS; Python's socket module does not export it
SO_RCVBUFFORCE = 33
SO_MARK, SO_RCVMARK = 36, 75  # SO_MARK is also the control message's type
MARK = struct.Struct("=I")
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 0x10, 0x40
AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
TIMESPEC = struct.Struct("=qq")
STATS = struct.Struct("=II")  # struct tpacket_stats: packets, drops
DEFAULT_RCVBUF = 4 << 20  # a burst of a mirrored stream must fit while the terminal catches up
SNAPLEN = 262144
LINKTYPE_ETHERNET = 1
PCAP_MAGIC_NS = 0xA1B23C4D


class CaptureGone(OSError):
    """The interface (or its namespace) went away while capturing: the lab went down, a VM moved."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True, slots=True)
class Frame:
    time_ns: int  # kernel receive time, Unix epoch
    data: bytes  # as on the wire: the stripped VLAN tag is back in place
    wire_len: int  # original length (data may be shorter if the frame was truncated)
    vlan: int | None  # the tag the kernel had stripped, if any
    mark: int = 0  # skb->mark (a marked capture only)


def packet_socket(
    namespace: str, ifname: str, rcvbuf: int | None, outgoing: bool, marks: bool = False
) -> socket.socket:
    """A non-blocking, promiscuous AF_PACKET socket on `ifname` of `namespace`, with PACKET_AUXDATA
    (the stripped VLAN tag) and kernel receive times; `outgoing`: also what the namespace sends;
    `marks`: each frame's skb->mark too."""
    with netns.inside(namespace):
        ifindex = socket.if_nametoindex(ifname)  # ifindexes are per namespace
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        if not outgoing:
            # never queued, so it cannot fill the buffer or count as a drop; Capture.read still
            # skips those queued before this took effect
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if marks:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVMARK, 1)
        sock.bind((ifname, ETH_P_ALL))
        mreq = struct.pack("=iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")  # struct packet_mreq
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Capture:
    """One receive-only raw socket on `ifname` inside namespace `namespace`; `marked`: a mirror
    destination's vSwitch port, where only the marked copies sent to the VM are kept."""

    def __init__(
        self, namespace: str, ifname: str, rcvbuf: int | None = DEFAULT_RCVBUF, marked: bool = False
    ) -> None:
        self.namespace, self.ifname, self.marked = namespace, ifname, marked
        self.received = self.dropped = 0
        self.sock = packet_socket(namespace, ifname, rcvbuf, outgoing=marked, marks=marked)
        log.info("capturing on %s in %s", ifname, namespace)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 256) -> list[Frame]:
        """Up to `limit` frames waiting in the socket (never blocks)."""
        frames: list[Frame] = []
        space = sum(socket.CMSG_SPACE(s.size) for s in (AUXDATA, TIMESPEC, MARK))
        while len(frames) < limit:
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(SNAPLEN, space)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                    raise CaptureGone(
                        err.errno,
                        f"capture on {self.ifname} in {self.namespace} ended: the "
                        f"interface went away ({err.strerror})",
                    ) from None
                raise
            if (addr[2] == PACKET_OUTGOING) != self.marked:
                continue
            frame = _frame(data, ancdata)
            if self.marked and frame.mark & abi.MIRROR_MARK_MASK != abi.MIRROR_MARK:
                continue
            frames.append(frame)
        self.received += len(frames)
        return frames

    def drops(self) -> int:
        """Frames the kernel dropped for this socket so far (a full receive buffer)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, STATS.size)
        self.dropped += STATS.unpack(raw)[1]
        return self.dropped

    def close(self) -> None:
        self.sock.close()


def _frame(data: bytes, ancdata: list[tuple[int, int, bytes]]) -> Frame:
    time_ns, vlan, wire_len, mark = 0, None, len(data), 0
    for level, kind, blob in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(blob) >= AUXDATA.size:
            status, tp_len, _snap, _mac, _net, tci, tpid = AUXDATA.unpack_from(blob)
            wire_len = tp_len
            if status & TP_STATUS_VLAN_VALID:
                tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
                wire_len += 4
                vlan = tci & 0x0FFF
        elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(blob) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(blob)
            time_ns = sec * 1_000_000_000 + nsec
        elif level == socket.SOL_SOCKET and kind == SO_MARK and len(blob) >= MARK.size:
            mark = MARK.unpack_from(blob)[0]
    return Frame(time_ns, data, max(wire_len, len(data)), vlan, mark)


class PcapWriter:
    """Classic pcap, nanosecond timestamps (magic a1b23c4d), Ethernet; flushed per packet so that
    a reader (`tcpdump -r`, `tail -f | tshark -r -`) can follow it as it grows."""

    def __init__(self, out: BinaryIO, snaplen: int = SNAPLEN) -> None:
        self.out, self.snaplen, self.count = out, snaplen, 0
        out.write(struct.pack("=IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        out.flush()

    def write(self, time_ns: int, data: bytes, wire_len: int | None = None) -> None:
        data = data[: self.snaplen]
        sec, nsec = divmod(time_ns, 1_000_000_000)
        self.out.write(struct.pack("=IIII", sec, nsec, len(data), max(wire_len or 0, len(data))) + data)
        self.out.flush()
        self.count += 1

    def close(self) -> None:
        self.out.close()
