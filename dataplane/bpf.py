"""The one module that imports bcc: compile ebpf/*.c, load its TC programs, pin what must outlive us.

A loaded object lives in the kernel as long as a TC filter or a pin holds it; the bcc object
in Python is only needed while loading. Pins go under a directory the caller owns.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from dataplane import syscalls

log = logging.getLogger(__name__)

EBPF_DIR = Path(__file__).resolve().parent.parent / "ebpf"
INCLUDE_DIR = EBPF_DIR / "include"


class LoadError(Exception):
    pass


@dataclass
class Loaded:
    """File descriptors of the programs and maps of one loaded object."""

    programs: dict[str, int]
    maps: dict[str, int]
    _bpf: object = None  # the bcc object; closing it closes the fds

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()  # type: ignore[attr-defined]
            self._bpf = None


def load(
    source: str, programs: tuple[str, ...], maps: tuple[str, ...], defines: dict[str, int] | None = None
) -> Loaded:
    """Compile `ebpf/<source>` and load `programs` as SCHED_CLS (TC) programs."""
    from bcc import BPF  # imported here: bcc is slow to import and needs Debian's python

    cflags = [f"-I{INCLUDE_DIR}", *(f"-D{k}={v}" for k, v in (defines or {}).items())]
    try:
        bpf = BPF(src_file=str(EBPF_DIR / source).encode(), cflags=cflags)
        fds = {name: bpf.load_func(name.encode(), BPF.SCHED_CLS).fd for name in programs}
        map_fds = {name: bpf.get_table(name.encode()).map_fd for name in maps}
    except Exception as err:  # bcc raises bare Exception on compile and verifier errors
        raise LoadError(f"cannot load ebpf/{source}: {err}") from err
    return Loaded(fds, map_fds, bpf)


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
