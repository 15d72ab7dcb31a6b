"""With two labs up, every command that acts on a running lab reaches the lab named by --lab (in
any position after the command words), else by $NLAB_LAB, and refuses with exit 2, naming the
labs up, when neither is given.

    lab A: tor1 --- hv1 --- [vs1] --+-- a1 10.0.0.1/24      lab B: the same file under another name
                                    +-- a2 10.0.0.2/24
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import nlab
from tests.lab.conftest import Lab, running

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lab tests need root (namespaces, eBPF)")
TOPOLOGY = Path(__file__).with_name("two_vms.yaml")


@pytest.fixture(scope="module")
def two_labs() -> Iterator[tuple[Lab, Lab]]:
    with running(TOPOLOGY) as a, running(TOPOLOGY) as b:
        yield a, b


def _lab_of_json(proc: subprocess.CompletedProcess[str]) -> str:
    return json.loads(proc.stdout)["lab"]


def _lab_of_graph(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout.split('"')[1]  # graph "NAME" {


def _lab_of_exec(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout.strip().removesuffix("-a1")  # `ip netns identify` in node a1: LAB-a1


def _stream(proc: subprocess.CompletedProcess[str]) -> None:
    """A stream has no lab in its lines: reaching a lab is ending well (exit 0) where a lab that
    is not up is exit 2 (test_a_lab_that_is_not_up_is_named)."""
    return None


# command words, the arguments after them, and how to read which lab answered
COMMANDS: dict[str, tuple[list[str], list[str], Callable[[subprocess.CompletedProcess[str]], str | None]]] = {
    "status": (["status"], ["--json"], _lab_of_json),
    "exec": (["exec"], ["a1"], _lab_of_exec),
    "graph": (["graph"], [], _lab_of_graph),
    "vlans": (["vlans"], ["--json"], _lab_of_json),
    "trace": (["trace"], ["a1", "--to", "10.0.0.2", "--dport", "80", "--json"], _lab_of_json),
    "fw show": (["fw", "show"], ["--json"], _lab_of_json),
    "fw counters": (["fw", "counters"], ["--json"], _lab_of_json),
    "fw connections": (["fw", "connections"], ["--json"], _lab_of_json),
    "fw events": (["fw", "events"], ["--json", "--duration", "0.2"], _stream),
    "mirror list": (["mirror", "list"], ["--json"], _lab_of_json),
    "watch": (["watch"], ["--json", "--duration", "0.2"], _stream),
    "overlay show": (["overlay", "show"], ["--json"], _lab_of_json),
    "overlay check": (["overlay", "check"], ["--json"], _lab_of_json),
    "heal": (["heal"], ["--all", "--json"], _lab_of_json),
}


TAIL = {"exec": ["--", "ip", "netns", "identify"]}  # the command exec runs: after every option


@pytest.mark.parametrize("command", COMMANDS)
def test_every_lab_command_reaches_the_lab_chosen(two_labs: tuple[Lab, Lab], command: str) -> None:
    a, b = two_labs
    words, rest, lab_of = COMMANDS[command]
    tail = TAIL.get(command, [])
    by_flag = nlab(*words, *rest, "--lab", a.name, *tail, env_lab=b.name)  # the flag beats the variable
    assert by_flag.returncode == 0, by_flag.stderr
    assert lab_of(by_flag) in (a.name, None)
    short = nlab(*words, "-l", b.name, *rest, *tail)  # before the arguments, short
    assert short.returncode == 0, short.stderr
    assert lab_of(short) in (b.name, None)
    by_env = nlab(*words, *rest, *tail, env_lab=b.name)
    assert by_env.returncode == 0, by_env.stderr
    assert lab_of(by_env) in (b.name, None)
    neither = nlab(*words, *rest, *tail)
    assert neither.returncode == 2, neither.stderr
    assert "several labs are up" in neither.stderr and a.name in neither.stderr and b.name in neither.stderr


@pytest.mark.parametrize("command", ["fw events", "watch", "status"])
def test_a_lab_that_is_not_up_is_named(two_labs: tuple[Lab, Lab], command: str) -> None:
    words, rest, _ = COMMANDS[command]
    ghost = two_labs[0].name + "x"
    for proc in (nlab(*words, *rest, "--lab", ghost), nlab(*words, *rest, env_lab=ghost)):
        assert proc.returncode == 2 and f"lab {ghost!r}" in proc.stderr and "is not up" in proc.stderr


def test_audit_of_a_running_lab_is_the_audit_of_its_topology(two_labs: tuple[Lab, Lab]) -> None:
    """`nlab audit` reads the topology the lab chosen was built from (--lab, its positional form,
    $NLAB_LAB): the document of the file, under the lab's name."""
    a, b = two_labs
    file_doc = json.loads(nlab("audit", str(TOPOLOGY), "--json").stdout)
    for proc, lab in (
        (nlab("audit", "--lab", a.name, "--json", env_lab=b.name), a),
        (nlab("audit", b.name, "--json"), b),
        (nlab("audit", "--json", env_lab=a.name), a),
    ):
        assert proc.returncode in (0, 3), proc.stderr
        assert json.loads(proc.stdout) == {**file_doc, "lab": lab.name}
    neither = nlab("audit", "--json")
    assert neither.returncode == 2 and "several labs are up" in neither.stderr


def test_down_takes_the_lab_chosen_and_refuses_without_one(two_labs: tuple[Lab, Lab]) -> None:
    """Last in the module: it takes both labs down."""
    a, b = two_labs
    neither = nlab("down", "--json")
    assert neither.returncode == 2 and a.name in neither.stderr and b.name in neither.stderr
    assert a.status()["lab"] == a.name and b.status()["lab"] == b.name  # nothing was removed
    assert _lab_of_json(down := nlab("down", "--json", "--lab", a.name)) == a.name, down.stderr
    assert json.loads(down.stdout)["removed"] is True
    assert _lab_of_json(down := nlab("down", "--json", env_lab=b.name)) == b.name, down.stderr
    assert json.loads(down.stdout)["removed"] is True
