"""The reference lab (labs/nist-800-125b.yaml) with real traffic: NIST 2.1-2.3.

    internet --tor1-- hv1[ VS1 -[vm1]- VS2(web1, web2) -[vm4]- VS3 ] --tor2 trunks-- internal
                                                                  |-- hv2[prod: app1 db1 | sandbox]
                                                                  |-- hv3[ops: app2 mgmt1 ...]

Every denied row has a listener behind it, so "timeout" means a firewall or the topology
dropped the packet, not that nobody was listening.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw, raw

from dataplane.abi import Direction, Reason
from dataplane.switch import MAPS, PROGRAMS, SWITCH_MAPS, SWITCH_PROGRAMS, SwitchDataplane
from netns_lab.features.team import faults as team_faults
from netns_lab.features.vlan import plan as ports
from netns_lab.kernel import netns
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab import status
from netns_lab.lab.state import pin_dir, state_dir
from netns_lab.observe import probe
from netns_lab.topology import loader
from tests.lab import vlan_attacks as va
from tests.lab.conftest import REFERENCE, REPO, Lab, nlab

LISTENERS = {
    "web1": [("10.20.0.11", 80), ("10.20.0.11", 443), ("10.20.0.11", 22)],
    "web2": [("10.20.0.12", 80), ("10.20.0.12", 22)],
    "app1": [("10.30.0.21", 8080), ("10.30.0.21", 22)],
    "app2": [("10.30.0.22", 8080)],
    "db1": [("10.40.0.31", 5432)],
    "internal": [("10.30.0.10", 80), ("10.30.0.10", 22)],
    "sandbox1": [("10.30.0.50", 8080)],
}

SANDBOX_BRIDGE_MAC = "02:00:5e:00:53:01"  # the source of the barrier hv2's sandbox bridge sends

# (from, to address, port, expected outcome, why)
DMZ_TRUTH_TABLE = [
    ("internet", "10.20.0.11", 80, "open", "outside -> web:80 allowed by vm1"),
    ("internet", "10.20.0.11", 443, "open", "outside -> web:443 allowed by vm1"),
    ("internet", "10.20.0.12", 80, "open", "outside -> second web VM"),
    ("internet", "10.20.0.11", 22, "timeout", "outside -> web:22 denied by vm1"),
    ("internet", "10.30.0.10", 80, "timeout", "outside -> internal network denied"),
    ("internet", "10.30.0.21", 8080, "timeout", "outside -> app tier denied"),
    ("web1", "10.30.0.21", 8080, "open", "web -> app:8080 allowed by vm4 (hv1 -> hv2)"),
    ("web2", "10.30.0.22", 8080, "open", "web -> app:8080 allowed by vm4 (hv1 -> hv3)"),
    ("web1", "10.30.0.21", 22, "timeout", "web -> app on another port denied by vm4"),
    ("web1", "10.40.0.31", 5432, "blocked", "web -> db: no path at all (db VLAN is behind the app tier)"),
    ("web1", "10.30.0.10", 80, "timeout", "web -> internal network denied by vm4"),
    ("mgmt1", "10.20.0.11", 22, "open", "management -> web:22 allowed by vm4"),
    ("app1", "10.20.0.11", 22, "timeout", "app -> web:22 denied by vm4"),
    ("internal", "10.20.0.11", 80, "timeout", "internal -> web:80 not in vm4's policy"),
    ("app2", "10.40.0.31", 5432, "open", "db VLAN across hosts through tor2's trunks (hv3 -> hv2)"),
    ("app1", "10.40.0.31", 5432, "open", "db VLAN, same vSwitch, same host"),
]


@pytest.fixture(scope="module")
def listeners(reference_lab: Lab):
    stack = []
    try:
        for node, endpoints in LISTENERS.items():
            ctx = probe.listening(reference_lab.ns(node), endpoints)
            ctx.__enter__()
            stack.append(ctx)
        yield
    finally:
        for ctx in reversed(stack):
            ctx.__exit__(None, None, None)


def _kernel_links(ns: str) -> dict[str, bool]:
    """Interface -> administratively up, as `ip` reads it (not our netlink code)."""
    out = subprocess.run(["ip", "-n", ns, "-j", "link"], capture_output=True, text=True, check=True).stdout
    return {link["ifname"]: "UP" in link["flags"] for link in json.loads(out)}


def _kernel_macs(ns: str) -> dict[str, str]:
    """Interface -> MAC address, as `ip` reads it."""
    out = subprocess.run(["ip", "-n", ns, "-j", "link"], capture_output=True, text=True, check=True).stdout
    return {link["ifname"]: link.get("address", "") for link in json.loads(out)}


def _kernel_programs(ns: str, ifname: str, hook: str) -> list[str]:
    """Names of the BPF programs on a TC hook, as `tc` reads them."""
    out = subprocess.run(
        ["tc", "-n", ns, "-j", "filter", "show", "dev", ifname, hook],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [f["options"]["bpf_name"] for f in json.loads(out or "[]") if "options" in f]


def test_status_is_checked_against_the_kernel(reference_lab: Lab) -> None:
    """Every node, link, program and pin of the model, read back from the kernel by `ip`, `tc` and
    bpffs, is what status reports: present, up, attached, pinned; every VM NIC with its MAC, and
    each hypervisor's mirror port with its program."""
    topo = loader.load(REFERENCE, lab=reference_lab.name)
    doc = reference_lab.status()
    assert doc["lab"] == reference_lab.name
    assert (doc["healthy"], doc["missing"], doc["problems"]) == (True, [], [])
    namespaces = {p.name for p in netns.NETNS_RUN_DIR.iterdir()}
    assert sorted(n for n in namespaces if n.startswith(reference_lab.name + "-")) == sorted(
        reference_lab.ns(n) for n in topo.node_names()
    )
    nodes = [*doc["hosts"], *doc["switches"], *doc["networks"], *doc["vms"]]
    assert sorted(n["name"] for n in nodes) == sorted(topo.node_names())
    kernel = {n["name"]: _kernel_links(n["namespace"]) for n in nodes}
    seen = 0
    for host, want in zip(doc["hosts"], topo.hosts, strict=True):
        links = kernel[host["name"]]
        expected = (
            {p.name for p in want.pnics} | {v.name for v in want.vswitches} | {k.name for k in want.vmknics}
        )
        assert {p["name"] for p in (*host["pnics"], *host["vswitches"], *host["vmknics"])} == expected
        for item in (*host["pnics"], *host["vswitches"], *host["vmknics"]):
            assert links[item["name"]] is item["up"] is True, (host["name"], item["name"])
            seen += 1
        mirror_port = host["mirror_port"]
        ends = [(e["name"], e["present"], e["up"]) for e in mirror_port["ends"]]
        assert ends == [("mirror0", True, True), ("mirror1", True, True)], host["name"]
        assert links["mirror0"] is links["mirror1"] is True, host["name"]
        on_hook = _kernel_programs(host["namespace"], "mirror1", "ingress")
        assert on_hook == mirror_port["programs"]["ingress"] == ["mirror_port_rx"], host["name"]
        seen += 1
    for vm, want in zip(doc["vms"], topo.vms, strict=True):
        assert [n["name"] for n in vm["nics"]] == [n.name for n in want.nics]
        macs = _kernel_macs(vm["namespace"])
        for nic in vm["nics"]:
            assert kernel[vm["name"]][nic["name"]] is nic["up"] is True, (vm["name"], nic["name"])
            assert macs[nic["name"]] == nic["kernel_mac"] == nic["mac"], (vm["name"], nic["name"])
            seen += 1
    for net in doc["networks"]:
        assert kernel[net["name"]]["eth0"] is net["up"] is True
    for node in (*doc["hosts"], *doc["switches"]):
        model_ports = (ports.host_ports if node in doc["hosts"] else ports.switch_ports)(topo, node["name"])
        assert [p["name"] for p in node["ports"]] == [p.name for p in model_ports]
        for port in node["ports"]:
            assert kernel[node["name"]][port["name"]] is port["up"] is True, (node["name"], port["name"])
            for hook in ("ingress", "egress"):
                on_hook = _kernel_programs(node["namespace"], port["name"], hook)
                assert on_hook == port["programs"][hook] == status.expected_programs(port["role"])[hook]
                seen += 1
        pinned = {p.name for p in Path(node["pins"]["dir"]).iterdir()}
        assert node["pins"]["missing"] == [] and pinned
        vm_ports = node in doc["hosts"]
        assert {f"prog_{p}" for p in (PROGRAMS if vm_ports else SWITCH_PROGRAMS)} <= pinned
        assert set(MAPS if vm_ports else SWITCH_MAPS) <= pinned
    assert seen > 100, "too few links and hooks compared to prove anything"


