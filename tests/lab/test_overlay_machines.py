"""One lab on two machines (tests/lab/two_machines.yaml), each machine's part built by its own
`nlab up --machine` process under a lab name of its own, on this one machine: the parts' routers
plug their ends of the routed link `wan` into a "wire" namespace this test makes (standing for
the network between two real machines); nothing else is shared. blue-web and red-web span both
machines in evpn mode, the route reflector (r1) is on m1.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from netns_lab.features.overlay import frr
from netns_lab.kernel import netns
from netns_lab.kernel.netlink import Netlink
from netns_lab.topology import names
from tests.lab.conftest import REPO, Lab, lab_namespaces, leftovers, unique_name
from tests.lab.test_overlay_lab import ping

TOPOLOGY = REPO / "tests" / "lab" / "two_machines.yaml"
PARTS_OF = {"m1": ["tor1", "r1", "hv1", "blue1", "red1"], "m2": ["tor2", "r2", "hv2", "blue2", "red2"]}


@dataclass
class Parts:
    wire: str
    m1: Lab
    m2: Lab

    def up(self, lab: Lab, machine: str) -> subprocess.CompletedProcess[str]:
        return lab.up("--machine", machine, "--link", f"wan={self.wire}", "--json")


@pytest.fixture(scope="module")
def parts() -> Iterator[Parts]:
    if frr.available() is not None:
        pytest.skip(f"FRR: {frr.available()}")
    wire = unique_name() + "-wire"
    netns.create(wire)
    try:
        with Netlink(wire) as nl:
            nl.up("lo")
            nl.bridge(names.SWITCH_BRIDGE)
            nl.up(names.SWITCH_BRIDGE)
        p = Parts(wire, Lab(unique_name(), TOPOLOGY), Lab(unique_name(), TOPOLOGY))
        try:
            # the reflector's part first: the other part's VTEPs wait for their session to it
            for lab, machine in ((p.m1, "m1"), (p.m2, "m2")):
                proc = p.up(lab, machine)
                assert proc.returncode == 0, proc.stderr
                print(f"part {machine}: {json.loads(proc.stdout)['seconds']} s")
            yield p
        finally:
            for lab in (p.m2, p.m1):
                lab.down()
            problems = {lab.name: found for lab in (p.m1, p.m2) if (found := leftovers(lab.name, lab.inodes))}
            assert not problems, problems
    finally:
        netns.delete(wire)


def wire_ports(wire: str) -> set[str]:
    with Netlink(wire) as nl:
        return {link.name for link in nl.links()} - {"lo", names.SWITCH_BRIDGE}


def replicates_to(lab: Lab, host: str, vni: int, vtep: str) -> bool:
    """The head-end replication entry of `vni` towards `vtep` (a type-3 route imported)."""
    out = subprocess.run(
        ["bridge", "-n", lab.ns(host), "fdb", "show", "dev", names.vxlan_dev(vni)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return f"00:00:00:00:00:00 dst {vtep} " in out


def wait_for(what: str, ready: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"still not {what} after {timeout:g} s"
        time.sleep(0.1)


def test_each_part_builds_only_its_nodes(parts: Parts) -> None:
    for lab, machine in ((parts.m1, "m1"), (parts.m2, "m2")):
        assert lab_namespaces(lab.name) == sorted(lab.ns(n) for n in PARTS_OF[machine])
        doc = lab.status()
        assert doc["healthy"], doc["problems"]
        assert doc["machine"] == machine
        assert [h["name"] for h in doc["hosts"]] == [PARTS_OF[machine][2]]
        assert [n["link"] for r in doc["routers"] for n in r["nics"]] == [None, "wan"]
    # the wire holds one port per part, nothing else of the labs
    assert wire_ports(parts.wire) == {"r1-wan", "r2-wan"}


def test_segments_span_machines_and_tenants_stay_apart(parts: Parts) -> None:
    for vni in (10010, 20010):  # type-3 routes both ways, through the reflector on m1
        wait_for("replicating", lambda v=vni: replicates_to(parts.m1, "hv1", v, "10.255.2.12"))
        wait_for("replicating", lambda v=vni: replicates_to(parts.m2, "hv2", v, "10.255.1.11"))
    assert ping(parts.m1, "blue1", "10.0.0.12").returncode == 0
    assert ping(parts.m2, "red2", "10.0.0.21").returncode == 0
    # the other tenant's VM, across the machines: unreachable, while its own tenant's answered
    assert ping(parts.m1, "red1", "10.0.0.12").returncode != 0
    assert ping(parts.m2, "blue2", "10.0.0.21").returncode != 0
    assert ping(parts.m1, "blue1", "10.0.0.12").returncode == 0


def test_down_of_one_part_removes_only_its_objects(parts: Parts) -> None:
    proc = parts.m2.down()
    assert proc.returncode == 0, proc.stderr
    assert lab_namespaces(parts.m2.name) == []
    assert not leftovers(parts.m2.name, parts.m2.inodes)
    # its end of the link goes with its router's namespace (the kernel frees it after the delete)
    wait_for("unplugged", lambda: wire_ports(parts.wire) == {"r1-wan"}, timeout=10.0)
    assert lab_namespaces(parts.m1.name) == sorted(parts.m1.ns(n) for n in PARTS_OF["m1"])
    doc = parts.m1.status()
    assert doc["healthy"], doc["problems"]
    assert ping(parts.m1, "blue1", "10.0.0.12").returncode != 0  # its peer is gone with m2
