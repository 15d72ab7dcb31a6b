"""The CLI against a running copy of the reference lab: what it shows and how it refuses.

    hv1 [vs2: web1 web2 | vsmon: analyzer]        web1-ids:  web1 -> analyzer (both)
    hv2 [prod: app1.eth0 app1.eth1 db1 ...]       app1-wire: app1.eth0 -> tor2 -> monitor (IDS)
    hv3 [ops: app2 desk1 ...]                     groups web, app, db, mgmt; rules 10..91

Sessions show their sources as declared, a typo never makes a security group, `fw counters`
speaks human unless asked for JSON, live-change errors name the flag typed, a refused `up`
prints the JSON error document, status classes drops as expected filtering or violations, and
`exec` without a command opens a shell only on a terminal. One lab for the module.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.lab.conftest import REFERENCE, REPO, Lab, nlab

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lab tests need root (namespaces, eBPF)")


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_sessions_show_their_sources_as_declared(reference_lab: Lab) -> None:
    listed = {
        s["name"]: s for s in _json(nlab("mirror", "--lab", reference_lab.name, "list", "--json"))["sessions"]
    }
    assert (listed["app1-wire"]["sources"], listed["app1-wire"]["source_vms"]) == (["app1.eth0"], ["app1"])
    assert listed["web1-ids"]["sources"] == ["web1"]
    status = {s["name"]: s for s in reference_lab.status()["mirrors"]}
    assert status["app1-wire"]["sources"] == ["app1.eth0"]
    text = nlab("mirror", "--lab", reference_lab.name, "list").stdout
    assert next(line for line in text.splitlines() if line.startswith("app1-wire")).split()[1] == "app1.eth0"


def _groups(lab: Lab) -> dict[str, list[str]]:
    return _json(nlab("fw", "--lab", lab.name, "show", "--json"))["groups"]


def test_a_typo_never_makes_a_security_group(reference_lab: Lab) -> None:
    before = _groups(reference_lab)
    proc = nlab("fw", "--lab", reference_lab.name, "group", "add", "webb", "web2")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "unknown security group 'webb' (did you mean 'web'?" in proc.stderr
    assert "--create" in proc.stderr
    assert _groups(reference_lab) == before
    made = nlab("fw", "--lab", reference_lab.name, "group", "add", "--create", "spare", "web2")
    try:
        assert made.returncode == 0, made.stderr
        assert (
            made.stdout.strip()
            == f"web2 added to group spare (a new group) on every host of lab {reference_lab.name}"
        )
        assert _groups(reference_lab) == {**before, "spare": ["web2"]}
    finally:
        nlab("fw", "--lab", reference_lab.name, "group", "del", "spare", "web2", check=True)


def test_fw_counters_speak_human_unless_asked_for_json(reference_lab: Lab) -> None:
    text = nlab("fw", "--lab", reference_lab.name, "counters")
    assert text.returncode == 0, text.stderr
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.stdout)
    assert "default policy" in text.stdout and "tracked connections:" in text.stdout
    doc = _json(nlab("fw", "--lab", reference_lab.name, "counters", "--json"))
    assert [r["rule"] for r in doc["rules"]][-1] == "default"
    assert {10, 30, 91} <= {r["rule"] for r in doc["rules"]}


def test_a_rule_with_a_bad_flag_is_refused_at_the_flag(reference_lab: Lab) -> None:
    rule = ["--id", "77", "--apply", "web", "--direction", "in", "--peer", "any", "--proto", "tcp"]
    proc = nlab(
        "fw", "--lab", reference_lab.name, "add", *rule, "--ports", "8080-8000", "--action", "allow", "--json"
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "nlab fw add: --ports: 8080-8000 is backwards: write 8000-8080"
    problems = json.loads(proc.stdout)["error"]["problems"]
    assert problems == [
        {"file": "nlab fw add", "path": "--ports", "reason": "8080-8000 is backwards: write 8000-8080"}
    ]
    added = nlab("fw", "--lab", reference_lab.name, "add", *rule, "--ports", "8000-8080", "--action", "allow")
    try:
        assert added.returncode == 0, added.stderr
        assert added.stdout.startswith(f"rule 77 added on every host of lab {reference_lab.name}")
    finally:
        nlab("fw", "--lab", reference_lab.name, "del", "77", check=True)


def test_a_refused_up_prints_the_error_document(reference_lab: Lab) -> None:
    proc = nlab("up", str(REFERENCE), "--name", reference_lab.name, "--json")
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == 2 and f"lab {reference_lab.name!r} is already up" in error["message"]


def _port(doc: dict[str, Any], node: str, port: str) -> dict[str, Any]:
    nodes = {n["name"]: n for n in [*doc["hosts"], *doc["switches"]]}
    return next(p for p in nodes[node]["ports"] if p["name"] == port)


def _drops(doc: dict[str, Any], node: str, port: str) -> dict[tuple[str, str, str], int]:
    return {(d["reason"], d["direction"], d["class"]): d["packets"] for d in _port(doc, node, port)["drops"]}


def test_status_tells_expected_filtering_from_violations(reference_lab: Lab) -> None:
    """One UDP datagram app1 -> db1 that no rule allows: one more policy violation, `out` of app1
    as in `fw events`; the broadcasts of other VLANs app1.eth1 never sees are expected."""
    before = _drops(reference_lab.status(), "hv2", "app1-1")
    nlab(
        "exec",
        "--lab",
        reference_lab.name,
        "app1",
        "--",
        "sh",
        "-c",
        "echo x | nc -u -w0 10.40.0.31 9",
        check=True,
    )
    after = _drops(reference_lab.status(), "hv2", "app1-1")
    grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert grown.get(("policy", "out", "violation")) == 1, grown
    assert not {k for k in grown if k[2] == "violation"} - {("policy", "out", "violation")}, grown
    expected = [k for k in after if k[2] == "expected"]
    assert expected and all(k[:2] == ("vlan-mismatch", "in") for k in expected), after
    text = nlab("status", reference_lab.name).stdout
    assert "filtered (expected)" in text and "violations" in text


def test_exec_without_a_command_needs_a_terminal(reference_lab: Lab) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "netns_lab", "exec", "--lab", reference_lab.name, "web1"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "stdin is not a terminal" in proc.stderr, proc.stderr


def test_exec_without_a_command_opens_a_shell_in_the_vm(reference_lab: Lab) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: nlab on the pty, as a user at a terminal
        os.chdir(REPO)
        os.execv(
            sys.executable, [sys.executable, "-m", "netns_lab", "exec", "--lab", reference_lab.name, "web1"]
        )
    os.write(fd, b"ip -o -4 addr show dev eth0; exit\n")
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # read until the shell exits (EOF on the pty), the barrier
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        try:
            chunk = os.read(fd, 4096) if ready else b""
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "10.20.0.11/24" in text and f"[{reference_lab.name}:web1]" in text, text
