"""One policy, three placements, with real packets: labs/placements.yaml built once.

    c1 (clients), c2 (admins) --- front VLAN ---+-- k1   kernel: k1's vNIC port (eBPF)
                                                +-- fw1 -- s1   subnet: firewall VM (nftables)
                                                +-- uplink -- tor1 -- pfw -- tor1 -- uplink -- p1
                                                                    physical appliance (hairpin)

The expected verdicts come from the model through the reference evaluator; every probe of the
table runs against each tier, so every placement must give the same table (denials and their
positive controls in the same run). Then one live `nlab fw del` reaches all three.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from netns_lab.cli import source
from netns_lab.features.placement.truth import Probe, address, expected
from netns_lab.kernel import netns, nft
from netns_lab.observe import probe
from netns_lab.topology.model import Topology
from tests.lab.conftest import REPO, Lab, nlab, running

TOPOLOGY = REPO / "labs" / "placements.yaml"
TIERS = {"k1": "kernel", "s1": "subnet", "p1": "physical"}
TCP_PORTS = (80, 22, 8080, 8081, 9999)
UDP_PORT = 53
KINDS = [*(("tcp", p) for p in TCP_PORTS), ("udp", UDP_PORT), ("icmp", 8)]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running(TOPOLOGY) as built:
        yield built


def _running(lab: Lab) -> Topology:
    """The model of the lab as it runs now (live changes included)."""
    return source.running(lab.name)[0]


def _observe(lab: Lab, topo: Topology, probes: list[Probe]) -> dict[Probe, str]:
    """Every probe at once (a dropped one costs its timeout): TCP connects to listeners, UDP
    datagrams read at the destination, ICMP echo with ping."""
    dsts = sorted({p.dst for p in probes})
    udp = {}
    for dst in dsts:
        with netns.inside(lab.ns(dst)):
            udp[dst] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp[dst].bind((str(address(topo, dst)), UDP_PORT))

    def one(p: Probe) -> str:
        ns, dst = lab.ns(p.src), str(address(topo, p.dst))
        if p.proto == "tcp":
            return "allow" if probe.tcp(ns, dst, p.port) == "open" else "deny"
        if p.proto == "icmp":
            return "allow" if probe.ping(ns, dst) else "deny"
        with netns.inside(ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.sendto(f"{p.src}".encode(), (dst, p.port))
        return "sent"

    with ThreadPoolExecutor(len(probes)) as ex:
        seen = dict(zip(probes, ex.map(one, probes), strict=True))
    for dst, sock in udp.items():  # the TCP and ICMP probes took >= 1 s: datagrams have arrived
        with sock:
            sock.setblocking(False)
            got = set()
            while True:
                try:
                    got.add(sock.recv(64).decode())
                except BlockingIOError:
                    break
        for p in (p for p in probes if p.dst == dst and p.proto == "udp"):
            seen[p] = "allow" if p.src in got else "deny"
    return seen


def _table(lab: Lab, sources: tuple[str, ...]) -> tuple[dict[Probe, str], dict[Probe, str]]:
    """The expected and the observed verdict of every probe from `sources` to every tier."""
    topo = _running(lab)
    probes = [Probe(s, d, proto, port) for s in sources for d in TIERS for proto, port in KINDS]
    with contextlib.ExitStack() as stack:
        for d in TIERS:
            ip = str(address(topo, d))
            stack.enter_context(probe.listening(lab.ns(d), [(ip, port) for port in TCP_PORTS]))
        observed = _observe(lab, topo, probes)
    return expected(topo, probes), observed


def _counter(lab: Lab, node: str, comment: str) -> int:
    return nft.counters(lab.ns(node))[comment][0]


def test_one_truth_table_in_three_placements(lab: Lab) -> None:
    want, got = _table(lab, ("c1", "c2"))
    by_tier = {
        tier: {(p.src, p.proto, p.port): v for p, v in want.items() if p.dst == vm}
        for vm, tier in TIERS.items()
    }
    assert by_tier["kernel"] == by_tier["subnet"] == by_tier["physical"]  # the model says one table
    assert {"allow", "deny"} <= set(want.values())
    wrong = [p.doc(want[p], got[p]) for p in want if got[p] != want[p]]
    assert not wrong, wrong
    # each tier's new flows were judged where its placement says, and only there: c1's one
    # connection to port 80 of each tier is one hit of rule 10 on that tier's firewall
    assert _counter(lab, "fw1", "rule 10") == 1
    assert _counter(lab, "pfw", "rule 10") == 1  # outside hv1: the flow left the host and came back
    assert _counter(lab, "pfw", "default deny p1.eth0 in by pfw") > 0
    assert _counter(lab, "fw1", "default deny s1.eth0 in by fw1") > 0
    shown = json.loads(nlab("fw", "show", "--json", "--lab", lab.name, check=True).stdout)
    hits = {r["id"]: r["hits"]["packets"] for r in shown["rules"]}
    assert hits[10] == 3  # k1's vNIC port, fw1 and pfw: one policy, its hits in one place


def test_status_shows_the_appliance_and_each_placement(lab: Lab) -> None:
    doc = lab.status()
    assert doc["healthy"], doc["problems"]
    (pfw,) = doc["appliances"]
    assert pfw["present"] and [n["up"] for n in pfw["nics"]] == [True, True]
    assert {vm["name"]: vm["placement"] for vm in doc["vms"]}["p1"] == "physical"


def test_one_live_change_reaches_every_placement(lab: Lab) -> None:
    proc = nlab("fw", "del", "13", "--lab", lab.name)
    assert proc.returncode == 0, proc.stderr
    want, got = _table(lab, ("c1",))
    assert all(want[Probe("c1", d, "tcp", 8080)] == "allow" for d in TIERS)  # 13 denied it before
    assert all(want[Probe("c1", d, "tcp", 9999)] == "deny" for d in TIERS)  # the control
    wrong = [p.doc(want[p], got[p]) for p in want if got[p] != want[p]]
    assert not wrong, wrong
