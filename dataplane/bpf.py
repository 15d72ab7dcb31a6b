"""The one module that imports bcc: compile ebpf/*.c, load its TC programs, pin what must outlive us.

A loaded object lives in the kernel as long as a TC filter or a pin holds it; the bcc object
in Python is only needed while loading. Pins go under a directory the caller owns.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from dataplane import syscalls

log = logging.getLogger(__name__)

EBPF_DIR = Path(__file__).resolve().parent.parent / "ebpf"
INCLUDE_DIR = EBPF_DIR / "include"


class LoadError(Exception):
    pass


@dataclass
class Loaded:
    """File descriptors of the programs and maps of one loaded object; `code`: each program's
    instructions as loaded (their map references are the fds of `maps` and of the object's
    other maps), from which `instantiate` loads another copy without compiling. Programs left for
    later (`load(later=...)`, `load_relocatable(programs=...)`) are loaded by `load_later`."""

    programs: dict[str, int]
    maps: dict[str, int]
    _bpf: object = None  # the bcc object; closing it closes the fds
    code: dict[str, bytes] = field(default_factory=dict)
    _fds: list[int] = field(default_factory=list)  # an instance's own fds
    source: Relocatable | None = None  # an instance's: every program it may load, loaded or not

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()  # type: ignore[attr-defined]
            self._bpf = None
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def load(
    source: str,
    programs: tuple[str, ...],
    maps: tuple[str, ...],
    defines: dict[str, int] | None = None,
    later: tuple[str, ...] = (),
) -> Loaded:
    """Compile `ebpf/<source>` and load `programs` as SCHED_CLS (TC) programs; `later`: programs
    compiled with them but loaded only when `load_later` asks (the kernel verifies a program at
    load: one that few instances need is not verified in every one)."""
    from bcc import (
        BPF,  # imported here: bcc is slow to import and needs Debian's python
        libbcc,
    )

    cflags = [f"-I{INCLUDE_DIR}", *(f"-D{k}={v}" for k, v in (defines or {}).items())]
    try:
        bpf = BPF(src_file=str(EBPF_DIR / source).encode(), cflags=cflags)
        fds = {name: bpf.load_func(name.encode(), BPF.SCHED_CLS).fd for name in programs}
        map_fds = {name: bpf.get_table(name.encode()).map_fd for name in maps}
    except Exception as err:  # bcc raises bare Exception on compile and verifier errors
        raise LoadError(f"cannot load ebpf/{source}: {err}") from err
    code = {}
    for name in programs + later:  # as bcc compiled them: its map placeholders already replaced by fds
        start = libbcc.lib.bpf_function_start(bpf.module, name.encode())
        if not start:
            bpf.cleanup()
            raise LoadError(f"cannot load ebpf/{source}: no program {name}")
        code[name] = ctypes.string_at(start, libbcc.lib.bpf_function_size(bpf.module, name.encode()))
    return Loaded(fds, map_fds, bpf, code)


LD_IMM64 = 0x18  # BPF_LD | BPF_DW | BPF_IMM: the two-slot instruction that carries a map reference
PSEUDO_MAP_FD = 1  # its src_reg when imm is a map fd


def _map_refs(code: bytes) -> list[int]:
    """Offsets of the instructions of `code` that name a map by fd."""
    return [
        off
        for off in range(0, len(code), syscalls.INSN_SIZE)
        if code[off] == LD_IMM64 and code[off + 1] >> 4 == PSEUDO_MAP_FD
    ]


def _fd_at(code: bytes, off: int) -> int:
    return int.from_bytes(code[off + 4 : off + 8], "little", signed=True)


@dataclass(frozen=True)
class Relocatable:
    """A loaded object's programs as instructions whose map references are names, not fds: what
    another process needs to load the same programs with maps of its own (`load_relocatable`)."""

    code: dict[str, bytes]
    refs: dict[str, list[tuple[int, str]]]  # program -> (byte offset of an LD_IMM64, map name)
    maps: dict[str, dict[str, int]]  # map name -> type, key_size, value_size, max_entries, flags, extra

    def save(self, path: Path) -> None:
        doc = {
            "code": {name: base64.b64encode(code).decode() for name, code in self.code.items()},
            "refs": self.refs,
            "maps": self.maps,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> Relocatable:
        doc = json.loads(path.read_text())
        return cls(
            {name: base64.b64decode(code) for name, code in doc["code"].items()},
            {name: [(off, ref) for off, ref in refs] for name, refs in doc["refs"].items()},
            doc["maps"],
        )


def relocatable(loaded: Loaded) -> Relocatable:
    if loaded.source is not None:  # an instance: what it was made from, every program included
        return loaded.source
    names = {fd: name for name, fd in loaded.maps.items()}
    infos: dict[str, dict[str, int]] = {}
    refs: dict[str, list[tuple[int, str]]] = {}
    for prog, code in loaded.code.items():
        refs[prog] = []
        for off in _map_refs(code):
            fd = _fd_at(code, off)
            info = syscalls.map_info(fd)
            name = names.get(fd) or info.name.decode()
            infos[name] = {f: getattr(info, f) for f in MAP_INFO_FIELDS}
            refs[prog].append((off, name))
    for name, fd in loaded.maps.items():
        info = syscalls.map_info(fd)
        infos.setdefault(name, {f: getattr(info, f) for f in MAP_INFO_FIELDS})
    return Relocatable(dict(loaded.code), refs, infos)


MAP_INFO_FIELDS = ("type", "key_size", "value_size", "max_entries", "map_flags", "map_extra")


def load_relocatable(r: Relocatable, programs: tuple[str, ...] | None = None) -> Loaded:
    """Load the programs of `r` (or only `programs` of them; `load_program` adds others later)
    with new, empty maps of their own (no compile)."""
    made: list[int] = []
    try:
        maps = {}
        for name, spec in r.maps.items():
            info = syscalls.MapInfo(name=name[:15].encode(), **spec)
            maps[name] = syscalls.map_create_like(info)
            made.append(maps[name])
        loaded = Loaded({}, maps, None, {}, made, r)
        for prog in r.code if programs is None else programs:
            load_program(loaded, r, prog)
    except BaseException:
        for fd in made:
            os.close(fd)
        raise
    return loaded


def load_program(loaded: Loaded, r: Relocatable, prog: str) -> int:
    """Load program `prog` of `r` into `loaded` (made by `load_relocatable`), on its maps."""
    patched = bytearray(r.code[prog])
    for off, name in r.refs[prog]:
        patched[off + 4 : off + 8] = loaded.maps[name].to_bytes(4, "little", signed=True)
    loaded.code[prog] = bytes(patched)
    loaded.programs[prog] = syscalls.prog_load(prog, loaded.code[prog])
    loaded._fds.append(loaded.programs[prog])
    return loaded.programs[prog]


def load_later(loaded: Loaded, prog: str) -> int:
    """Program `prog` of `loaded`, loaded now if it was left for later."""
    if prog not in loaded.programs:
        load_program(loaded, relocatable(loaded), prog)
    return loaded.programs[prog]


def instantiate(template: Loaded, programs: tuple[str, ...] | None = None) -> Loaded:
    """Another copy of a loaded object, with maps of its own, without compiling again (a compile
    takes seconds, this tens of milliseconds): every map is made anew like the template's, and
    each program's instructions (or only those of `programs`; `load_later` the others) are loaded
    again with their map fds replaced."""
    return load_relocatable(relocatable(template), programs)


def pin(loaded: Loaded, directory: Path) -> None:
    """Pin every program (`prog_<name>`) and map (`<name>`) so that other processes reopen them."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, fd in loaded.programs.items():
        syscalls.obj_pin(fd, directory / f"prog_{name}")
    for name, fd in loaded.maps.items():
        syscalls.obj_pin(fd, directory / name)


def unpin(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(directory)
