"""Lab tests: real namespaces, each test lab under a name of its own, always torn down.

`Lab` runs the real `nlab` CLI as a subprocess (as a user would) and checks, after teardown,
that nothing of the lab remains: namespaces, state, pins, processes.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dataplane.switch import SwitchDataplane
from netns_lab.kernel import netns
from netns_lab.lab.state import pin_dir, state_dir

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "labs" / "nist-800-125b.yaml"


def nlab(*args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "netns_lab", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"nlab {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def unique_name() -> str:
    return "t" + secrets.token_hex(3)


def lab_namespaces(name: str) -> list[str]:
    """Namespaces that carry the lab's prefix (read-only check, never used to delete)."""
    if not netns.NETNS_RUN_DIR.is_dir():
        return []
    return sorted(p.name for p in netns.NETNS_RUN_DIR.iterdir() if p.name.startswith(name + "-"))


def leftovers(name: str, inodes: set[int]) -> dict[str, object]:
    found: dict[str, object] = {}
    if lab_namespaces(name):
        found["namespaces"] = lab_namespaces(name)
    if state_dir(name).exists():
        found["state"] = str(state_dir(name))
    if pin_dir(name).exists():
        found["pins"] = str(pin_dir(name))
    pids = netns.pids_in(inodes) if inodes else []
    if pids:
        found["processes"] = pids
    return found


@dataclass
class Lab:
    name: str
    topology: Path
    inodes: set[int] = field(default_factory=set)

    def ns(self, node: str) -> str:
        return f"{self.name}-{node}"

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        proc = nlab("up", str(self.topology), "--name", self.name, *extra)
        self.inodes |= {i for i in (netns.inode(n) for n in lab_namespaces(self.name)) if i}
        return proc

    def status(self) -> dict:
        return json.loads(nlab("status", self.name, "--json", check=True).stdout)

    def down(self) -> subprocess.CompletedProcess[str]:
        self.inodes |= {i for i in (netns.inode(n) for n in lab_namespaces(self.name)) if i}
        return nlab("down", self.name)


@pytest.fixture
def make_lab() -> Iterator:
    """Factory of labs; each is torn down at the end, then checked for leftovers."""
    labs: list[Lab] = []

    def factory(topology: Path | str = REFERENCE) -> Lab:
        lab = Lab(unique_name(), Path(topology))
        labs.append(lab)
        return lab

    yield factory
    problems = {}
    for lab in labs:
        lab.down()
        if found := leftovers(lab.name, lab.inodes):
            problems[lab.name] = found
    assert not problems, f"labs left things behind: {problems}"


def reference_variant(directory: Path, name: str, edits: dict[str, str]) -> Path:
    """A copy of the reference lab with each `old` text replaced by `new` (each must occur once)."""
    text = REFERENCE.read_text()
    for old, new in edits.items():
        assert text.count(old) == 1, f"{REFERENCE} no longer has `{old}` exactly once: update the test"
        text = text.replace(old, new)
    path = directory / name
    path.write_text(text)
    return path


@contextlib.contextmanager
def running(topology: Path) -> Iterator[Lab]:
    """A lab up for the body under a name of its own; down and checked for leftovers after."""
    lab = Lab(unique_name(), topology)
    try:
        proc = lab.up()
        assert proc.returncode == 0, proc.stderr
        yield lab
    finally:
        lab.down()
    assert not leftovers(lab.name, lab.inodes)


@pytest.fixture(scope="module")
def reference_lab() -> Iterator[Lab]:
    """The reference lab, up once for a module of read-mostly tests."""
    with running(REFERENCE) as lab:
        yield lab


def cmdline(pid: int) -> str:
    """A process's command line, spaces between arguments; "" once it has ended."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def dataplane() -> Iterator[SwitchDataplane]:
    """A hypervisor's programs and maps loaded for a module's tests, not pinned: nothing outlives
    them but what a test attaches (and removes)."""
    dp = SwitchDataplane.load()
    try:
        yield dp
    finally:
        dp.close()
