"""Hooks on `nlab up` for the rollback tests ONLY: every namespace the build makes is recorded
with its inode as it is made, and every sweeper the build starts is waited for until it lives in
its namespace.

A rollback test needs both to prove that nothing was left running: a process outlives the
deletion of its namespace, and is then found only by that namespace's inode (netns.pids_in);
and a sweeper that had not entered its namespace yet when the build failed would be found
nowhere. Run as `python -m tests.lab.build_shim RECORD ARGS...`: installs the hooks, then runs
`nlab ARGS...`; RECORD receives one `name inode` line per namespace. In-process tests call
`install` themselves. Never imported by product code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from netns_lab.kernel import netns
from netns_lab.lab import sweeper

Record = Callable[[str, int], None]


def _in_namespace(pid: int, inode: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                return
        except FileNotFoundError:
            raise AssertionError(f"sweeper {pid} ended before it entered its namespace") from None
        time.sleep(0.01)
    raise AssertionError(f"sweeper {pid} did not enter its namespace in {timeout} s")


def install(record: Record, patch: Callable[[object, str, object], None] = setattr) -> None:
    """Patch netns.create and sweeper.start (as the builder calls them) with the two hooks;
    `patch` is pytest's monkeypatch.setattr in-process, so that the test undoes them."""
    create, start = netns.create, sweeper.start

    def create_and_record(name: str) -> None:
        create(name)
        inode = netns.inode(name)
        assert inode is not None, name
        record(name, inode)

    def start_and_wait(lab: str, host: str, namespace: str, *args: object) -> subprocess.Popen[bytes]:
        proc = start(lab, host, namespace, *args)  # type: ignore[arg-type]
        inode = netns.inode(namespace)
        assert inode is not None, namespace
        _in_namespace(proc.pid, inode)
        return proc

    patch(netns, "create", create_and_record)
    patch(sweeper, "start", start_and_wait)


def recorded(path: Path) -> dict[str, int]:
    """Namespace -> inode, from a RECORD file."""
    if not path.exists():
        return {}
    return {name: int(inode) for name, inode in (line.split() for line in path.read_text().splitlines())}


if __name__ == "__main__":
    out = Path(sys.argv[1])

    def append(name: str, inode: int) -> None:
        with out.open("a") as f:
            f.write(f"{name} {inode}\n")

    install(append)
    from netns_lab.cli import main

    raise SystemExit(main(sys.argv[2:]))
