"""The overlay lab (labs/overlay.yaml) built by `nlab up`: VXLAN segments of two tenants with the
same addresses over a routed underlay (hv1, hv2 on tor1; hv3 on tor2 behind the spine router),
the controller filling every VTEP, the underlay guard on each VTEP's pNIC.

One lab for the module: read-only tests first, those that stop, kill or edit something last.
Isolation is proved with frames seen in the VMs' own taps, each negative with its positive
control (a later frame, the barrier) in the same tap; waits poll taps or tables, never sleep.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import raw

from netns_lab.features.overlay import controller, install
from netns_lab.kernel import fdb, netns
from netns_lab.lab.state import state_dir
from netns_lab.observe.capture import Capture, Frame
from netns_lab.topology import loader
from netns_lab.topology.model import Topology
from tests.lab.conftest import REPO, Lab, leftovers, nlab, running
from tests.lab.test_overlay_controller import collect, wait_until

OVERLAY = REPO / "labs" / "overlay.yaml"
IPV4 = 0x0800
MARKER_PORT = 9  # discard: nothing in the lab listens on it
VXLAN_PORT = 4789
BLUE_WEB, BLUE_DB, RED_WEB = 10010, 10020, 20010


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running(OVERLAY) as lab:
        yield lab


@pytest.fixture(scope="module")
def topo(lab: Lab) -> Topology:
    return loader.load_text(OVERLAY.read_text(), str(OVERLAY), lab=lab.name)


# -- helpers -----------------------------------------------------------------------------------
def mac_of(topo: Topology, vm: str, index: int = 0) -> bytes:
    return bytes.fromhex(topo.vm(vm).nics[index].mac.replace(":", ""))


def ping(lab: Lab, vm: str, ip: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = ["ip", "netns", "exec", lab.ns(vm), "ping", "-n", "-q", "-c", "1", "-W", "2", *extra, ip]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def inner_frame(src: bytes, payload: bytes) -> bytes:
    """An IPv4 UDP broadcast as a VM of blue-web would send it (what a VXLAN packet carries)."""
    mac = src.hex(":")
    return raw(
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="10.0.0.99", dst="10.0.0.255")
        / UDP(dport=9)
        / payload
    )


def send_udp(ns: str, dst: str, payload: bytes, port: int = VXLAN_PORT, source: str = "") -> None:
    """A UDP datagram from inside `ns` (from address `source`, else the route's), broadcasts allowed."""
    with netns.inside(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind((source, 0))
        sock.sendto(payload, (dst, port))


def vxlan(vni: int, inner: bytes) -> bytes:
    """A VXLAN header (I flag set, RFC 7348) and the inner frame."""
    return struct.pack("!II", 0x08000000, vni << 8) + inner


def taps(lab: Lab, *where: str) -> dict[str, Capture]:
    """Receive-only taps on VM NICs: `vm` (eth0) or `vm.ethN`."""
    found = {}
    for w in where:
        vm, _, nic = w.partition(".")
        found[w] = Capture(lab.ns(vm), nic or "eth0")
    return found


def carrying(frames: list[Frame], payload: bytes) -> int:
    return sum(1 for f in frames if payload in f.data)


def ipv4_from(frames: list[Frame], mac: bytes) -> int:
    return sum(1 for f in frames if f.data[6:12] == mac and f.data[12:14] == struct.pack("!H", IPV4))


def overlay_cli(lab: Lab, verb: str) -> tuple[int, dict]:
    proc = nlab("overlay", verb, "--lab", lab.name, "--json")
    return proc.returncode, json.loads(proc.stdout)


def guard_drops(lab: Lab, host: str) -> dict[str, int]:
    _, doc = overlay_cli(lab, "show")
    return doc["guard"][host]["pnics"]["eth0"]


def close(caps: dict[str, Capture]) -> None:
    for cap in caps.values():
        cap.close()


# -- read-only ---------------------------------------------------------------------------------
def test_status_shows_each_nic_vni_and_tenant_and_each_host_vtep(lab: Lab) -> None:
    doc = lab.status()
    assert doc["healthy"], doc["problems"]
    assert {h["name"]: h["vtep"] for h in doc["hosts"]} == {
        "hv1": "10.255.1.11",
        "hv2": "10.255.1.12",
        "hv3": "10.255.2.13",
    }
    nics = {(vm["name"], n["name"]): (n["vni"], n["tenant"]) for vm in doc["vms"] for n in vm["nics"]}
    assert nics[("bweb1", "eth0")] == (BLUE_WEB, "blue") and nics[("rweb1", "eth0")] == (RED_WEB, "red")
    assert nics[("bgw", "eth1")] == (BLUE_DB, "blue") and nics[("leg1", "eth0")] == (None, None)
    (spine,) = doc["routers"]
    assert spine["present"] and [(n["name"], n["ip"], n["up"]) for n in spine["nics"]] == [
        ("eth0", "10.255.1.1/24", True),
        ("eth1", "10.255.2.1/24", True),
    ]
    # every VXLAN device is a port with its VLAN policy and its programs, like an uplink
    ports = {(h["name"], p["name"]): p for h in doc["hosts"] for p in h["ports"]}
    vx = ports[("hv3", f"vx-{RED_WEB}")]
    assert vx["present"] and vx["mode"] == "plain" and vx["programs"]["ingress"]


def test_same_segment_reaches_across_hosts_and_the_routed_underlay(lab: Lab) -> None:
    assert ping(lab, "bweb1", "10.0.0.12").returncode == 0  # hv1 -> hv2, one switch
    assert ping(lab, "bweb1", "10.0.0.13").returncode == 0  # hv1 -> hv3 through the spine
    assert ping(lab, "rweb3", "10.0.0.11").returncode == 0
    assert ping(lab, "bweb3", "10.0.1.21").returncode == 0  # blue-web -> blue-db through bgw
    # a full-size frame crosses (MTU 1450 on a segment NIC: 1422 bytes of ICMP data + 28)...
    assert ping(lab, "bweb1", "10.0.0.13", "-M", "do", "-s", "1422").returncode == 0
    # ...one byte more is refused at the VM, never fragmented on the underlay
    assert ping(lab, "bweb1", "10.0.0.13", "-M", "do", "-s", "1423").returncode != 0
    link = subprocess.run(
        ["ip", "-n", lab.ns("bweb1"), "link", "show", "eth0"], capture_output=True, text=True
    )
    assert " mtu 1450 " in link.stdout


def test_tenants_with_the_same_addresses_each_reach_their_own_vm(lab: Lab, topo: Topology) -> None:
    caps = taps(lab, "bweb3", "rweb3")
    try:
        assert ping(lab, "bweb1", "10.0.0.13").returncode == 0
        assert ping(lab, "rweb1", "10.0.0.13").returncode == 0  # the barrier of both taps too
        seen: dict[str, list[Frame]] = {}
        blue, red = mac_of(topo, "bweb1"), mac_of(topo, "rweb1")
        collect(
            caps, seen, lambda: ipv4_from(seen["rweb3"], red) >= 1 and ipv4_from(seen["bweb3"], blue) >= 1
        )
    finally:
        close(caps)
    assert ipv4_from(seen["bweb3"], blue) == 1 and ipv4_from(seen["rweb3"], red) == 1
    assert ipv4_from(seen["bweb3"], red) == 0 and ipv4_from(seen["rweb3"], blue) == 0
    with fdb.Tables(lab.ns("bweb1")) as blue_vm, fdb.Tables(lab.ns("rweb1")) as red_vm:
        assert {n.ip: n.mac for n in blue_vm.neighbours("eth0")}["10.0.0.13"] == topo.vm("bweb3").nics[0].mac
        assert {n.ip: n.mac for n in red_vm.neighbours("eth0")}["10.0.0.13"] == topo.vm("rweb3").nics[0].mac


def test_a_broadcast_stays_in_its_segment(lab: Lab, topo: Topology) -> None:
    """blue-web's broadcast reaches blue-web on every host, not blue-db (same tenant), red-web
    (same addresses) nor the VLAN; each of those taps then sees a broadcast of its own."""
    caps = taps(lab, "bweb2", "bweb3", "bgw", "bgw.eth1", "bdb1", "rweb3", "leg2")
    token = secrets.token_hex(4).encode()
    blue, red, db, vlan = (f"{n}-{token.decode()}".encode() for n in ("blue", "red", "db", "vlan"))
    try:
        send_udp(lab.ns("bweb1"), "10.0.0.255", blue, MARKER_PORT)
        send_udp(lab.ns("rweb1"), "10.0.0.255", red, MARKER_PORT)
        send_udp(lab.ns("bgw"), "10.0.1.255", db, MARKER_PORT, source="10.0.1.1")
        send_udp(lab.ns("leg1"), "10.100.0.255", vlan, MARKER_PORT)
        seen: dict[str, list[Frame]] = {}
        barriers = {"bweb2": blue, "bweb3": blue, "bgw": blue, "bdb1": db, "rweb3": red, "leg2": vlan}
        collect(caps, seen, lambda: all(carrying(seen[t], p) for t, p in barriers.items()))
    finally:
        close(caps)
    assert {t: carrying(f, blue) for t, f in seen.items()} == {
        "bweb2": 1,
        "bweb3": 1,
        "bgw": 1,
        "bgw.eth1": 0,
        "bdb1": 0,
        "rweb3": 0,
        "leg2": 0,
    }
    assert carrying(seen["rweb3"], red) == carrying(seen["bdb1"], db) == carrying(seen["leg2"], vlan) == 1


def test_a_vm_sent_vxlan_packet_is_only_a_vm_packet(lab: Lab, topo: Topology) -> None:
    """rweb1 (red) sends UDP 4789 with a VXLAN header for blue-web's VNI and a broadcast inside:
    rweb3 gets it as the UDP packet it is; nothing of it is decapsulated into blue-web."""
    caps = taps(lab, "rweb3", "bweb1", "bweb2", "bweb3")
    token = secrets.token_hex(4).encode()
    inner, barrier = b"inner-" + token, b"barrier-" + token
    fake = bytes.fromhex("020000000099")
    try:
        for dst in ("10.0.0.13", "10.0.0.255"):
            send_udp(lab.ns("rweb1"), dst, vxlan(BLUE_WEB, inner_frame(fake, inner)))
        send_udp(lab.ns("bweb1"), "10.0.0.255", barrier, MARKER_PORT)
        seen: dict[str, list[Frame]] = {}
        done = ("bweb2", "bweb3")
        collect(
            caps,
            seen,
            lambda: carrying(seen["rweb3"], inner) >= 2 and all(carrying(seen[t], barrier) for t in done),
        )
    finally:
        close(caps)
    assert carrying(seen["rweb3"], inner) == 2  # the unicast and the subnet broadcast, as UDP
    assert {t: carrying(seen[t], inner) for t in ("bweb1", "bweb2", "bweb3")} == {
        "bweb1": 0,
        "bweb2": 0,
        "bweb3": 0,
    }
    assert {t: carrying(seen[t], barrier) for t in done} == {"bweb2": 1, "bweb3": 1}


def test_vxlan_from_an_unregistered_address_or_for_an_unknown_vni_is_dropped_and_counted(
    lab: Lab, topo: Topology
) -> None:
    """The spine (an underlay address, not a VTEP) sends blue-web's VNI to hv1; hv2 (a VTEP) sends
    a VNI hv1 does not host, then blue-web's: only the last reaches bweb1."""
    before = guard_drops(lab, "hv1")
    caps = taps(lab, "bweb1", "rweb1")
    token = secrets.token_hex(4).encode()
    rogue, unknown, ok = b"rogue-" + token, b"vni-" + token, b"ok-" + token
    fake = bytes.fromhex("020000000098")
    try:
        send_udp(lab.ns("spine"), "10.255.1.11", vxlan(BLUE_WEB, inner_frame(fake, rogue)))
        send_udp(lab.ns("hv2"), "10.255.1.11", vxlan(BLUE_DB, inner_frame(fake, unknown)))
        send_udp(lab.ns("hv2"), "10.255.1.11", vxlan(BLUE_WEB, inner_frame(fake, ok)))
        seen: dict[str, list[Frame]] = {}
        collect(caps, seen, lambda: carrying(seen["bweb1"], ok) >= 1)
    finally:
        close(caps)
    assert {p: carrying(seen["bweb1"], p) for p in (rogue, unknown, ok)} == {rogue: 0, unknown: 0, ok: 1}
    assert carrying(seen["rweb1"], rogue) == carrying(seen["rweb1"], unknown) == 0
    after = guard_drops(lab, "hv1")
    delta = {r: after.get(r, 0) - before.get(r, 0) for r in ("vxlan-unknown-vtep", "vxlan-unknown-vni")}
    assert delta == {"vxlan-unknown-vtep": 1, "vxlan-unknown-vni": 1}


def test_show_lists_every_vtep_entry_with_its_origin(lab: Lab, topo: Topology) -> None:
    code, doc = overlay_cli(lab, "show")
    assert code == 0 and doc["controller"] is not None
    assert {s["segment"]: (s["vni"], s["tenant"], s["hosts"]) for s in doc["segments"]} == {
        "blue-web": (BLUE_WEB, "blue", ["hv1", "hv2", "hv3"]),
        "blue-db": (BLUE_DB, "blue", ["hv2"]),
        "red-web": (RED_WEB, "red", ["hv1", "hv3"]),
    }
    (red,) = [s for s in doc["hosts"]["hv1"] if s["vni"] == RED_WEB]
    rweb3 = topo.vm("rweb3").nics[0].mac
    vxlan_entries = {(e["mac"], e["dst"]): e["origin"] for e in red["fdb"] if e["table"] == "vxlan"}
    assert vxlan_entries == {
        (rweb3, "10.255.2.13"): "controller",
        ("00:00:00:00:00:00", "10.255.2.13"): "controller",
    }
    assert {n["ip"]: (n["mac"], n["origin"]) for n in red["neighbours"]} == {
        "10.0.0.11": (topo.vm("rweb1").nics[0].mac, "controller"),
        "10.0.0.13": (rweb3, "controller"),
    }


# -- destructive: last -------------------------------------------------------------------------
def test_a_hand_deleted_entry_is_reported_by_check_then_repaired(lab: Lab, topo: Topology) -> None:
    assert overlay_cli(lab, "check")[0] == 0
    pid = install.controller_pid(lab.name)
    assert pid is not None
    bweb3 = topo.vm("bweb3").nics[0].mac
    os.kill(pid, signal.SIGSTOP)  # so that check sees the drift before the repair
    try:
        with fdb.Tables(lab.ns("hv1")) as t:
            (entry,) = [e for e in t.fdb(f"vx-{BLUE_WEB}") if e.mac == bweb3 and not e.master]
            t.delete_fdb(entry)
        code, doc = overlay_cli(lab, "check")
        assert code == 3
        assert [(d["host"], d["table"], d["key"], d["action"], d["want"]) for d in doc["drift"]] == [
            ("hv1", "vxlan", bweb3, "add", "10.255.2.13")
        ]
        text = nlab("overlay", "check", "--lab", lab.name)
        assert text.returncode == 3 and bweb3 in text.stdout
    finally:
        os.kill(pid, signal.SIGCONT)
    plan = install.plan_of(topo)
    wait_until("the entry repaired", lambda: controller.check(lab.name, plan) == [])
    assert overlay_cli(lab, "check")[0] == 0
    assert ping(lab, "bweb1", "10.0.0.13").returncode == 0


def test_killed_controller_leaves_traffic_flowing_and_a_restart_reconciles(lab: Lab, topo: Topology) -> None:
    pid = install.controller_pid(lab.name)
    assert pid is not None
    caps = taps(lab, "bweb3")
    command = ["ip", "netns", "exec", lab.ns("bweb1"), "ping", "-n", "-q", "-c", "300", "-i", "0.005"]
    pinger = subprocess.Popen([*command, "-W", "1", "10.0.0.13"], stdout=subprocess.PIPE, text=True)
    try:
        seen: dict[str, list[Frame]] = {}
        collect(caps, seen, lambda: ipv4_from(seen["bweb3"], mac_of(topo, "bweb1")) >= 20)  # mid-traffic
        os.kill(pid, signal.SIGKILL)
        assert pinger.wait(timeout=60) == 0
    finally:
        close(caps)
        if pinger.poll() is None:
            pinger.kill()
    assert re.search(r"300 packets transmitted, 300 received", pinger.stdout.read() if pinger.stdout else "")
    wait_until("the controller gone", lambda: install.controller_pid(lab.name) is None)
    plan = install.plan_of(topo)
    assert controller.check(lab.name, plan) == []  # fail static: every entry stayed
    # while none runs, a neighbour entry goes; the restarted controller puts it back
    with fdb.Tables(lab.ns("hv3")) as t:
        (entry,) = [n for n in t.neighbours(f"sg-{RED_WEB}") if n.ip == "10.0.0.11"]
        t.delete_neigh(entry)
    assert [(d.host, d.table, d.key) for d in controller.check(lab.name, plan)] == [
        ("hv3", "neigh", "10.0.0.11")
    ]
    proc = install.start_controller(lab.name, plan)  # as `nlab up` starts it, in hv1's namespace
    assert install.controller_pid(lab.name) == proc.pid
    assert controller.check(lab.name, plan) == []
    log = (state_dir(lab.name) / controller.LOG).read_text()
    assert log.rstrip().endswith("first pass over 3 hosts: 1 entries changed")
    assert ping(lab, "rweb3", "10.0.0.11").returncode == 0


def test_a_live_change_gives_the_controller_its_new_plan_and_a_new_segment_is_refused(
    lab: Lab, topo: Topology
) -> None:
    from netns_lab.lab import running as running_lab

    rweb3 = topo.vm("rweb3").nics[0].mac

    def readdress(data: dict) -> None:
        data["vms"]["rweb3"]["nics"][0]["ip"] = "10.0.0.23/24"

    def resegment(data: dict) -> None:
        data["vms"]["rweb1"]["nics"][0]["segment"] = "blue-db"

    def neighbours() -> dict[str, str | None]:
        with fdb.Tables(lab.ns("hv1")) as t:
            return {n.ip: n.mac for n in t.neighbours(f"sg-{RED_WEB}")}

    with running_lab.opened(lab.name) as live:
        with pytest.raises(RuntimeError, match="hv1: the overlay segments or VTEP"):
            live.change(resegment)  # rolled back on every host: nothing changed
        live.change(readdress)
    wait_until("rweb3's new address on hv1", lambda: neighbours().get("10.0.0.23") == rweb3)
    assert "10.0.0.13" not in neighbours()
    assert overlay_cli(lab, "check")[0] == 0  # against the changed topology


def test_a_vm_migrates_across_its_vxlan_segment_and_back(lab: Lab) -> None:
    """bweb2 (blue-web) from hv2 to hv1, where the segment is already, and back: a TCP connection
    from bweb3 on hv3 goes on across VXLAN, the controller's tables follow (check is clean)."""
    from netns_lab.features.migration import live as migration
    from tests.lab.migration_tools import echo, echo_server, tcp

    with echo_server(lab.ns("bweb2"), 80), tcp(lab.ns("bweb3"), "10.0.0.12", 80) as conn:
        for host in ("hv1", "hv2"):
            doc = migration.migrate(lab.name, "bweb2", host)
            assert doc["nics"][0]["segment"] == "blue-web" and doc["phases"][-1]["phase"] == "done"
            assert echo(conn, host.encode()) == host.encode()
            assert overlay_cli(lab, "check")[0] == 0


def test_down_removes_everything_the_overlay_made(lab: Lab) -> None:
    pid = install.controller_pid(lab.name)
    assert pid is not None
    namespaces = {lab.ns(n) for n in ("spine", "tor1", "tor2", "hv1", "hv2", "hv3", "bweb1")}
    proc = lab.down()
    assert proc.returncode == 0, proc.stderr
    assert not leftovers(lab.name, lab.inodes)
    assert not any(netns.path(ns).exists() for ns in namespaces)
    assert not alive(pid)


def alive(pid: int) -> bool:
    """A process that still runs (a zombie waiting for its parent does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
