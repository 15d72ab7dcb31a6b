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


# -- raw map access and program identity, for private copies of a loaded dataplane --
class ProgInfo(ctypes.Structure):
    """The leading fields of struct bpf_prog_info (the kernel fills as much as we pass)."""

    _fields_ = (("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8))


class BatchOpts(ctypes.Structure):
    """struct bpf_map_batch_opts of libbpf 1.1."""

    _fields_ = (("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64))


for _fn in ("bpf_map_lookup_batch", "bpf_map_update_batch"):
    getattr(_lib, _fn).restype = ctypes.c_int
_lib.bpf_map_lookup_batch.argtypes = [
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint32),
    ctypes.POINTER(BatchOpts),
]
_lib.bpf_map_update_batch.argtypes = [
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint32),
    ctypes.POINTER(BatchOpts),
]
BATCH = 4096
ENOTSUPP = 524  # the kernel's own "operation not supported" (no batch ops for this map type)


def prog_tag(fd: int) -> bytes:
    """The program's tag: a hash of its instructions with map references left out, so two loads
    of the same instructions with different maps have the same tag."""
    info, size = ProgInfo(), ctypes.c_uint32(ctypes.sizeof(ProgInfo))
    rc = _lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    _check(rc, f"program info of fd {fd}")
    return bytes(info.tag)


def _copy_batched(src: int, dst: int, info: MapInfo) -> bool:
    """Copy with BPF_MAP_LOOKUP_BATCH / UPDATE_BATCH; False when the map type has no batch ops."""
    keys = ctypes.create_string_buffer(info.key_size * BATCH)
    values = ctypes.create_string_buffer(info.value_size * BATCH)
    token = ctypes.create_string_buffer(max(info.key_size, 8))
    opts = BatchOpts(sz=ctypes.sizeof(BatchOpts))
    first = True
    while True:
        count = ctypes.c_uint32(BATCH)
        rc = _lib.bpf_map_lookup_batch(src, None if first else token, token, keys, values, count, opts)
        err = -rc if rc < 0 else 0
        if err in (errno.EINVAL, ENOTSUPP, errno.EOPNOTSUPP) and first:
            return False
        if err and err != errno.ENOENT:
            _check(rc, f"batch lookup of {info.name.decode()}")
        if count.value:
            done = ctypes.c_uint32(count.value)
            rc = _lib.bpf_map_update_batch(dst, keys, values, done, opts)
            _check(rc, f"batch update of {info.name.decode()}")
        if err == errno.ENOENT:
            return True
        first = False


def map_copy(src: int, dst: int) -> None:
    """Every entry of map `src` into map `dst` (same type and sizes; not per-CPU maps)."""
    info = map_info(src)
    if _copy_batched(src, dst, info):
        return
    key, next_key = ctypes.create_string_buffer(info.key_size), ctypes.create_string_buffer(info.key_size)
    value = ctypes.create_string_buffer(info.value_size)
    prev = None
    while True:
        rc = _lib.bpf_map_get_next_key(src, prev, next_key)
        if rc < 0:
            if -rc == errno.ENOENT or ctypes.get_errno() == errno.ENOENT:
                return
            _check(rc, f"iterate {info.name.decode()}")
        ctypes.memmove(key, next_key, info.key_size)
        if map_lookup(src, key, value):
            map_update(dst, key, value)
        prev = key
