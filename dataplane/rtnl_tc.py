"""TC over rtnetlink, wire format: the clsact and cls_bpf requests tc.py sends, and their replies.

No I/O here. Layouts follow <linux/netlink.h>, <linux/rtnetlink.h>, <linux/pkt_sched.h> and
<linux/pkt_cls.h>: headers and attributes in host byte order, the protocol in tcm_info in
network order, every attribute padded to 4 bytes. The framing itself is dataplane/nlwire.py.
"""

from __future__ import annotations

import socket
import struct

from dataplane import nlwire

# nlmsghdr types and flags
RTM_NEWQDISC = 36
RTM_DELQDISC = 37
RTM_NEWTFILTER = 44
RTM_GETTFILTER = 46
F_REPLACE = 0x100
F_CREATE = 0x400

TCA_KIND = 1
TCA_OPTIONS = 2
TCA_BPF_FD = 6
TCA_BPF_NAME = 7
TCA_BPF_FLAGS = 8
TCA_BPF_FLAG_ACT_DIRECT = 1 << 0  # the program's return value is the verdict: no action needed

TC_H_CLSACT = 0xFFFFFFF1  # the qdisc's parent (shared with TC_H_INGRESS)
CLSACT_HANDLE = 0xFFFF0000  # TC_H_MAKE(TC_H_CLSACT, 0), "ffff:" in tc(8)
INGRESS = 0xFFFFFFF2  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS), "ffff:fff2"
EGRESS = 0xFFFFFFF3  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS), "ffff:fff3"
ETH_P_ALL = 0x0003

_TCMSG = struct.Struct("=BxxxiIII")  # family, (pad), ifindex, handle, parent, info


# -- packing -----------------------------------------------------------------------------------
def request(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return nlwire.request(kind, nlwire.F_REQUEST | flags, seq, body)


def clsact(ifindex: int) -> bytes:
    """RTM_NEWQDISC / RTM_DELQDISC body of the port's clsact qdisc (as `tc qdisc add dev X clsact`)."""
    return _TCMSG.pack(0, ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0) + nlwire.name(TCA_KIND, "clsact")


def bpf_filter(ifindex: int, parent: int, handle: int, prio: int, fd: int, name: str) -> bytes:
    """RTM_NEWTFILTER body: program `fd` in direct-action mode, for every protocol, at `prio`."""
    info = prio << 16 | socket.htons(ETH_P_ALL)  # TC_H_MAKE(prio << 16, protocol in network order)
    options = nlwire.u32(TCA_BPF_FD, fd) + nlwire.name(TCA_BPF_NAME, name)
    options += nlwire.u32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT)
    attrs = nlwire.name(TCA_KIND, "bpf") + nlwire.attr(TCA_OPTIONS, options)
    return _TCMSG.pack(0, ifindex, handle, parent, info) + attrs


def filter_dump(ifindex: int, parent: int) -> bytes:
    """RTM_GETTFILTER dump body: the filters of one hook of a port."""
    return _TCMSG.pack(0, ifindex, 0, parent, 0)


# -- unpacking ---------------------------------------------------------------------------------
def bpf_program_name(payload: memoryview) -> str | None:
    """The TCA_BPF_NAME of an RTM_NEWTFILTER message, None for other kinds and for the entry
    that stands for the filter chain itself (it has no options)."""
    attrs = nlwire.attrs(payload, _TCMSG.size)
    kind, options = attrs.get(TCA_KIND), attrs.get(TCA_OPTIONS)
    if kind is None or nlwire.string(kind) != "bpf" or options is None:
        return None
    name = nlwire.attrs(options, 0).get(TCA_BPF_NAME)
    return nlwire.string(name) if name is not None else None
