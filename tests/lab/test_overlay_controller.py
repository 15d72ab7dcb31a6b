"""The overlay controller on real namespaces: a three-host VXLAN lab built without the builder.

                         <p>-ul: bridge `fabric` (flat underlay 10.255.1.0/24)
              hv1 .11 ─────────── hv2 .12 ─────────── hv3 .13        (VTEPs)
    blue 10010  a1 10.0.0.1         a2 10.0.0.2         a3 10.0.0.3
    red  10020  b1 10.0.0.1         b2 10.0.0.2         b3 10.0.0.3  (same addresses, other tenant)

(tests/lab/overlay_lab.py builds it; every namespace under a random prefix, removed afterwards.)
Isolation is proved with frames seen in the VMs' own taps, each negative with its positive
control in the same tap; waits poll the kernel tables or taps, never sleep.
"""

from __future__ import annotations

import re
import secrets
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from netns_lab.features.overlay import controller
from netns_lab.features.overlay.plan import plan
from netns_lab.kernel import fdb, netns
from netns_lab.observe.capture import Capture, Frame
from tests.lab.overlay_lab import SEGMENTS, OverlayLab, overlay_data, overlay_lab, vm_mac

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_PACKET"), reason="needs Linux")

BROADCAST = b"\xff" * 6
MARKER_TYPE = 0x88B5  # IEEE local experimental ethertype: nothing in the lab answers it
ARP, IPV4 = 0x0806, 0x0800
SOLICIT6, ECHO6 = 135, 128  # ICMPv6 types
TIMEOUT = 10.0
BLUE, RED = (f"vx-{SEGMENTS[s]}" for s in ("blue", "red"))


@pytest.fixture
def ctl_lab() -> Iterator[OverlayLab]:
    with overlay_lab("controller") as lab:
        yield lab


@pytest.fixture
def ctl_lab6() -> Iterator[OverlayLab]:
    with overlay_lab("controller", ipv6=True) as lab:
        yield lab


@pytest.fixture
def flood_lab() -> Iterator[OverlayLab]:
    with overlay_lab("flood") as lab:
        yield lab


# -- helpers -----------------------------------------------------------------------------------
def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def send_broadcast(lab: OverlayLab, vm: str, payload: bytes) -> None:
    with netns.inside(lab.ns(vm)):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with sock:
        sock.bind(("eth0", 0))
        sock.send(BROADCAST + mac_bytes(vm_mac(vm)) + struct.pack("!H", MARKER_TYPE) + payload)


def taps(lab: OverlayLab, *vms: str) -> dict[str, Capture]:
    return {vm: Capture(lab.ns(vm), "eth0") for vm in vms}


