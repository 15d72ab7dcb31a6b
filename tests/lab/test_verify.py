"""`nlab verify` on a small lab: healthy it passes; a rule edited in a kernel map, a detached
program and a VLAN removed from a trunk by hand each make it fail, naming the place.

    tor1 (trunks front 110, back 120)
      |-- hv1.eth0: web 10.1.0.11 (front), cli 10.2.0.12 (back), ana (analyzer of web's frames)
      |-- hv2.eth0: app 10.1.0.21 (front), db 10.2.0.31 (back)

Every break is made by hand behind the lab's back (as an operator or an attacker with root
would), checked, and undone in the same test; the in-process cross-check then shows the lab as
modelled again (the positive control of the next test).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dataplane import abi, lpm, syscalls
from dataplane.switch import SwitchDataplane
from netns_lab import cli
from netns_lab.features.compliance.verify import crosscheck, reachability
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.running import RunningLab
from netns_lab.lab.state import pin_dir
from tests.lab.conftest import Lab, nlab, running

TOPOLOGY = Path(__file__).with_name("verify_lab.yaml")
CHECKS = {"crosscheck", "reachability", "mirror", "promiscuous", "attacks", "failover", "migration"}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running(TOPOLOGY) as built:
        yield built


def verify(lab: Lab, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = nlab("verify", "--lab", lab.name, "--json", *extra)
    return proc.returncode, json.loads(proc.stdout)


def verify_here(lab: Lab, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    """`nlab verify --json` run in this process (no interpreter to start)."""
    capsys.readouterr()
    code = cli.main(["verify", "--lab", lab.name, "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def verify_untraced(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    """The same, tracing no disagreement (a trace loads programs through the kernel's verifier
    for seconds; the rule test shows traces)."""
    monkeypatch.setattr(reachability, "MAX_TRACES", 0)
    return verify_here(lab, capsys)


def check(doc: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in doc["checks"] if c["id"] == cid)


def modelled(lab: Lab) -> list[dict[str, Any]]:
    with RunningLab(lab.name) as live:
        return crosscheck.run(live)


@contextlib.contextmanager
def opened(lab: Lab, node: str) -> Iterator[tuple[SwitchDataplane, Netlink]]:
    with SwitchDataplane.open(pin_dir(lab.name) / node) as dp, Netlink(lab.ns(node)) as nl:
        yield dp, nl


def test_a_healthy_lab_passes_with_evidence(lab: Lab, tmp_path: Path) -> None:
    code, doc = verify(lab, "--evidence", str(tmp_path))
    assert code == 0, json.dumps([c for c in doc["checks"] if c["status"] == "fail"], indent=1)
    assert doc["ok"] is True and doc["lab"] == lab.name
    assert {c["id"] for c in doc["checks"]} == CHECKS
    for c in doc["checks"]:
        assert set(c) >= {"id", "recommendations", "status", "reason", "findings", "evidence"}
    table = doc["truth_table"]
    assert all(r["expected"] == r["observed"] for r in table)
    allowed = {(r["src"], r["dst"], r["proto"], r["port"]) for r in table if r["expected"] == "allow"}
    # the model's allowances, each seen with real packets; web -> db crosses VLANs: never
    assert {("web", "app", "tcp", 8080), ("cli", "db", "tcp", 5432), ("cli", "db", "udp", 53)} <= allowed
    assert ("app", "web", "tcp", 8080) not in allowed and not any(r[:2] == ("web", "db") for r in allowed)
    assert (
        check(doc, "attacks")["counters"]["qinq"] == 2 and check(doc, "attacks")["counters"]["spoof-ip"] == 4
    )
    for cid in ("reachability", "mirror", "promiscuous", "attacks", "failover"):
        files = check(doc, cid)["evidence"]
        assert (
            Path(files["pcap"]).stat().st_size > 24
            and json.loads(Path(files["counters"]).read_text())["delta"]
        )
    assert "web-ids: web<->app out 3, in 3" in check(doc, "mirror")["reason"]
    failover = check(doc, "failover")
    assert failover["status"] == "pass" and "moved eth0 -> eth1" in failover["reason"]
    assert "3/3 echoes app -> web answered" in failover["reason"]


def test_a_rule_edited_in_a_kernel_map_is_found(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with opened(lab, "hv2") as (dp, _):
        gen = dp.firewall.config().generation & 1
        rows = syscalls.map_items(dp.maps["policy"], lpm.PolicyKey, lpm.PolicyValue)
        key, value = next((k, v) for k, v in rows if k.gen == gen and v.rule == 20)
        kept = lpm.PolicyValue.from_buffer_copy(bytes(value))
        value.verdict = abi.Verdict.DENY
        syscalls.map_update(dp.maps["policy"], key, value)
        try:
            code, doc = verify_here(lab, capsys)
        finally:
            syscalls.map_update(dp.maps["policy"], key, kept)
    assert code == 3 and doc["ok"] is False
    [found] = check(doc, "crosscheck")["findings"]
    assert (
        found["where"]
        == f"hv2 map policy (generation {gen}), key app.eth0 in tcp port 8080 peer 10.1.0.11/32"
    )
    assert (found["expected"], found["observed"]) == ("allow (rule 20)", "deny (rule 20)")
    [wrong] = check(doc, "reachability")["findings"]
    assert wrong["where"] == "web -> app 10.1.0.21 tcp/8080" and wrong["trace"]["outcome"] == "dropped"
    assert wrong["trace"]["stages"][-1]["node"] == "hv2" and wrong["trace"]["stages"][-1]["rule"] == 20
    assert modelled(lab) == []


def test_a_detached_program_is_found(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with opened(lab, "hv1") as (dp, nl):
        index = nl.index("web-0")
        sock = nl.tc_socket()
        dp.detach(sock, index)
        try:
            code, doc = verify_untraced(lab, monkeypatch, capsys)
        finally:
            dp.attach(sock, index, vm=True)
    assert code == 3
    found = {(f["what"], f["where"]) for f in check(doc, "crosscheck")["findings"]}
    assert found == {
        ("program not attached", "hv1 port web-0 ingress"),
        ("program not attached", "hv1 port web-0 egress"),
    }
    assert check(doc, "reachability")["status"] == "fail"  # untagged, web's frames reach nobody
    assert modelled(lab) == []


def test_a_vlan_removed_from_a_trunk_is_found(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with opened(lab, "tor1") as (dp, nl):
        index = nl.index("hv2-eth0")
        kept = dp.port(index)
        cut = abi.Port.from_buffer_copy(bytes(kept))
        cut.allowed[120 >> 6] &= ~(1 << (120 & 63))  # VLAN back
        syscalls.map_update(dp.maps["ports"], ctypes.c_uint32(index), cut)
        try:
            code, doc = verify_untraced(lab, monkeypatch, capsys)
        finally:
            syscalls.map_update(dp.maps["ports"], ctypes.c_uint32(index), kept)
    assert code == 3
    [found] = check(doc, "crosscheck")["findings"]
    assert found["where"] == f"tor1 port hv2-eth0 (map ports, key {index})"
    assert (found["expected"], found["observed"]) == (
        "trunk [110, 120] tagged only guard",
        "trunk [110] tagged only guard",
    )
    wrong = {f["where"] for f in check(doc, "reachability")["findings"]}
    assert "cli -> db 10.2.0.31 tcp/5432" in wrong and not any(w.startswith("web ") for w in wrong)
    assert modelled(lab) == []


def test_bad_input_exits_2(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, doc = verify_here(lab, capsys, "--evidence", str(blocker / "sub"))
    assert (
        code == 2
        and doc["error"]["message"] == f"--evidence {blocker / 'sub'}: cannot write: Not a directory"
    )
    code = cli.main(["verify", "--lab", lab.name + "x", "--json"])
    assert code == 2 and "is not up" in json.loads(capsys.readouterr().out)["error"]["message"]
    assert cli.main(["verify", "--lab", lab.name, "--bogus"]) == 2
