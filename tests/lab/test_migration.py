"""Live migration on a lab of two hosts (tests/lab/migration.yaml): the kernel NIC firewall's
rules and connection entries follow the VM, with no unfiltered window; a subnet-level firewall
VM's protection does not.

                         tor1  (hv1-eth0: inside, dmz, other; hv2-eth0: inside, dmz)
                +----------+-----------+
   hv1: vs1 cli srv far fw | vsin fw p1      hv2: vs1 x2 (srv and p1 land here)

srv's NIC firewall: in tcp/80 from cli only, default deny both ways (its replies pass as
established only); cli: out tcp/80,81 to srv. fw (nftables) forwards to p1 tcp/80 only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netns_lab.features.firewall import live as fwlive
from netns_lab.features.migration import events
from netns_lab.features.migration import live as migration
from netns_lab.features.migration.plan import plan
from netns_lab.lab.running import RunningLab
from tests.lab.conftest import REPO, Lab, running
from tests.lab.migration_tools import EchoServer, Prober, SynTap, echo, echo_server, tcp

TOPOLOGY = Path(__file__).parent / "migration.yaml"
SRV, P1, X2 = "10.0.0.2", "10.0.2.5", "10.0.2.9"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running(TOPOLOGY) as built:
        yield built


@pytest.fixture(scope="module")
def srv(lab: Lab) -> Iterator[EchoServer]:
    with echo_server(lab.ns("srv"), 80, 81) as server:
        yield server


def host_of(lab: Lab, vm: str) -> str:
    with RunningLab(lab.name) as live:
        return live.topo.vm(vm).host


def connections(lab: Lab, nic: str, sport: int) -> list[str]:
    """The hosts holding an entry of the flow from `sport` on `nic` (as `nlab fw connections`)."""
    with RunningLab(lab.name) as live:
        rows = fwlive.connections(live)
    return sorted(c["host"] for c in rows if c["nic"] == nic and c["sport"] == sport)


def migration_events(lab: Lab, vm: str) -> list[dict[str, Any]]:
    path = events.path(lab.name)
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["vm"] == vm]


def quotas(lab: Lab, vm: str) -> dict[str, tuple[int, int, int]]:
    """Each host's quota counts of `vm`'s endpoint: flows it opened, opened to it, by peer bucket."""
    with RunningLab(lab.name) as live:
        (endpoint,) = plan(live.topo, vm, "hv1" if live.topo.vm(vm).host == "hv2" else "hv2").endpoints
        return {h.host: h.fw.quota_counts(endpoint) for h in live.hosts}


def hits(lab: Lab, rule: int) -> dict[str, int]:
    with RunningLab(lab.name) as live:
        return {h.host: h.fw.rule_hits([rule]).get(rule, (0, 0))[0] for h in live.hosts}


def migrate(
    lab: Lab, vm: str, host: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netns_lab", "migrate", vm, host, "--lab", lab.name, "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def moved(lab: Lab, vm: str, host: str) -> dict[str, Any]:
    """`nlab migrate --json`'s document."""
    proc = migrate(lab, vm, host)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_established_tcp_survives_and_a_denied_port_is_never_delivered(lab: Lab, srv: EchoServer) -> None:
    """Default deny on srv: only its established flows' replies go back. During the migration
    there and back a prober keeps opening tcp/81 (allowed out of cli, denied into srv)."""
    tap = SynTap(lab.ns("srv"))
    conn = tcp(lab.ns("cli"), SRV, 80)
    try:
        assert echo(conn, b"before") == b"before"
        sport = conn.getsockname()[1]
        assert connections(lab, "srv.eth0", sport) == ["hv1"]
        assert quotas(lab, "srv") == {"hv1": (0, 1, 1), "hv2": (0, 0, 0)}
        before = hits(lab, 10)
        prober = Prober(lab.ns("cli"), SRV, 81)
        prober.start()
        there = moved(lab, "srv", "hv2")
        assert echo(conn, b"on hv2") == b"on hv2"
        # the entry is on the target only, copied (not re-created: the rule saw no new flow)
        assert connections(lab, "srv.eth0", sport) == ["hv2"]
        assert there["connections"]["copied"] >= 1 and there["kernel_rules"] == [10]
        status = lab.status()  # exit 0: the lab as built checks out against the kernel
        assert next(v["host"] for v in status["vms"] if v["name"] == "srv") == "hv2"
        assert quotas(lab, "srv") == {"hv1": (0, 0, 0), "hv2": (0, 1, 1)}  # shares move with entries
        assert hits(lab, 10) == before
        back = migration.migrate(lab.name, "srv", "hv1")  # the library under the command
        prober.stop()
        assert echo(conn, b"back") == b"back"
        assert connections(lab, "srv.eth0", sport) == ["hv1"]
        assert quotas(lab, "srv") == {"hv1": (0, 1, 1), "hv2": (0, 0, 0)}  # given back where reaped
        assert [p["phase"] for p in back["phases"]][-1] == "done"
        phases = [*migration.PHASES, "done"] * 2
        assert [r["phase"] for r in migration_events(lab, "srv")] == phases  # what nlab watch shows
        # barrier and positive control through the same tap: a new allowed flow, delivered
        tcp(lab.ns("cli"), SRV, 80).close()
        syns = tap.read()
        assert syns.get(80, 0) >= 1
        assert prober.attempts > 0 and prober.connected == 0
        assert syns.get(81, 0) == 0, f"{syns[81]} of {prober.attempts} denied SYNs reached srv"
        assert srv.accepted[81] == 0
    finally:
        conn.close()
        tap.close()


