#!/usr/bin/env python3
"""Check that bcc can compile and load a TC program on this machine.

Compiles ebpf/smoke.c with bcc and loads it as a SCHED_CLS program. Nothing is attached
to any interface: the root namespace is never touched. Exits 0 and prints one line
"bcc ok: ..." on success, 1 with the probable cause otherwise.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

SMOKE_SRC = Path(__file__).resolve().parent.parent / "ebpf" / "smoke.c"


def fail(msg: str) -> int:
    print(f"check_bcc: {msg}", file=sys.stderr)
    return 1


def main() -> int:
    try:
        from bcc import BPF
    except ImportError as exc:
        return fail(
            f"cannot import bcc ({exc}).\n"
            "  bcc comes from the Debian package python3-bpfcc (apt-get install python3-bpfcc) and is\n"
            "  only visible to Debian's /usr/bin/python3 or to a venv made with\n"
            "  '/usr/bin/python3 -m venv --system-site-packages .venv'.\n"
            "  Fix: run 'make setup' as root (scripts/bootstrap.sh recreates such a .venv)."
        )

    if os.geteuid() != 0:
        return fail("loading eBPF programs needs root (try: sudo make setup).")
    if not SMOKE_SRC.is_file():
        return fail(f"missing {SMOKE_SRC}")

    build = Path("/lib/modules") / platform.release() / "build"
    start = time.monotonic()
    try:
        bpf = BPF(src_file=str(SMOKE_SRC).encode())
        fn = bpf.load_func(b"smoke_pass", BPF.SCHED_CLS)
    except Exception as exc:
        hint = (
            f"kernel headers: bcc needs {build} (currently "
            + ("present" if build.exists() else "missing")
            + "). Fix: run 'make setup' as root; scripts/bootstrap.sh installs linux-headers-amd64"
            " and links build/source to /usr/src/linux-headers-*."
        )
        return fail(f"could not compile/load {SMOKE_SRC.name}: {exc}\n  probable cause: {hint}")
    elapsed_ms = (time.monotonic() - start) * 1000

    try:
        if not isinstance(fn.fd, int) or fn.fd < 0:
            return fail(f"load_func returned an invalid program fd ({fn.fd!r})")
        os.fstat(fn.fd)  # raises if the fd is not open
    except OSError as exc:
        return fail(f"program fd {fn.fd} is not valid: {exc}")
    finally:
        bpf.cleanup()

    print(f"bcc ok: loaded a TC program ({elapsed_ms:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