def table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the rich tables in `text` (box-drawing borders left out)."""
    return [
        [c.strip() for c in line.strip().strip("│").split("│")] for line in text.splitlines() if "│" in line
    ]


def test_status_prints_every_node_and_port(reference_lab: Lab) -> None:
    """The human status: health, every node and VM, every switch port with its policy, the sessions."""
    proc = nlab("status", reference_lab.name, check=True)
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert lines[0] == f"lab {reference_lab.name} ({REFERENCE}): healthy"
    for title in (
        "infrastructure",
        "VMs",
        "switch ports (out: sent by the peer, in: towards it)",
        "mirror sessions",
    ):
        assert title in lines, title
    rows = table_rows(proc.stdout)
    topo = loader.load(REFERENCE, lab=reference_lab.name)
    first = {row[0] for row in rows}
    assert set(topo.node_names()) <= first, set(topo.node_names()) - first
    assert ["tor2", "switch", reference_lab.ns("tor2")] == next(r for r in rows if r[0] == "tor2")[:3]
    assert "hv1-eth1 up" in next(r for r in rows if r[0] == "tor2")[3]
    assert next(r for r in rows if r[0] == "web1")[:6] == ["web1", "hv1", "", "eth0", "vs2", "10.20.0.11/24"]
    web1_port = next(r for r in rows if r[1:3] == ["web1-0", "web1.eth0"])
    assert web1_port[3] == "access web"
    assert next(r for r in rows if r[1] == "hv1-eth1")[3] == "trunk management,migration,logging,app"
    assert next(r for r in rows if r[0] == "web1-ids")[1:5] == ["web1", "analyzer", "both", "before"]


def test_kernel_matches_status(reference_lab: Lab) -> None:
    """The MAC and address the status promises are the ones the kernel has."""
    doc = reference_lab.status()
    for vm in doc["vms"]:
        out = json.loads(
            nlab("exec", "--lab", reference_lab.name, vm["name"], "--", "ip", "-j", "addr", check=True).stdout
        )
        by_name = {link["ifname"]: link for link in out}
        for nic in vm["nics"]:
            link = by_name[nic["name"]]
            assert link["address"] == nic["mac"]
            v4 = [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["family"] == "inet"]
            assert v4 == ([nic["ip"]] if nic["ip"] else [])


@pytest.mark.parametrize(
    ("src", "dst", "port", "expected", "why"), DMZ_TRUTH_TABLE, ids=[row[4] for row in DMZ_TRUTH_TABLE]
)
def test_dmz_truth_table(
    reference_lab: Lab, listeners: None, src: str, dst: str, port: int, expected: str, why: str
) -> None:
    outcome = probe.tcp(reference_lab.ns(src), dst, port, timeout=1.0)
    if expected == "blocked":
        assert outcome in ("timeout", "unreachable"), why
    else:
        assert outcome == expected, why


def test_denials_are_counted_by_the_firewall_vms(reference_lab: Lab, listeners: None) -> None:
    before = _denied(reference_lab, "vm1")
    assert probe.tcp(reference_lab.ns("internet"), "10.20.0.12", 22, timeout=0.5) == "timeout"
    assert _denied(reference_lab, "vm1") > before


def _denied(lab: Lab, fw: str) -> int:
    out = nlab("exec", "--lab", lab.name, fw, "--", "nft", "-j", "list", "ruleset", check=True).stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule and rule.get("comment", "").startswith("denied by"):
            return next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    raise AssertionError(f"{fw} has no 'denied by' counter rule")


def test_unconnected_vswitches_cannot_reach_each_other(reference_lab: Lab, listeners: None) -> None:
    """hv2's sandbox vSwitch has no uplink: same subnet as app1, yet no frame gets across.

    Taps on both: each sees its own node's attempts leave, and reads up to a barrier that does
    reach it (app2's from across tor2 for app1; one the sandbox bridge itself floods for sandbox1)."""
    lab = reference_lab
    where = [(lab.ns("app1"), "eth0"), (lab.ns("sandbox1"), "eth0")]
    mac = {node: va.kernel_mac(lab.ns(node), "eth0") for node in ("app1", "sandbox1")}
    with va.taps(where) as taps:
        assert probe.tcp(lab.ns("sandbox1"), "10.30.0.21", 8080, timeout=1.0) in ("timeout", "unreachable")
        assert probe.tcp(lab.ns("app1"), "10.30.0.50", 8080, timeout=1.0) in ("timeout", "unreachable")
        assert not probe.ping(lab.ns("sandbox1"), "10.30.0.21")
        bridge = va.Barrier(lab.ns("hv2"), "sandbox", SANDBOX_BRIDGE_MAC, "10.30.0.249/24")
        got = va.barriers(
            taps, {where[0]: va.own_barrier(lab.ns("app2"), "eth0", "10.30.0.22"), where[1]: bridge}
        )
    at_app1, at_sandbox = got[where[0]], got[where[1]]
    for frames, own, other in ((at_app1, "app1", "sandbox1"), (at_sandbox, "sandbox1", "app1")):
        left = [f for f in frames if f.outgoing and f.src == mac[own]]
        assert left, f"{own}'s tap saw none of its own attempts leave: the probes or the tap are broken"
        crossed = [str(f) for f in frames if not f.outgoing and f.src == mac[other]]
        assert not crossed, f"{own} received {len(crossed)} frames of {other}: {crossed[:5]}"


def test_exec_runs_inside_the_node(reference_lab: Lab) -> None:
    proc = nlab(
        "exec", "--lab", reference_lab.name, "web1", "--", "ip", "-br", "addr", "show", "eth0", check=True
    )
    assert "10.20.0.11/24" in proc.stdout
    missing = nlab("exec", "--lab", reference_lab.name, "nosuch", "--", "true")
    assert missing.returncode == 2 and "no node 'nosuch'" in missing.stderr


def test_up_refuses_a_lab_that_is_up(reference_lab: Lab) -> None:
    proc = reference_lab.up()
    assert proc.returncode == 2
    assert f"lab '{reference_lab.name}' is already up" in proc.stderr
    assert reference_lab.status()["healthy"]


def test_graph_draws_every_node(reference_lab: Lab, tmp_path) -> None:
    out = tmp_path / "lab.svg"
    nlab("graph", reference_lab.name, "--out", str(out), check=True)
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for node in ("vm1", "vm4", "web1", "analyzer", "tor1", "tor2", "internet", "hv3"):
        assert f">{node}" in svg


def test_namespaces_and_nothing_in_root(reference_lab: Lab) -> None:
    """The root namespace has no lab interface; every lab interface lives in a lab namespace."""
    root = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout
    names = {link["ifname"] for link in json.loads(root)}
    lab_ifnames = {"fabric", "vs1", "vs2", "vs3", "vsmon", "web1-0", "hv1-eth0", "internet"}
    assert not names & lab_ifnames
    assert all(netns.exists(reference_lab.ns(n)) for n in ("tor1", "hv1", "web1", "internet"))


def test_fw_counters_connections_gc_and_events_from_the_cli(reference_lab: Lab, listeners: None) -> None:
    """`fw events --count` prints a denial as it happens (human line), `fw counters` counts the
    default policy's hit and the tracked flows, `fw connections --gc` lists an open flow."""
    lab = reference_lab.name
    before = json.loads(nlab("fw", "--lab", lab, "counters", "--json", check=True).stdout)
    events = subprocess.Popen(
        [sys.executable, "-m", "netns_lab", "fw", "--lab", lab, "events", "--denied", "--count", "1",
         "--timeout", "30"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while events.poll() is None:  # until the reader is up and has seen one
            assert probe.tcp(reference_lab.ns("app1"), "10.20.0.11", 22, timeout=0.3) == "timeout"
        out, err = events.communicate(timeout=30)
    finally:
        events.kill()
    assert events.returncode == 0, err
    [line] = out.splitlines()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d DENY  app1\.eth0 +out tcp +10\.30\.0\.21:\d+ -> 10\.20\.0\.11:22"
        r"  policy \(default policy\)",
        line,
    ), line
    after = json.loads(nlab("fw", "--lab", lab, "counters", "--json", check=True).stdout)
    default = {"rule": "default", "packets": 0, "bytes": 0}  # the default policy's row comes last
    assert after["rules"][-1]["rule"] == "default"
    assert (
        after["rules"][-1]["packets"]
        > next((r for r in before["rules"] if r["rule"] == "default"), default)["packets"]
    )
    assert probe.tcp(reference_lab.ns("app2"), "10.40.0.31", 5432, timeout=1.0) == "open"
    conns = json.loads(nlab("fw", "--lab", lab, "connections", "--gc", "--json", check=True).stdout)
    flows = [c for c in conns["connections"] if (c["dst"], c["dport"]) == ("10.40.0.31", 5432)]
    assert flows and {c["host"] for c in flows} >= {"hv3"}
    human = nlab("fw", "--lab", lab, "connections", "--gc", check=True).stdout
    assert any(row[3].endswith(" -> 10.40.0.31:5432") for row in table_rows(human) if len(row) > 4)
    shown = nlab("fw", "--lab", lab, "show", "web1", check=True).stdout
    assert any(row[:3] == ["10", "group:web", "in"] for row in table_rows(shown))


# -- NIC teams across tor1 and tor2 (NIST 3): last in the module, as they fail and heal a link ---
# hv2's prod and hv3's ops team [eth1 (tor2), eth0 (tor1)]; the link tor1-tor2 closes a loop
# through each of them that only their standby members keep open.
def _team_events(lab: Lab, host: str) -> list[dict]:
    path = state_dir(lab.name) / f"team-{host}.events"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_team_event(lab: Lab, host: str, after: int, kind: str, timeout: float = 15) -> dict:
    """The first `kind` event of `host`'s monitor past its first `after` ones: the barrier."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in _team_events(lab, host)[after:] if e.get("event") == kind]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {kind} event of {host}: {_team_events(lab, host)[after:]}")


def _active(lab: Lab, host: str) -> str:
    """The host's active member, read from its dataplane's team map (as `nlab status` does)."""
    [team] = team_faults.teams_doc(loader.load(REFERENCE, lab=lab.name), host)
    return team["active"]


def _count(lab: Lab, node: str, port: str, direction: Direction, reason: Reason) -> int:
    """Frames a switching node's port counted with `reason` in `direction`, from its pinned maps."""
    with SwitchDataplane.open(pin_dir(lab.name) / node) as dp, Netlink(lab.ns(node)) as nl:
        found = dp.counters(nl.index(port)).get((direction, reason))
    return found.packets if found is not None else 0


def _passed(lab: Lab, switch: str, port: str) -> tuple[int, int]:
    """Frames a switch port passed (ingress: from its cable, egress: onto it)."""
    return _count(lab, switch, port, Direction.INGRESS, Reason.PASS), _count(
        lab, switch, port, Direction.EGRESS, Reason.PASS
    )


def _ping(lab: Lab, src: str, dst: str, count: int = 5) -> subprocess.CompletedProcess[str]:
    args = ["ip", "netns", "exec", lab.ns(src), "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", dst]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def _replies(proc: subprocess.CompletedProcess[str]) -> int:
    assert "DUP!" not in proc.stdout, proc.stdout
    return sum(1 for line in proc.stdout.splitlines() if "bytes from" in line)


def test_the_reference_lab_has_its_link_and_its_teams(reference_lab: Lab) -> None:
    doc = reference_lab.status()
    links = {s["name"]: s["links"] for s in doc["switches"]}
    trunk = ["management", "migration", "logging", "storage", "app", "db", "desktop"]
    fields = ("name", "peer", "port", "mode", "allowed_names", "untagged", "up")
    assert [tuple(k[f] for f in fields) for k in links["tor1"]] == [
        ("tor1-tor2", "tor2", "tor2", "trunk", trunk, False, True)
    ]
    assert [(k["peer"], k["port"], k["up"]) for k in links["tor2"]] == [("tor1", "tor1", True)]
    assert (_active(reference_lab, "hv2"), _active(reference_lab, "hv3")) == ("eth1", "eth1")
    graph = nlab("graph", "--lab", reference_lab.name, check=True).stdout
    assert '"switch/tor1" -- "switch/tor2"' in graph


def test_a_failover_moves_app1_to_tor1_and_the_link_and_back(reference_lab: Lab) -> None:
    """hv2 loses eth1's carrier: its team moves to eth0, app1 (hv2) and app2 (hv3, still on tor2)
    keep talking through tor1 and the link; healed, the team fails back to eth1."""
    lab = reference_lab
    assert _replies(_ping(lab, "app2", "10.30.0.21")) == 5
    before, link_before = len(_team_events(lab, "hv2")), _passed(lab, "tor1", "tor2")
    nlab("fail", "hv2.eth1", "--lab", lab.name, "--json", check=True)
    try:
        move = _wait_team_event(lab, "hv2", before, "failover")
        assert (move["from"], move["to"], move["cause"]) == ("eth1", "eth0", "carrier")
        assert _active(lab, "hv2") == "eth0"
        assert _replies(_ping(lab, "app2", "10.30.0.21")) == 5
        link_after = _passed(lab, "tor1", "tor2")
        # the requests came over the link into tor1, the replies went back onto it
        assert link_after[0] - link_before[0] >= 5 and link_after[1] - link_before[1] >= 5
    finally:
        before = len(_team_events(lab, "hv2"))
        nlab("heal", "hv2.eth1", "--lab", lab.name, "--json", check=True)
    back = _wait_team_event(lab, "hv2", before, "failback")
    assert (back["from"], back["to"]) == ("eth0", "eth1")
    assert _active(lab, "hv2") == "eth1"
    assert _replies(_ping(lab, "app2", "10.30.0.21")) == 5


def test_a_broadcast_goes_round_the_loop_and_is_delivered_once(reference_lab: Lab) -> None:
    """desk2 (hv2) sends broadcasts and unknown unicasts in the desktop VLAN. tor2 floods them to
    hv3's active eth1 and over the link to tor1, which floods them to both standby members: hv3's
    eth0 and hv2's own eth0 receive every one a second time (the loop is real: the positive
    control, in the same taps) and the team drops them there, so desk1 (hv3) gets each broadcast
    exactly once and hv3's vSwitch takes each unknown unicast once (desk1's port refuses it, not
    its MAC, exactly once each). Nothing leaves a standby member."""
    lab, count = reference_lab, 20
    token = os.urandom(4).hex().encode()
    broadcast, unknown = b"nlab-isl-bcast-" + token, b"nlab-isl-ucast-" + token
    desk2 = va.own_barrier(lab.ns("desk2"), "eth0", "10.50.0.12/24")
    flood = Ether(dst="02:00:00:00:99:99", src=desk2.mac) / ARP(
        hwsrc=desk2.mac, psrc="10.50.0.12", pdst="10.50.0.250"
    )
    frames = [desk2.frame(broadcast), raw(flood / Raw(unknown))] * count
    where = [("desk1", "eth0"), ("hv3", "eth1"), ("hv3", "eth0"), ("hv2", "eth0")]
    drops_before = _count(lab, "hv3", "desk1-0", Direction.EGRESS, Reason.DST_MAC)
    with va.taps((lab.ns(node), iface) for node, iface in where) as taps:
        assert va.inject(lab.ns("desk2"), "eth0", frames) == 2 * count
        seen = va.barriers(taps, {(lab.ns(node), iface): desk2 for node, iface in where})

    def got(node: str, iface: str, what: bytes, outgoing: bool = False) -> int:
        frames = seen[lab.ns(node), iface]
        return sum(1 for f in frames if f.outgoing is outgoing and f.carries(what))

    assert got("desk1", "eth0", broadcast) == count  # each broadcast once, not once per path
    assert got("desk1", "eth0", unknown) == 0
    assert _count(lab, "hv3", "desk1-0", Direction.EGRESS, Reason.DST_MAC) - drops_before == count
    for node, iface in (("hv3", "eth1"), ("hv3", "eth0"), ("hv2", "eth0")):
        assert (got(node, iface, broadcast), got(node, iface, unknown)) == (count, count), (node, iface)
    for node in ("hv2", "hv3"):
        assert got(node, "eth0", broadcast, outgoing=True) == got(node, "eth0", unknown, outgoing=True) == 0