def test_established_tcp_survives_a_migration_of_the_client(lab: Lab, srv: EchoServer) -> None:
    """cli under default deny too (only its tcp/80,81 out, replies as established): its entry
    goes with it, and srv's stays where srv is."""
    with tcp(lab.ns("cli"), SRV, 80) as conn:
        sport = conn.getsockname()[1]
        for host in ("hv2", "hv1"):
            migration.migrate(lab.name, "cli", host)
            assert echo(conn, host.encode()) == host.encode()
            assert connections(lab, "cli.eth0", sport) == [host]
            assert connections(lab, "srv.eth0", sport) == ["hv1"]


def test_rule_hits_continue_on_the_target(lab: Lab, srv: EchoServer) -> None:
    before = hits(lab, 10)
    migration.migrate(lab.name, "srv", "hv2")
    try:
        tcp(lab.ns("cli"), SRV, 80).close()
        after = hits(lab, 10)
        assert after["hv2"] == before["hv2"] + 1 and after["hv1"] == before["hv1"]
        assert sum(after.values()) == sum(before.values()) + 1
    finally:
        migration.migrate(lab.name, "srv", "hv1")


def test_a_target_without_the_vlan_is_refused_and_nothing_changes(lab: Lab) -> None:
    proc = migrate(lab, "far", "hv2")
    assert proc.returncode == 2, proc.stderr
    problem = json.loads(proc.stdout)["error"]["problems"][0]
    assert problem["path"] == "vms.far.nics[0]" and "does not carry VLAN other" in problem["reason"]
    assert proc.stderr.startswith("nlab migrate: vms.far.nics[0]: hv2's vSwitch vs1")
    assert host_of(lab, "far") == "hv1"
    assert not migration_events(lab, "far")  # refused before the first phase


def test_an_injected_failure_leaves_the_vm_working_on_the_source(lab: Lab, srv: EchoServer) -> None:
    conn = tcp(lab.ns("cli"), SRV, 80)
    try:
        sport = conn.getsockname()[1]
        proc = migrate(lab, "srv", "hv2", {migration.FAIL_ENV: "port"})
        assert proc.returncode == 1, proc.stderr
        doc = json.loads(proc.stdout)
        phases = [p["phase"] for p in doc["migration"]["phases"]]
        assert phases[-2:] == ["conntrack", "rolled-back"]
        assert host_of(lab, "srv") == "hv1"
        assert echo(conn, b"still here") == b"still here"
        assert connections(lab, "srv.eth0", sport) == ["hv1"]
        tap = SynTap(lab.ns("srv"))
        try:  # the port's programs are back: denied stays denied, allowed is delivered
            with pytest.raises(OSError):
                tcp(lab.ns("cli"), SRV, 81, timeout=0.3)
            tcp(lab.ns("cli"), SRV, 80).close()
            syns = tap.read()
            assert syns.get(80, 0) >= 1 and syns.get(81, 0) == 0
        finally:
            tap.close()
    finally:
        conn.close()


