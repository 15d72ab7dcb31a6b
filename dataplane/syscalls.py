"""The bpf(2) calls we need outside bcc, through libbpf.so.1 (ctypes): pinning, reopening
pinned objects, map access, BPF_PROG_TEST_RUN, and creating maps and loading programs from
instructions bcc compiled once (dataplane/bpf.py). bcc 0.26 wraps none of prog_test_run."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

_lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
_lib.bpf_obj_get.argtypes = [ctypes.c_char_p]
_lib.bpf_obj_pin.argtypes = [ctypes.c_int, ctypes.c_char_p]
for _fn in ("bpf_map_lookup_elem", "bpf_map_update_elem", "bpf_map_delete_elem", "bpf_map_get_next_key"):
    getattr(_lib, _fn).restype = ctypes.c_int
_lib.bpf_map_update_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
_lib.bpf_map_lookup_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_lib.bpf_map_delete_elem.argtypes = [ctypes.c_int, ctypes.c_void_p]
_lib.bpf_map_get_next_key.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_lib.libbpf_num_possible_cpus.restype = ctypes.c_int

BPF_ANY = 0


class BpfError(OSError):
    pass


def _check(rc: int, what: str) -> int:
    # libbpf 1.x returns -errno directly (and sets errno too)
    if rc < 0:
        err = -rc if rc != -1 else ctypes.get_errno()
        raise BpfError(err, f"{what}: {os.strerror(err)}")
    return rc


def obj_pin(fd: int, path: Path) -> None:
    _check(_lib.bpf_obj_pin(fd, str(path).encode()), f"pin {path}")


def obj_get(path: Path) -> int:
    return _check(_lib.bpf_obj_get(str(path).encode()), f"open pinned {path}")


def num_possible_cpus() -> int:
    return _check(_lib.libbpf_num_possible_cpus(), "possible cpus")


def map_lookup(fd: int, key: ctypes._CData, value: ctypes._CData) -> bool:
    rc = _lib.bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value))
    if rc < 0 and (-rc == errno.ENOENT or ctypes.get_errno() == errno.ENOENT):
        return False
    _check(rc, "map lookup")
    return True


def map_update(fd: int, key: ctypes._CData, value: ctypes._CData, flags: int = BPF_ANY) -> None:
    _check(_lib.bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), flags), "map update")


def map_delete(fd: int, key: ctypes._CData) -> bool:
    """False when the key was not there."""
    rc = _lib.bpf_map_delete_elem(fd, ctypes.byref(key))
    if rc < 0 and (-rc == errno.ENOENT or ctypes.get_errno() == errno.ENOENT):
        return False
    _check(rc, "map delete")
    return True


def map_items(fd: int, key_type: type, value_type: type):  # type: ignore[no-untyped-def]
    """(key, value) pairs of a hash map; entries deleted meanwhile are skipped."""
    key, next_key = key_type(), key_type()
    prev = None
    while True:
        rc = _lib.bpf_map_get_next_key(
            fd, None if prev is None else ctypes.byref(prev), ctypes.byref(next_key)
        )
        if rc < 0:
            if -rc == errno.ENOENT or ctypes.get_errno() == errno.ENOENT:
                return
            _check(rc, "map iterate")
        ctypes.memmove(ctypes.byref(key), ctypes.byref(next_key), ctypes.sizeof(key_type))
        value = value_type()
        if map_lookup(fd, key, value):
            yield key_type.from_buffer_copy(key), value
        prev = key_type.from_buffer_copy(key)


class TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts of libbpf 1.1 (PLATFORM.md lists the fields in order)."""

    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    )


_lib.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.POINTER(TestRunOpts)]


def prog_test_run(fd: int, opts: TestRunOpts) -> None:
    opts.sz = ctypes.sizeof(TestRunOpts)
    _check(_lib.bpf_prog_test_run_opts(fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN")


# -- a second instance of a compiled object: its maps made again, its instructions loaded again --
class MapInfo(ctypes.Structure):
    """struct bpf_map_info (the fields up to map_extra)."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    )


class MapCreateOpts(ctypes.Structure):
    """struct bpf_map_create_opts of libbpf 1.1."""

    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
        ("numa_node", ctypes.c_uint32),
        ("map_ifindex", ctypes.c_uint32),
    )


_lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
_lib.bpf_map_create.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint32,
    ctypes.c_uint32,
    ctypes.c_uint32,
    ctypes.POINTER(MapCreateOpts),
]
_lib.bpf_prog_load.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_void_p,
]
BPF_PROG_TYPE_SCHED_CLS = 3
INSN_SIZE = 8  # struct bpf_insn


def map_info(fd: int) -> MapInfo:
    info, size = MapInfo(), ctypes.c_uint32(ctypes.sizeof(MapInfo))
    _check(_lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), f"map info of fd {fd}")
    return info


def map_create_like(info: MapInfo) -> int:
    """A new, empty map with the type, sizes, capacity and flags of `info`."""
    opts = MapCreateOpts(sz=ctypes.sizeof(MapCreateOpts), map_flags=info.map_flags, map_extra=info.map_extra)
    rc = _lib.bpf_map_create(info.type, info.name, info.key_size, info.value_size, info.max_entries, opts)
    return _check(rc, f"create map {info.name.decode()}")


def prog_load(name: str, code: bytes) -> int:
    """A TC (SCHED_CLS) program from instructions whose maps are already in place."""
    buf = ctypes.create_string_buffer(code, len(code))
    rc = _lib.bpf_prog_load(
        BPF_PROG_TYPE_SCHED_CLS, name[:15].encode(), b"GPL", buf, len(code) // INSN_SIZE, None
    )
    return _check(rc, f"load program {name}")
