"""Run a loaded TC program on a crafted frame with BPF_PROG_TEST_RUN: verdict, output, cost.

The kernel runs the real program, with its real maps, on a copy of the frame; nothing is
sent anywhere. `ifindex` in the context must name an interface of the calling thread's
namespace (1, loopback, always exists) because the kernel looks the device up.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from dataplane import syscalls

TC_ACT_OK = 0
TC_ACT_SHOT = 2
SKB_CB_WORDS = 5
MAX_FRAME = 9216 + 64


class SkBuff(ctypes.Structure):
    """The leading part of struct __sk_buff, as far as the test-run context is allowed to set
    (len .. cb[], then the remaining fields up to hwtstamp, all zero)."""

    _fields_ = (
        ("len", ctypes.c_uint32),
        ("pkt_type", ctypes.c_uint32),
        ("mark", ctypes.c_uint32),
        ("queue_mapping", ctypes.c_uint32),
        ("protocol", ctypes.c_uint32),
        ("vlan_present", ctypes.c_uint32),
        ("vlan_tci", ctypes.c_uint32),
        ("vlan_proto", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("tc_index", ctypes.c_uint32),
        ("cb", ctypes.c_uint32 * SKB_CB_WORDS),
        ("hash", ctypes.c_uint32),
        ("tc_classid", ctypes.c_uint32),
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("napi_id", ctypes.c_uint32),
        ("family", ctypes.c_uint32),
        ("remote_ip4", ctypes.c_uint32),
        ("local_ip4", ctypes.c_uint32),
        ("remote_ip6", ctypes.c_uint32 * 4),
        ("local_ip6", ctypes.c_uint32 * 4),
        ("remote_port", ctypes.c_uint32),
        ("local_port", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("flow_keys", ctypes.c_uint64),
        ("tstamp", ctypes.c_uint64),
        ("wire_len", ctypes.c_uint32),
        ("gso_segs", ctypes.c_uint32),
        ("sk", ctypes.c_uint64),
        ("gso_size", ctypes.c_uint32),
        ("tstamp_type", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 3),
        ("hwtstamp", ctypes.c_uint64),
    )


@dataclass(frozen=True)
class Result:
    retval: int
    data: bytes
    cb: tuple[int, ...]
    ns_per_run: int
    mark: int = 0  # skb->mark as the program left it

    @property
    def passed(self) -> bool:
        return self.retval == TC_ACT_OK

    @property
    def dropped(self) -> bool:
        return self.retval == TC_ACT_SHOT


def run(
    prog_fd: int,
    frame: bytes,
    ifindex: int = 1,
    repeat: int = 1,
    cb: tuple[int, ...] = (),
    mark: int = 0,
    ingress_ifindex: int = 0,
) -> Result:
    """Run the program `repeat` times on `frame`; ns_per_run is the kernel's mean per run.
    `ingress_ifindex`: the device the frame came in on (0, the default: sent by this node)."""
    data_in = ctypes.create_string_buffer(frame, len(frame))
    data_out = ctypes.create_string_buffer(len(frame) + 64)
    ctx_in, ctx_out = SkBuff(), SkBuff()
    ctx_in.ifindex = ifindex
    ctx_in.mark = mark
    ctx_in.ingress_ifindex = ingress_ifindex
    for i, word in enumerate(cb):
        ctx_in.cb[i] = word
    opts = syscalls.TestRunOpts(
        data_in=ctypes.cast(data_in, ctypes.c_void_p),
        data_out=ctypes.cast(data_out, ctypes.c_void_p),
        data_size_in=len(frame),
        data_size_out=len(data_out),
        ctx_in=ctypes.cast(ctypes.byref(ctx_in), ctypes.c_void_p),
        ctx_out=ctypes.cast(ctypes.byref(ctx_out), ctypes.c_void_p),
        ctx_size_in=ctypes.sizeof(SkBuff),
        ctx_size_out=ctypes.sizeof(SkBuff),
        repeat=repeat,
    )
    syscalls.prog_test_run(prog_fd, opts)
    return Result(
        opts.retval, data_out.raw[: opts.data_size_out], tuple(ctx_out.cb), opts.duration, ctx_out.mark
    )