def collect(caps: dict[str, Capture], seen: dict[str, list[Frame]], done: Callable[[], bool]) -> None:
    """Read the taps into `seen` until `done()`; AssertionError after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        for vm, cap in caps.items():
            seen.setdefault(vm, []).extend(cap.read())
        if done():
            return
        assert time.monotonic() < deadline, {vm: len(frames) for vm, frames in seen.items()}
        time.sleep(0.01)


def with_payload(frames: list[Frame], payload: bytes) -> int:
    return sum(
        1 for f in frames if f.data[12:14] == struct.pack("!H", MARKER_TYPE) and f.data[14:] == payload
    )


def from_mac(frames: list[Frame], vm: str, ethertype: int | None = None) -> int:
    src = mac_bytes(vm_mac(vm))
    return sum(
        1
        for f in frames
        if f.data[6:12] == src and (ethertype is None or f.data[12:14] == struct.pack("!H", ethertype))
    )


def arp_requests_from(frames: list[Frame], vm: str) -> int:
    sender = mac_bytes(vm_mac(vm))
    return sum(
        1
        for f in frames
        if f.data[12:14] == struct.pack("!H", ARP) and f.data[20:22] == b"\0\1" and f.data[22:28] == sender
    )


def icmp6_from(frames: list[Frame], vm: str, icmp_type: int) -> int:
    src = mac_bytes(vm_mac(vm))
    return sum(
        1
        for f in frames
        if f.data[6:12] == src
        and f.data[12:14] == b"\x86\xdd"
        and f.data[20] == 58
        and f.data[54] == icmp_type
    )


def ping_ok(lab: OverlayLab, vm: str, ip: str, count: int = 1) -> bool:
    return lab.ping(vm, ip, count).returncode == 0


def neighbour_mac(lab: OverlayLab, vm: str, ip: str) -> str | None:
    with fdb.Tables(lab.ns(vm)) as t:
        return next((n.mac for n in t.neighbours("eth0") if n.ip == ip), None)


def remote(lab: OverlayLab, host: str, dev: str, mac: str) -> list[fdb.Fdb]:
    with lab.tables(host) as t:
        return [e for e in t.fdb(dev) if e.mac == mac and not e.master]


def wait_until(what: str, probe: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not probe():
        assert time.monotonic() < deadline, f"not within {TIMEOUT} s: {what}"
        time.sleep(0.01)


# -- controller mode ---------------------------------------------------------------------------
def test_first_pass_programs_every_entry_and_check_then_finds_no_drift(ctl_lab: OverlayLab) -> None:
    ctl_lab.start_controller()
    assert controller.check(ctl_lab.lab, ctl_lab.plan) == []
    view = controller.show(ctl_lab.lab, {"hv1": [10010]})["hv1"][0]
    origins = {(e["table"], e["mac"]): e["origin"] for e in view["fdb"]}
    assert origins[("vxlan", vm_mac("a2"))] == origins[("bridge", vm_mac("a3"))] == "controller"
    assert {n["ip"]: (n["mac"], n["origin"]) for n in view["neighbours"]} == {
        f"10.0.0.{i}": (vm_mac(f"a{i}"), "controller") for i in (1, 2, 3)
    }
    replication = sorted(e["dst"] for e in view["fdb"] if e["mac"] == "00:00:00:00:00:00")
    assert replication == ["10.255.1.12", "10.255.1.13"]


def test_same_segment_reaches_across_hosts_and_tenants_with_the_same_addresses_stay_apart(
    ctl_lab: OverlayLab,
) -> None:
    ctl_lab.start_controller()
    caps = taps(ctl_lab, "a2", "b2")
    assert ping_ok(ctl_lab, "a1", "10.0.0.2") and ping_ok(ctl_lab, "b1", "10.0.0.2")  # b1: barrier too
    seen: dict[str, list[Frame]] = {}
    collect(caps, seen, lambda: from_mac(seen.get("b2", []), "b1", IPV4) >= 1)
    assert from_mac(seen["a2"], "a1", IPV4) == 1 and from_mac(seen["b2"], "b1", IPV4) == 1
    assert from_mac(seen["b2"], "a1") == 0 and from_mac(seen["a2"], "b1") == 0
    # the same address resolves to the tenant's own VM, on every host pair
    for i in (2, 3):
        assert ping_ok(ctl_lab, "a1", f"10.0.0.{i}") and ping_ok(ctl_lab, "b1", f"10.0.0.{i}")
        assert neighbour_mac(ctl_lab, "a1", f"10.0.0.{i}") == vm_mac(f"a{i}")
        assert neighbour_mac(ctl_lab, "b1", f"10.0.0.{i}") == vm_mac(f"b{i}")


def test_a_broadcast_reaches_its_segment_on_every_host_and_nothing_else(ctl_lab: OverlayLab) -> None:
    ctl_lab.start_controller()
    caps = taps(ctl_lab, "a2", "a3", "b1", "b2", "b3")
    blue, red = b"blue-" + secrets.token_bytes(4), b"red-" + secrets.token_bytes(4)
    send_broadcast(ctl_lab, "a1", blue)
    send_broadcast(ctl_lab, "b1", red)  # the barrier: once it is everywhere in red, blue's has been
    seen: dict[str, list[Frame]] = {}
    collect(caps, seen, lambda: all(with_payload(seen.get(vm, []), red) for vm in ("b2", "b3")))
    collect(caps, seen, lambda: all(with_payload(seen.get(vm, []), blue) for vm in ("a2", "a3")))
    assert {vm: with_payload(seen[vm], blue) for vm in caps} == {"a2": 1, "a3": 1, "b1": 0, "b2": 0, "b3": 0}
    assert {vm: with_payload(seen[vm], red) for vm in ("a2", "a3", "b2", "b3")} == {
        "a2": 0,
        "a3": 0,
        "b2": 1,
        "b3": 1,
    }


def test_arp_for_a_known_address_is_answered_on_the_host_and_never_crosses(ctl_lab: OverlayLab) -> None:
    ctl_lab.start_controller()
    caps = taps(ctl_lab, "a3", "b3")
    assert ping_ok(ctl_lab, "a1", "10.0.0.3")  # a1 had to ask: its neighbour table was empty
    assert ping_ok(ctl_lab, "b1", "10.0.0.3")
    seen: dict[str, list[Frame]] = {}
    collect(caps, seen, lambda: from_mac(seen.get("b3", []), "b1", IPV4) >= 1)
    collect(caps, seen, lambda: from_mac(seen.get("a3", []), "a1", IPV4) >= 1)
    # the echo request crossed; the ARP request before it was answered by hv1's bridge (its
    # answer, and hv3's to the VM's own request, carry the remote VM's MAC as their source)
    assert arp_requests_from(seen["a3"], "a1") == 0 and arp_requests_from(seen["b3"], "b1") == 0


def test_neighbour_solicitation_for_a_known_address_is_answered_on_the_host(ctl_lab6: OverlayLab) -> None:
    ctl_lab6.start_controller()
    caps = taps(ctl_lab6, "a2", "a3", "b2")
    assert ping_ok(ctl_lab6, "a1", "fd00::2") and ping_ok(ctl_lab6, "b1", "fd00::2")
    seen: dict[str, list[Frame]] = {}
    collect(caps, seen, lambda: icmp6_from(seen.get("b2", []), "b1", ECHO6) >= 1)
    collect(caps, seen, lambda: icmp6_from(seen.get("a2", []), "a1", ECHO6) >= 1)
    assert neighbour_mac(ctl_lab6, "a1", "fd00::2") == vm_mac("a2")
    assert neighbour_mac(ctl_lab6, "b1", "fd00::2") == vm_mac("b2")
    # a1's solicitation went to a multicast address; hv1's bridge answered, nothing crossed
    assert {vm: icmp6_from(seen[vm], "a1", SOLICIT6) for vm in ("a2", "a3")} == {"a2": 0, "a3": 0}
    assert icmp6_from(seen["b2"], "b1", SOLICIT6) == 0


def test_killed_controller_leaves_traffic_flowing_and_a_restart_rewrites_nothing(ctl_lab: OverlayLab) -> None:
    proc = ctl_lab.start_controller()
    caps = taps(ctl_lab, "a2")
    command = ["ip", "netns", "exec", ctl_lab.ns("a1"), "ping", "-n", "-q", "-c", "400", "-i", "0.005"]
    ping = subprocess.Popen([*command, "-W", "1", "10.0.0.2"], stdout=subprocess.PIPE, text=True)
    seen: dict[str, list[Frame]] = {}
    collect(caps, seen, lambda: from_mac(seen.get("a2", []), "a1", IPV4) >= 20)  # mid-traffic
    proc.kill()
    proc.wait()
    assert ping.wait(timeout=60) == 0
    assert re.search(r"400 packets transmitted, 400 received", ping.stdout.read() if ping.stdout else "")
    assert controller.check(ctl_lab.lab, ctl_lab.plan) == []  # fail static: all still there

    socks, devices = {}, {}
    for host in ("hv1", "hv2", "hv3"):
        socks[host] = fdb.neigh_events(ctl_lab.ns(host))
        with ctl_lab.tables(host) as t:
            devices[host] = {t.index(f"{kind}-{vni}") for kind in ("vx", "sg") for vni in SEGMENTS.values()}
    try:
        ctl_lab.start_controller()  # returns after its first pass
        assert {h: fdb.drain(s, devices[h]) for h, s in socks.items()} == {"hv1": 0, "hv2": 0, "hv3": 0}
    finally:
        for s in socks.values():
            s.close()
    assert ctl_lab.log().rstrip().endswith("first pass over 3 hosts: 0 entries changed")


def test_entries_changed_by_hand_are_reported_then_repaired_as_they_happen(ctl_lab: OverlayLab) -> None:
    proc = ctl_lab.start_controller()
    proc.kill()
    proc.wait()
    with ctl_lab.tables("hv1") as t:
        (entry,) = remote(ctl_lab, "hv1", BLUE, vm_mac("a2"))
        t.delete_fdb(entry)  # as `bridge fdb del ... self`
    with ctl_lab.tables("hv2") as t:  # as `ip neigh replace 10.0.0.3 lladdr <b1> dev sg-10020`
        t.ipr.neigh(
            "replace",
            ifindex=t.index("sg-10020"),
            dst="10.0.0.3",
            lladdr=vm_mac("b1"),
            state=fdb.NUD_PERMANENT,
        )
    drifts = [(c.host, c.action, c.table, c.key, c.want) for c in controller.check(ctl_lab.lab, ctl_lab.plan)]
    assert drifts == [
        ("hv1", "add", "vxlan", vm_mac("a2"), "10.255.1.12"),
        ("hv2", "fix", "neigh", "10.0.0.3", vm_mac("b3")),
    ]

    ctl_lab.start_controller()  # repairs both in its first pass
    assert controller.check(ctl_lab.lab, ctl_lab.plan) == []
    # while it runs: each hand change is put back on the event, not by the (hour-long) pass
    repairs = ctl_lab.log().count(f"hv1 {BLUE} vxlan {vm_mac('a2')}")
    with ctl_lab.tables("hv1") as t:
        (entry,) = remote(ctl_lab, "hv1", BLUE, vm_mac("a2"))
        t.delete_fdb(entry)
        wait_until("a2's entry back on hv1", lambda: len(remote(ctl_lab, "hv1", BLUE, vm_mac("a2"))) == 1)
        # as `bridge fdb replace ... dev vx-10010 dst 10.255.1.13` (iproute2 means `self`)
        hand = {"lladdr": vm_mac("a2"), "dst": "10.255.1.13", "flags": fdb.NTF_SELF}
        t.ipr.fdb("replace", ifindex=t.index(BLUE), state=fdb.NUD_PERMANENT, **hand)
        wait_until(
            "a2's entry pointing at hv2 again",
            lambda: (
                [(e.dst, e.origin) for e in remote(ctl_lab, "hv1", BLUE, vm_mac("a2"))]
                == [("10.255.1.12", "controller")]
            ),
        )
    assert controller.check(ctl_lab.lab, ctl_lab.plan) == []
    log = ctl_lab.log()
    assert log.count(f"hv1 {BLUE} vxlan {vm_mac('a2')}") == repairs + 2
    assert f"hv1 {BLUE} vxlan {vm_mac('a2')}: fix (have 10.255.1.13 static, want 10.255.1.12)" in log
    assert ping_ok(ctl_lab, "a1", "10.0.0.2")


def test_a_new_plan_on_sighup_moves_and_removes_entries(ctl_lab: OverlayLab) -> None:
    proc = ctl_lab.start_controller()
    # b3 leaves; a3's MAC now lives behind hv2 (a VM moved, as far as the tables go)
    data = overlay_data("controller")
    moved = tuple(replace(m, host="hv2") if m.vm == "a3" else m for m in data.members if m.vm != "b3")
    ctl_lab.plan = plan(replace(data, members=moved))
    controller.write_plan(ctl_lab.lab, ctl_lab.plan)
    proc.send_signal(signal.SIGHUP)
    wait_until("b3 gone from hv1", lambda: remote(ctl_lab, "hv1", RED, vm_mac("b3")) == [])
    wait_until(
        "a3 behind hv2 on hv1",
        lambda: [e.dst for e in remote(ctl_lab, "hv1", BLUE, vm_mac("a3"))] == ["10.255.1.12"],
    )
    assert controller.check(ctl_lab.lab, ctl_lab.plan) == []
    with ctl_lab.tables("hv1") as t:
        assert "10.0.0.3" not in {n.ip for n in t.neighbours("sg-10020")}
        assert vm_mac("b3") not in {e.mac for e in t.fdb(RED)}
        assert sorted(e.dst for e in t.fdb(RED) if e.mac == "00:00:00:00:00:00") == ["10.255.1.12"]
    assert "plan reloaded" in ctl_lab.log()


# -- flood mode --------------------------------------------------------------------------------
def test_flood_mode_works_by_learning_and_show_says_so(flood_lab: OverlayLab) -> None:
    flood_lab.start_controller()
    assert controller.check(flood_lab.lab, flood_lab.plan) == []
    assert ping_ok(flood_lab, "a1", "10.0.0.3") and ping_ok(flood_lab, "b1", "10.0.0.3")
    assert neighbour_mac(flood_lab, "a1", "10.0.0.3") == vm_mac("a3")
    assert neighbour_mac(flood_lab, "b1", "10.0.0.3") == vm_mac("b3")
    view = controller.show(flood_lab.lab, {"hv1": [10010]})["hv1"][0]
    entries = {(e["table"], e["mac"], e["dst"]): e["origin"] for e in view["fdb"]}
    assert entries[("vxlan", vm_mac("a3"), "10.255.1.13")] == "learned"
    assert entries[("bridge", vm_mac("a3"), None)] == "learned"
    assert entries[("vxlan", "00:00:00:00:00:00", "10.255.1.12")] == "controller"
    assert view["neighbours"] == []  # nothing answers ARP locally in flood mode
    assert controller.check(flood_lab.lab, flood_lab.plan) == []  # learned entries are not drift
