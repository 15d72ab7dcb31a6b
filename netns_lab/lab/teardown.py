"""Remove everything a lab owns, and nothing else; idempotent, and safe after a crash."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
from dataclasses import dataclass, field

from netns_lab.kernel import netns
from netns_lab.lab.state import LabState, pin_dir, state_dir

log = logging.getLogger(__name__)


@dataclass
class Teardown:
    lab: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    pins: bool = False
    state: bool = False

    @property
    def anything(self) -> bool:
        return bool(self.namespaces or self.processes or self.pins or self.state)


def _stop_builder(state: LabState) -> None:
    """A `nlab up` still building this lab would race us: stop it first (exact pid + start time)."""
    if state.pid != os.getpid() and state.builder_alive() and state.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)


def down(lab: str) -> Teardown:
    """Delete the lab's namespaces (with their links and processes), pins and state."""
    result = Teardown(lab)
    state = LabState.read(lab)
    if state is not None:
        _stop_builder(state)
        names = state.namespaces()
        inodes = {i for i in (netns.inode(n) for n in names) if i is not None}
        result.processes = netns.kill_processes(inodes) if inodes else []
        for name in reversed(names):
            if netns.delete(name):
                result.namespaces.append(name)
    if pin_dir(lab).exists():
        shutil.rmtree(pin_dir(lab))
        result.pins = True
    if state_dir(lab).exists():
        shutil.rmtree(state_dir(lab))
        result.state = True
    log.info("lab %s down: %d namespaces, %d processes", lab, len(result.namespaces), len(result.processes))
    return result
