"""A private copy of a live switching dataplane, for diagnostics that must leave no mark.

The copy runs the same instructions as the programs attached to the ports (their tags are
checked against the pinned ones), with maps of its own: the configuration and state maps are
filled with a snapshot of the live ones, and the maps the programs write as a side effect
(counters, rule hits, mirror statistics, the event ring buffer) start empty. A frame run through
the copy with BPF_PROG_TEST_RUN therefore decides exactly as the live port would, while every
counter, connection entry, fragment record and event it causes lands in the copy, where the
caller can read it, and nowhere else.

Mirror copies are the one side effect that would leave the machine: `bpf_clone_redirect` in a
test run transmits a real clone on the named device. Every session of the copy is therefore
pointed at an ifindex no device can have, so the clone fails before anything is sent and the
copy's own statistics count it as dropped: a frame the session would have copied.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from dataplane import abi, bpf, syscalls
from dataplane.events import EventReader
from dataplane.switch import MAPS, SwitchDataplane

# what the programs only add to start empty in a copy (the trace reads what its packet added);
# everything else - configuration and state they read - is copied from the live maps
# the firewall's per-CPU caches too: empty, every packet takes the slow path they only shortcut
STARTS_EMPTY = (
    "counters",
    "rule_hits",
    "fw_events",
    "events_lost",
    "mirror_stats",
    "team_beacons",
    "flow_cache",
    "policy_cache",
)
SNAPSHOT = tuple(name for name in MAPS if name not in STARTS_EMPTY)
# ifindexes are allocated in 1..INT_MAX: as the kernel's int, this one is -1 and names no device
NO_DEVICE = 0xFFFFFFFF


class PrivateCopyError(RuntimeError):
    pass


def save_code(dp: SwitchDataplane, path: Path) -> None:
    """Record the instructions of a dataplane this process loaded, for `private_copy` later."""
    if dp._owned is None:
        raise ValueError("only a dataplane loaded by this process has its instructions")
    bpf.relocatable(dp._owned).save(path)


class PrivateCopy(SwitchDataplane):
    """A SwitchDataplane of its own; its programs are loaded when first asked for (`program`),
    each checked against the one pinned at the live dataplane."""

    def __init__(self, loaded: bpf.Loaded, code: bpf.Relocatable, pin_dir: Path, source: Path) -> None:
        super().__init__(loaded.programs, loaded.maps, loaded)
        self._code, self._pins, self._source = code, pin_dir, source

    def program(self, name: str) -> int:
        if name not in self.programs:
            assert self._owned is not None
            if name not in self._code.code:
                raise PrivateCopyError(f"{self._source}: no program {name}")
            fd = bpf.load_program(self._owned, self._code, name)
            live = syscalls.obj_get(self._pins / f"prog_{name}")
            try:
                if syscalls.prog_tag(live) != syscalls.prog_tag(fd):
                    raise PrivateCopyError(
                        f"{self._source}: program {name} is not the one attached to the ports"
                    )
            finally:
                os.close(live)
        return self.programs[name]


def private_copy(pin_dir: Path, code: Path, programs: tuple[str, ...] | None = None) -> PrivateCopy:
    """A private instance of the dataplane pinned at `pin_dir`, from the instructions in `code`
    (saved by `save_code` when it was loaded), with a snapshot of its live maps. `programs`: those
    to load now (default: every one the live dataplane has); others load when first asked for."""
    try:
        relocatable = bpf.Relocatable.read(code)
    except FileNotFoundError:
        raise PrivateCopyError(f"{code}: no record of the loaded instructions (rebuild the lab)") from None
    live = SwitchDataplane.open(pin_dir)
    try:
        copy = PrivateCopy(bpf.load_relocatable(relocatable, ()), relocatable, pin_dir, code)
        try:
            for name in SNAPSHOT:
                if name in live.maps:
                    _check_same_map(live.maps[name], copy.maps[name], name)
                    syscalls.map_copy(live.maps[name], copy.maps[name])
            if "mirror_sessions" in copy.maps:
                _disarm_mirrors(copy.maps["mirror_sessions"])
            for name in live.programs if programs is None else programs:
                copy.program(name)
        except BaseException:
            copy.close()
            raise
    finally:
        live.close()
    return copy


def _check_same_map(live: int, copy: int, name: str) -> None:
    a, b = syscalls.map_info(live), syscalls.map_info(copy)
    shape = ("type", "key_size", "value_size", "max_entries")
    if any(getattr(a, f) != getattr(b, f) for f in shape):
        raise PrivateCopyError(f"map {name}: the live map and the recorded one differ in shape")


def _disarm_mirrors(fd: int) -> None:
    """Point every session at NO_DEVICE (and no onward port), then read them all back."""
    session = abi.MirrorSession()
    for sid in range(abi.MAX_MIRRORS):
        key = ctypes.c_uint32(sid)
        if syscalls.map_lookup(fd, key, session) and (session.ifindex or session.dest):
            session.ifindex, session.dest = NO_DEVICE if session.ifindex else 0, 0
            syscalls.map_update(fd, key, session)
    for sid in range(abi.MAX_MIRRORS):
        if syscalls.map_lookup(fd, ctypes.c_uint32(sid), session) and session.ifindex not in (0, NO_DEVICE):
            raise PrivateCopyError(f"mirror session {sid} of the private copy still names a device")


def events(copy: SwitchDataplane) -> list[abi.FwEvent]:
    """The verdict events the copy's programs produced so far (its own ring buffer, drained)."""
    if "fw_events" not in copy.maps:
        return []
    with EventReader() as reader:
        reader.add(copy.maps["fw_events"], None)
        return [ev for _, ev in reader.poll(0)]
