"""`nlab trace` on the reference lab: across hosts through the physical switch, through the
firewall VM vm4, tagged and untagged, denied paths with their exit code, and no mark left in
the real dataplane.

    hv3 app2/mgmt1 --eth1==tor2 (VLAN trunks)==eth1-- hv2 app1, db1
                                  ||
    hv1 web1 --vs2 (web)-- vm4 (nftables) --vs3-- eth1        vm1 --vs1-- eth0 == tor1 -- internet
        web1-ids: web1's frames -> analyzer (vsmon)     app1-wire: app1's frames -> monitor (via tor2)

One lab for the module. The first test runs a trace through the mirrored, firewalled path
web1 -> vm4 -> app1 and compares everything the dataplane could have recorded before and after
it, with a real packet of the same flow afterwards as the positive control.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from dataplane.mirror import Mirrors
from dataplane.switch import SwitchDataplane
from netns_lab.features.mirror import live as mirror_live
from netns_lab.features.mirror import plan as mirror
from netns_lab.kernel import netns, nft
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab import fanout
from netns_lab.lab.state import pin_dir
from netns_lab.observe import subscription
from tests.lab.conftest import Lab, lab_namespaces, nlab, reference_variant

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lab tests need root (namespaces, eBPF)")

HOSTS, SWITCHES = ("hv1", "hv2", "hv3"), ("tor1", "tor2")
TRACE_SPORT = 40000  # the source port every trace uses


def trace(lab: Lab, *args: str) -> tuple[int, dict[str, Any]]:
    proc = nlab("trace", *args, "--lab", lab.name, "--json")
    assert proc.returncode in (0, 3), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def path(doc: dict[str, Any]) -> list[tuple[str, str, str, int | None, str]]:
    return [(s["node"], s["port"], s["program"], s["vlan"], s["verdict"]) for s in doc["stages"]]


def no_scratch_left(lab: Lab) -> bool:
    return not [n for n in lab_namespaces(lab.name) if n.startswith(f"{lab.name}-trace.")]


# -- everything the dataplane records ---------------------------------------------------------------
def _ifindexes(ns: str) -> list[int]:
    with Netlink(ns) as nl:
        return [link.index for link in nl.links()]


def dataplane_marks(lab: Lab) -> dict[str, Any]:
    """Port counters of every switching node; rule hits, mirror statistics and connection entries
    of every host; vm4's nftables counters."""
    ids = mirror_live.read_ids(lab.name)
    marks: dict[str, Any] = {}
    for node in (*HOSTS, *SWITCHES):
        with SwitchDataplane.open(pin_dir(lab.name) / node) as dp:
            marks[f"{node} counters"] = dp.all_counters(_ifindexes(lab.ns(node)))
            if node in HOSTS:
                marks[f"{node} rule hits"] = dp.firewall.rule_hits(range(0, 100))
                marks[f"{node} mirror stats"] = {s: Mirrors(dp.maps).stats(i) for s, i in ids.items()}
                marks[f"{node} connections"] = sorted(
                    (c.endpoint, c.proto, c.src, c.dst, c.sport, c.dport, c.state)
                    for c in dp.firewall.connections()
                )
    marks["vm4 nftables"] = nft.ruleset(lab.ns("vm4"))
    return marks


def _quiet(lab: Lab) -> None:
    """No IPv6 chatter of the VMs' and networks' own kernels (router solicitations, MLD) during
    the comparison (switching namespaces have none)."""
    nodes = [vm["name"] for vm in lab.status()["vms"]] + ["internet", "internal", "monitor"]
    for node in nodes:
        with netns.inside(lab.ns(node)), open("/proc/sys/net/ipv6/conf/all/disable_ipv6", "w") as f:
            f.write("1")


