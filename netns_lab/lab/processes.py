"""The lab's own processes (connection sweepers, the event hub, the overlay controller, team
monitors): started detached from the caller's session, so a Ctrl-C of `nlab up` does not reach
them; each logs into the lab's state directory; rollback stops them by their handle, teardown by
ending every process inside the lab's namespaces (never by name)."""

from __future__ import annotations

import subprocess
import sys

from netns_lab.lab.state import log_path


def spawn(lab: str, module: str, args: list[str], log: str) -> subprocess.Popen[bytes]:
    """`python -m module args...`, its stderr appended to the lab's `log`.log."""
    with open(log_path(lab, log), "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Used by the builder's rollback: the namespace it lives in is deleted next."""
    proc.terminate()
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
