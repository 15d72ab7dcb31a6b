"""README.md's tour, run as printed: each command of its first console block, against a lab of
the test's own.

    README.md "A short tour" ──parse──> `# command` lines and the output printed under each
        └─ make lab / nlab ... ──run (lab name substituted, streams bounded)──> exit code, output

The commands and their printed output are read from the README each time, so the test follows
the README when it changes. A command gets this lab's name where the README relies on the only
lab up (other labs may be up); commands that follow a stream (`fw events`, `watch`) get a bound
(`--count`/`--timeout`, `--duration`) and the traffic the README's output shows. Each printed
line must appear in the real output, with numbers (counters, timings) and `..` placeholders
taken as any value; a line that is only `...` elides rows; a JSON line must have the same keys
and values but for its time and source port. Every command is run and every difference reported.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netns_lab.kernel import netns
from netns_lab.observe import probe
from tests.lab.conftest import REPO, Lab, lab_namespaces, leftovers, unique_name

README = REPO / "README.md"
LAB_IN_README = "nist"
NUMBER = re.compile(r"\d+(\.\d+)?")
POSITIONAL_LAB = {"status", "down", "graph", "vlans"}  # verbs whose lab is an argument
OPTION_LAB = {"exec", "trace", "watch", "fw", "mirror"}  # verbs that take --lab


@dataclass
class Step:
    command: str
    comment: str = ""
    output: list[str] = field(default_factory=list)

    def exit_code(self) -> int:
        """What the README says the command exits with (`# exit code N` in its comment), else 0."""
        found = re.search(r"\bexit code (\d+)", self.comment)
        return int(found.group(1)) if found else 0


def tour(text: str) -> list[Step]:
    """The commands of the first console block after "## A short tour", each with its output."""
    section = text.split("## A short tour", 1)[1]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    steps: list[Step] = []
    for line in block.splitlines():
        if line.startswith("# "):
            command, _, comment = line[2:].partition("  #")
            steps.append(Step(command.strip(), comment.strip()))
        elif steps:
            steps[-1].output.append(line)
    return steps


def _make_target(target: str) -> list[str]:
    """`make lab` is `nlab up $(LAB)`: the Makefile's default topology, read from the Makefile."""
    makefile = (REPO / "Makefile").read_text()
    assert f"{target}: setup\n\t$(NLAB) up $(LAB)" in makefile, (
        f"Makefile's `{target}` changed: update the test"
    )
    found = re.search(r"^LAB\s*\?=\s*(\S+)", makefile, re.M)
    assert found is not None
    return ["up", found.group(1)]


def with_lab(args: list[str], name: str) -> list[str]:
    """`nlab` arguments naming this lab where the README relies on the only lab that is up."""
    verb = args[0]
    if LAB_IN_README in args:
        return [name if a == LAB_IN_README else a for a in args]
    if verb in POSITIONAL_LAB:
        return [verb, name, *args[1:]]
    if verb in OPTION_LAB:
        return [verb, "--lab", name, *args[1:]]
    return args


def _renamed(line: str, name: str) -> str:
    return re.sub(rf"\b{LAB_IN_README}\b(?!-800)", name, line)


def _normal(line: str) -> str:
    """A line without rich's box drawing, single-spaced."""
    kept = "".join(" " if unicodedata.name(c, "").startswith("BOX DRAWINGS") else c for c in line)
    return " ".join(kept.split())


def _pattern(line: str) -> re.Pattern[str]:
    parts = []
    for token in line.split():
        if NUMBER.fullmatch(token):
            parts.append(NUMBER.pattern)
        elif ".." in token:
            parts.append(r"\S+")
        else:
            parts.append(re.escape(token))
    return re.compile(r"(^|\s)" + r"\s".join(parts) + r"($|\s)")


def missing_lines(expected: list[str], actual: str, name: str) -> list[str]:
    """Lines of the README's output that the real output does not have."""
    have = [_normal(line) for line in actual.splitlines()]
    missing = []
    for line in expected:
        line = _renamed(line, name).strip()
        if not line or line == "...":
            continue
        if line.startswith("{"):
            if not any(_same_json(line, h) for h in have if h.startswith("{")):
                missing.append(line)
        elif not any(_pattern(_normal(line)).search(h) for h in have):
            missing.append(line)
    return missing


