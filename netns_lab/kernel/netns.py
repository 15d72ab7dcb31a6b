"""Named network namespaces: create, enter, list their processes, delete.

Done in-process with unshare/setns/mount (as `ip netns add` does) rather than through
pyroute2's helpers, which fork a child per call: a lab of 200 VMs would pay for 400 forks.
setns() changes only the calling thread, so `inside()` is safe with other threads running.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(OSError):
    pass


def _check(result: int, what: str, name: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise NamespaceError(err, f"{what}: {os.strerror(err)}", name)


def path(name: str) -> Path:
    return NETNS_RUN_DIR / name


def exists(name: str) -> bool:
    return path(name).exists()


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point so that namespace binds propagate (as iproute2 does)."""
    NETNS_RUN_DIR.mkdir(parents=True, exist_ok=True)
    run_dir = bytes(NETNS_RUN_DIR)
    if _libc.mount(b"", run_dir, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(_libc.mount(run_dir, run_dir, b"none", MS_BIND | MS_REC, None), "bind /run/netns", "")
    _check(_libc.mount(b"", run_dir, b"none", MS_SHARED | MS_REC, None), "share /run/netns", "")


def create(name: str) -> None:
    """Create the named namespace; EEXIST if it is already there (never adopt a stranger's)."""
    _ensure_run_dir()
    target = path(name)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    os.close(fd)
    try:
        with _restore_netns():
            _check(_libc.unshare(CLONE_NEWNET), "unshare", name)
            _check(
                _libc.mount(b"/proc/thread-self/ns/net", bytes(target), b"none", MS_BIND, None),
                "bind namespace",
                name,
            )
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()
        raise


@contextlib.contextmanager
def _restore_netns() -> Iterator[None]:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        yield
    finally:
        # Failing to come back would leave this thread in a lab namespace: never continue then.
        if _libc.setns(own, CLONE_NEWNET) != 0:
            os.abort()
        os.close(own)


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the body with this thread in namespace `name`; sockets made there stay there."""
    fd = os.open(path(name), os.O_RDONLY)
    try:
        with _restore_netns():
            _check(_libc.setns(fd, CLONE_NEWNET), "setns", name)
            yield
    finally:
        os.close(fd)


def enter(name: str) -> None:
    """Move this thread into `name` for good (used right before exec)."""
    fd = os.open(path(name), os.O_RDONLY)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), "setns", name)
    finally:
        os.close(fd)


def inode(name: str) -> int | None:
    try:
        return path(name).stat().st_ino
    except FileNotFoundError:
        return None


def pids_in(inodes: set[int]) -> list[int]:
    """Processes whose network namespace is one of `inodes` (exact ownership, no name patterns)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino in inodes:
                found.append(int(entry.name))
        except OSError:
            continue  # the process ended, or is a kernel thread we cannot inspect
    return [pid for pid in found if pid != os.getpid()]


def kill_processes(inodes: set[int], grace: float = 1.0) -> list[int]:
    """TERM, then KILL, every process living in one of the namespaces; returns the pids."""
    victims = pids_in(inodes)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and pids_in(inodes):
            time.sleep(0.02)
        if not pids_in(inodes):
            break
    return victims


def delete(name: str) -> bool:
    """Unmount and remove the namespace file; False if it was already gone."""
    target = path(name)
    if not target.exists():
        return False
    if _libc.umount2(bytes(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount (crash between create steps)
            raise NamespaceError(err, f"umount: {os.strerror(err)}", name)
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    return True