@pytest.mark.parametrize("phase", ["check", "rules", "mirror", "conntrack", "announce"])
def test_a_failure_at_the_end_of_any_phase_is_rolled_back(
    lab: Lab, srv: EchoServer, phase: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment variable, not a patch: the library's own injection point, in-process."""
    monkeypatch.setenv(migration.FAIL_ENV, phase)
    with tcp(lab.ns("cli"), SRV, 80) as conn:
        sport = conn.getsockname()[1]
        with pytest.raises(migration.Failed) as err:
            migration.migrate(lab.name, "srv", "hv2")
        assert err.value.phase == phase
        assert host_of(lab, "srv") == "hv1"
        assert echo(conn, phase.encode()) == phase.encode()
        assert connections(lab, "srv.eth0", sport) == ["hv1"]
        assert quotas(lab, "srv")["hv2"] == (0, 0, 0)
        with RunningLab(lab.name) as live:
            assert "srv-0" not in live.hosts[1].ifindexes  # hv2 has no port of srv


def test_a_vm_leaves_its_subnet_level_firewall_behind(lab: Lab) -> None:
    """p1 is reachable only through fw (nftables: tcp/80 only). Migrated to hv2, where its VLAN is
    on the wire, it is reached directly: what fw denied now passes, and `nlab migrate` says so."""
    with echo_server(lab.ns("p1"), 80, 81) as p1:
        tap = SynTap(lab.ns("p1"))
        try:
            tcp(lab.ns("cli"), P1, 80).close()
            with pytest.raises(OSError):
                tcp(lab.ns("cli"), P1, 81, timeout=0.3)
            syns = tap.read()
            assert syns.get(80, 0) >= 1 and syns.get(81, 0) == 0  # denied by fw
            doc = moved(lab, "p1", "hv2")
            assert any("loses subnet-level firewall fw" in w for w in doc["warnings"]), doc["warnings"]
            assert doc["nics"][0]["vswitch"] == {"from": "vsin", "to": "vs1"}
            with tcp(lab.ns("x2"), P1, 81) as conn:  # no firewall on its path any more
                assert echo(conn, b"unprotected") == b"unprotected"
            assert p1.accepted[81] == 1
        finally:
            tap.close()


def test_a_moved_port_arrives_down_without_programs_then_is_wired_before_it_comes_up(lab: Lab) -> None:
    """What the order of the phases relies on (fail closed): the kernel takes a port that moves
    to another namespace down and takes its clsact qdisc, and so its programs, away; the port
    then carries nothing until `_bring_up` attached them and set it up, in that order."""
    from dataplane import tc
    from netns_lab.kernel.netlink import Netlink

    with RunningLab(lab.name) as live:
        hv1, hv2 = live.hosts
        old = hv1.ifindexes["far-0"]
        new = migration._free_ifindexes(hv1, hv2, ["far-0"])["far-0"]
        with Netlink(lab.ns("hv1")) as nl:
            assert tc.attached(nl.tc_socket(), old, "ingress") == ["port_from_vm"]  # the control
        migration._move_link(lab.name, "far-0", "hv1", "hv2", new)
        try:
            with Netlink(lab.ns("hv2")) as nl:
                (link,) = [link for link in nl.links() if link.name == "far-0"]
                assert (link.index, link.up, link.master) == (new, False, None)
                assert tc.attached(nl.tc_socket(), new, "ingress") == []
                assert tc.attached(nl.tc_socket(), new, "egress") == []
        finally:
            migration._move_link(lab.name, "far-0", "hv2", "hv1", old)
            with Netlink(lab.ns("hv1")) as nl:
                migration._bring_up(nl, hv1, "far-0", old, "vs1")
                assert tc.attached(nl.tc_socket(), old, "egress") == ["port_to_vm"]