@contextlib.contextmanager
def capture(ns: str, ifname: str) -> Iterator[socket.socket]:
    with netns.inside(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    try:
        sock.bind((ifname, 0))
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


def tcp_to_8080(frames: list[bytes]) -> list[int]:
    """Source ports of the TCP segments to port 8080 among `frames` (mirror encapsulation removed)."""
    found = []
    for raw in frames:
        decap = mirror.decapsulate(raw)
        pkt = Ether(decap[2] if decap else raw)
        if IP in pkt and TCP in pkt and pkt[TCP].dport == 8080:
            found.append(pkt[TCP].sport)
    return found


def drain(sock: socket.socket) -> list[bytes]:
    frames = []
    with contextlib.suppress(BlockingIOError):
        while True:
            frames.append(sock.recv(65535))
    return frames


def real_connect(ns: str, dst: str, port: int) -> int:
    """A real TCP connection attempt from `ns`; its source port (never the trace's)."""
    with netns.inside(ns):
        sock = socket.socket()
    with sock:
        sock.settimeout(1)
        sock.bind(("0.0.0.0", 0))
        assert sock.getsockname()[1] != TRACE_SPORT
        with contextlib.suppress(ConnectionRefusedError, TimeoutError):
            sock.connect((dst, port))
        return sock.getsockname()[1]


def wait_for_copy(socks: list[socket.socket], seen: list[list[bytes]], sport: int) -> None:
    """Until every capture holds a copy of the real segment from `sport` (5 s at most)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for sock, frames in zip(socks, seen, strict=True):
            frames += drain(sock)
        if all(sport in tcp_to_8080(frames) for frames in seen):
            return
        time.sleep(0.05)


# -- the tests -----------------------------------------------------------------------------------
def test_a_trace_leaves_no_mark_anywhere(reference_lab: Lab) -> None:
    lab = reference_lab
    _quiet(lab)
    with (
        subscription.Subscription(lab.name, fanout.Filter()) as events,
        capture(lab.ns("analyzer"), "eth0") as analyzer,
        capture(lab.ns("monitor"), "eth0") as ids,
    ):
        before = dataplane_marks(lab)
        code, doc = trace(lab, "web1", "--to", "10.30.0.21", "--dport", "8080")
        after = dataplane_marks(lab)
        traced_events = events.sync()
        traced_copies = [drain(analyzer), drain(ids)]

        # the positive control: one real segment of the same flow shows up everywhere
        sport = real_connect(lab.ns("web1"), "10.30.0.21", 8080)
        seen: list[list[bytes]] = [[], []]
        wait_for_copy([analyzer, ids], seen, sport)
        control = dataplane_marks(lab)
        control_events = events.sync()

    assert code == 0 and doc["delivered"], doc
    for key in before:
        assert after[key] == before[key], f"{key} changed by the trace"
    assert traced_events == [], "a trace produced live verdict events"
    assert [tcp_to_8080(f) for f in traced_copies] == [[], []], "a trace produced mirror copies"
    mirrored = {m["session"] for s in doc["stages"] for m in s["mirrored"]}
    assert mirrored == {"web1-ids", "app1-wire"}, "the trace says which sessions would copy"
    assert [e["rule"] for s in doc["stages"] for e in s["events"]] == [12, 20]

    assert {e["sport"] for e in control_events if e.get("dport") == 8080} == {sport}, control_events
    assert all(sport in tcp_to_8080(frames) for frames in seen), "the real segment reached both analyzers"
    changed = [key for key in before if control[key] != before[key]]
    for key in ("hv1 counters", "hv2 counters", "tor2 counters", "hv1 rule hits", "hv2 rule hits"):
        assert key in changed, f"the real packet did not change {key}: the comparison sees nothing"
    assert {"hv1 mirror stats", "hv2 mirror stats", "hv1 connections", "vm4 nftables"} <= set(changed)
    assert no_scratch_left(lab)


def test_readme_example_crosses_the_physical_switch_tagged(reference_lab: Lab) -> None:
    code, doc = trace(reference_lab, "app2", "--to", "10.40.0.31", "--dport", "5432")
    assert code == 0 and doc["outcome"] == "delivered"
    assert path(doc) == [
        ("hv3", "app2-1", "port_from_vm", None, "pass"),
        ("hv3", "eth1", "vlan_to_port", 130, "pass"),
        ("tor2", "hv3-eth1", "vlan_from_port", 130, "pass"),
        ("tor2", "hv2-eth1", "vlan_to_port", 130, "pass"),
        ("hv2", "eth1", "vlan_from_port", 130, "pass"),
        ("hv2", "db1-0", "port_to_vm", 130, "pass"),
    ]
    assert [s["rule"] for s in doc["stages"]] == [21, None, None, None, None, 30]


def test_denied_path_exits_3_at_the_stage_that_drops_it(reference_lab: Lab) -> None:
    code, doc = trace(reference_lab, "app1", "--to", "10.40.0.31", "--dport", "22")
    assert code == 3 and doc["outcome"] == "dropped" and not doc["delivered"]
    [stage] = doc["stages"]
    assert (stage["port"], stage["verdict"], stage["reason"], stage["firewall"], stage["rule"]) == (
        "app1-1",
        "drop",
        "policy",
        "default policy",
        "default",
    )
    assert [e["verdict"] for e in stage["events"]] == ["deny"]
    code, doc = trace(reference_lab, "app1", "--to", "10.40.0.31", "--dport", "5432")  # the control
    assert code == 0 and doc["delivered"] and doc["stages"][-1]["rule"] == 30


def test_trace_goes_on_through_the_firewall_vm(reference_lab: Lab) -> None:
    code, doc = trace(reference_lab, "mgmt1", "--to", "10.20.0.11", "--dport", "22")
    assert code == 0 and doc["delivered"], doc["why"]
    assert path(doc) == [
        ("hv3", "mgmt1-0", "port_from_vm", None, "pass"),
        ("hv3", "eth1", "vlan_to_port", 10, "pass"),
        ("tor2", "hv3-eth1", "vlan_from_port", 10, "pass"),
        ("tor2", "hv1-eth1", "vlan_to_port", 10, "pass"),
        ("hv1", "eth1", "vlan_from_port", 10, "pass"),
        ("hv1", "vm4-2", "port_to_vm", 10, "pass"),
        ("vm4", "eth2 -> eth0", "nftables forward (copy)", None, "pass"),
        ("hv1", "vm4-0", "port_from_vm", None, "pass"),
        ("hv1", "web1-0", "port_to_vm", 110, "pass"),
    ]
    assert doc["stages"][6]["matched"] == [
        'iifname "eth2" oifname "eth0" ip saddr 10.10.0.41 tcp dport 22 counter accept'
    ]
    assert [s["hop"] for s in doc["stages"]] == [0] * 7 + [1] * 2

    # the NIC firewall lets port 80 through at both ends (rules 40 and 10); vm4 does not
    code, doc = trace(reference_lab, "mgmt1", "--to", "10.20.0.11", "--dport", "80")
    assert code == 3 and doc["outcome"] == "dropped"
    last = doc["stages"][-1]
    assert (last["node"], last["kind"], last["verdict"]) == ("vm4", "router", "drop")
    assert last["matched"] == ['counter comment "denied by vm4"']
    assert all(s["verdict"] == "pass" for s in doc["stages"][:-1])
    assert no_scratch_left(reference_lab)


def test_untagged_path_to_an_external_network(reference_lab: Lab) -> None:
    code, doc = trace(reference_lab, "vm1", "--to", "198.51.100.10", "--dport", "80")
    assert code == 0 and doc["why"] == "delivered to internet"
    assert path(doc) == [
        ("hv1", "vm1-0", "port_from_vm", None, "pass"),
        ("hv1", "eth0", "vlan_to_port", None, "pass"),
        ("tor1", "hv1-eth0", "vlan_from_port", None, "pass"),
        ("tor1", "internet", "vlan_to_port", None, "pass"),
    ]


def test_json_document_shape(reference_lab: Lab) -> None:
    proc = nlab(
        "trace", "web2", "--to", "10.20.0.11", "--proto", "icmp", "--lab", reference_lab.name, "--json"
    )
    doc = json.loads(proc.stdout)  # exactly one document on stdout
    assert proc.returncode == 0
    assert set(doc) == {
        "lab",
        "from",
        "to",
        "proto",
        "sport",
        "dport",
        "stages",
        "outcome",
        "delivered",
        "why",
    }
    assert (doc["proto"], doc["sport"], doc["dport"]) == ("icmp", None, None)
    stage_keys = {"hop", "node", "port", "kind", "program", "vlan", "verdict", "reason", "firewall", "rule"}
    for stage in doc["stages"]:
        assert stage_keys | {"events", "mirrored"} <= set(stage)
    assert [(s["rule"], s["events"][0]["rule"]) for s in doc["stages"]] == [(91, 91), (90, 90)]
    bad = nlab("trace", "nosuch", "--to", "10.20.0.11", "--lab", reference_lab.name)
    assert bad.returncode == 2 and "nosuch" in bad.stderr
    code, doc = trace(reference_lab, "sandbox1", "--to", "10.30.0.21")  # NIST 2.2: no path out
    assert (code, doc["outcome"], doc["stages"]) == (3, "unreachable", [])
    assert "sandbox is internal-only" in doc["why"]


VM4_MASQUERADE = {
    "      table inet vm4 {\n": (
        "      table ip vm4nat {\n"
        "        chain postrouting {\n"
        "          type nat hook postrouting priority srcnat; policy accept;\n"
        '          oifname "eth1" masquerade\n'
        "        }\n"
        "      }\n"
        "      table inet vm4 {\n"
    )
}


def test_a_translated_packet_is_not_followed(make_lab, tmp_path) -> None:
    """vm4 masquerades what it sends into the app VLAN: the trace says so and stops, exit 3."""
    lab = make_lab(reference_variant(tmp_path, "nist-vm4-nat.yaml", VM4_MASQUERADE))
    proc = lab.up()
    assert proc.returncode == 0, proc.stderr
    code, doc = trace(lab, "web1", "--to", "10.30.0.21", "--dport", "8080")
    assert (code, doc["outcome"], doc["delivered"]) == (3, "not-followed", False), doc["why"]
    last = doc["stages"][-1]
    assert (last["node"], last["verdict"], last["translated"]) == (
        "vm4",
        "pass",
        {"src": "10.30.0.1", "dst": "10.30.0.21"},
    )