def _same_json(want: str, have: str) -> bool:
    a, b = json.loads(want), json.loads(have)
    varying = {"time", "sport"}
    return a.keys() == b.keys() and {k: v for k, v in a.items() if k not in varying} == {
        k: v for k, v in b.items() if k not in varying
    }


def _traffic_for(args: list[str], lab: Lab) -> Callable[[threading.Event], None] | None:
    """What a stream of the tour is shown watching: app1's ssh to web1 that its policy denies
    (fw events), web1 pinging web2 (watch web1)."""
    if args[:2] == ["fw", "events"]:
        return lambda stop: _repeat(stop, lambda: probe.tcp(lab.ns("app1"), "10.20.0.11", 22, timeout=0.3))
    if args[:1] == ["watch"]:
        return lambda stop: _repeat(stop, lambda: probe.ping(lab.ns("web1"), "10.20.0.12", count=1))
    return None


def _repeat(stop: threading.Event, action: Callable[[], object]) -> None:
    while not stop.wait(0.2):
        action()


def _bounded(args: list[str]) -> list[str]:
    if args[:2] == ["fw", "events"]:
        return [*args, "--count", "1", "--timeout", "20"]
    if args[:1] == ["watch"]:
        return [*args, "--duration", "3"]
    return args


def run_step(step: Step, lab: Lab, workdir: Path) -> subprocess.CompletedProcess[str] | None:
    nlab = [sys.executable, "-m", "netns_lab"]
    if step.command == ". .venv/bin/activate":
        assert (REPO / ".venv" / "bin" / "nlab").exists()
        return None  # puts nlab on PATH; here every command runs the checkout's netns_lab
    if step.command == "make lab":
        return subprocess.run(
            [*nlab, *_make_target("lab"), "--name", lab.name],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
    args = shlex.split(step.command.split("|", 1)[0])
    assert args[0] == "nlab", f"the tour runs something else than nlab: {step.command}"
    given = args[1:]
    args = with_lab(_bounded(given), lab.name)
    if "|" in step.command:  # the first `|` is the shell's: nlab's output into another tool
        rest = step.command.split("|", 1)[1]
        command = f"{shlex.join([*nlab, *args])} |{rest}"
        return subprocess.run(command, shell=True, cwd=workdir, capture_output=True, text=True, timeout=120)
    if given[0] == "exec" and "--" not in given:  # a shell: it needs a terminal, and an `exit`
        return _in_a_terminal([*nlab, *args], workdir)
    traffic = _traffic_for(given, lab)
    stop = threading.Event()
    sender = threading.Thread(target=traffic, args=(stop,)) if traffic else None
    if sender is not None:
        sender.start()
    try:
        return subprocess.run([*nlab, *args], cwd=workdir, capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        if sender is not None:
            sender.join()


def _in_a_terminal(argv: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """`argv` with a pseudo-terminal as its stdin, as a user at a shell prompt, told to `exit`."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            argv, cwd=workdir, stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        os.write(controller, b"exit\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_the_readme_tour_runs_as_printed(tmp_path: Path) -> None:
    steps = tour(README.read_text())
    assert [s.command for s in steps][:1] == ["make lab"] and steps[-1].command.startswith("nlab down")
    lab = Lab(unique_name(), REPO / "labs" / "nist-800-125b.yaml")
    problems = []
    try:
        for step in steps:
            proc = run_step(step, lab, tmp_path)
            if proc is None:
                continue
            lab.inodes |= {i for i in (netns.inode(n) for n in lab_namespaces(lab.name)) if i}
            want_rc = step.exit_code()
            if proc.returncode != want_rc:
                tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
                problems.append(f"`{step.command}` exited {proc.returncode}, not {want_rc}: {tail}")
            if missing := missing_lines(step.output, proc.stdout, lab.name):
                problems.append(f"`{step.command}` did not print: {missing}")
    finally:
        lab.down()
    assert not leftovers(lab.name, lab.inodes)
    assert not problems, "the README's tour differs from what it does:\n" + "\n".join(problems)
