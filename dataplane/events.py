"""Verdict events of the NIC firewall, read from the `fw_events` ring buffers (libbpf, ctypes).

One reader can follow the ring buffers of several hypervisors at once (`add`); each record is
copied out as an `abi.FwEvent` together with the tag of the buffer it came from. A ring buffer has
one consumer position: two readers of one buffer each get a part, so a lab has exactly one (its
event hub, which serves everyone else).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Hashable

from dataplane import abi

_lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
_SAMPLE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_lib.ring_buffer__new.restype = ctypes.c_void_p
_lib.ring_buffer__new.argtypes = [ctypes.c_int, _SAMPLE, ctypes.c_void_p, ctypes.c_void_p]
_lib.ring_buffer__add.argtypes = [ctypes.c_void_p, ctypes.c_int, _SAMPLE, ctypes.c_void_p]
_lib.ring_buffer__poll.argtypes = [ctypes.c_void_p, ctypes.c_int]
_lib.ring_buffer__free.argtypes = [ctypes.c_void_p]
_lib.ring_buffer__epoll_fd.argtypes = [ctypes.c_void_p]


CLOCK_MONOTONIC_COARSE = 6  # Linux; the time module does not name it


def now_ns() -> int:
    """The dataplane's clock: bpf_ktime_get_coarse_ns() reads CLOCK_MONOTONIC_COARSE."""
    return time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)


def wall_time(time_ns: int) -> float:
    """An event's time (CLOCK_MONOTONIC_COARSE) as a Unix time."""
    return time.time() - (now_ns() - time_ns) / 1e9


class EventReader:
    def __init__(self) -> None:
        self._rb: int | None = None
        self._pending: list[tuple[Hashable, abi.FwEvent]] = []
        self._callbacks: list[object] = []  # keep the C callbacks alive as long as the reader

    def add(self, map_fd: int, tag: Hashable) -> None:
        def on_sample(_ctx: int, data: int, size: int) -> int:
            if size >= ctypes.sizeof(abi.FwEvent):
                self._pending.append((tag, abi.FwEvent.from_buffer_copy(ctypes.string_at(data, size))))
            return 0

        callback = _SAMPLE(on_sample)
        self._callbacks.append(callback)
        if self._rb is None:
            self._rb = _lib.ring_buffer__new(map_fd, callback, None, None)
            if not self._rb:
                raise OSError(ctypes.get_errno(), "ring_buffer__new failed")
        elif _lib.ring_buffer__add(self._rb, map_fd, callback, None) < 0:
            raise OSError(ctypes.get_errno(), "ring_buffer__add failed")

    def fileno(self) -> int:
        """An epoll fd, readable when a buffer has records: lets callers wait on it with other fds."""
        if self._rb is None:
            raise ValueError("no ring buffer added yet")
        return int(_lib.ring_buffer__epoll_fd(self._rb))

    def poll(self, timeout_ms: int = 100) -> list[tuple[Hashable, abi.FwEvent]]:
        """The events that arrived, waiting up to `timeout_ms` for the first one."""
        if self._rb is None:
            return []
        rc = _lib.ring_buffer__poll(self._rb, timeout_ms)
        if rc < 0 and -rc != 4:  # EINTR: a signal, just return what we have
            raise OSError(-rc, "ring_buffer__poll failed")
        events, self._pending = self._pending, []
        return events

    def close(self) -> None:
        if self._rb is not None:
            _lib.ring_buffer__free(self._rb)
            self._rb = None

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
