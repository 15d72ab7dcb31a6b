"""BGP EVPN on real namespaces: FRR fills the kernel FDB of every VTEP, segments stay apart.

                      rr 10.255.0.254 (route reflector, no VNI)
                       |
     h1 10.255.0.11 --[ul]-- h2 10.255.0.12 -- h3 10.255.0.13      one switch, one subnet
      sg-10010: b1         sg-10010: b2         sg-20020: r3
                           sg-20020: r1         (+ sg-10010: b3, added live)

    tenant blue, VNI 10010: b1 10.0.0.1, b2 10.0.0.2, b3 10.0.0.3 (live)
    tenant red,  VNI 20020: r1 10.0.0.1, r3 10.0.0.3                (overlapping addresses)

The tests share one fabric and run in file order: b3 is added live, then b2 moves to h3,
last h3's FRR is stopped. Built with kernel helpers (tests/lab/evpn_fabric.py), not the
builder; journaled as a lab and removed by `teardown.down`, which must also end the FRR daemons.
"""

from __future__ import annotations

import contextlib
import select
import subprocess
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address

import pytest

from netns_lab.features.overlay import evpn, frr
from netns_lab.kernel import fdb, netns
from netns_lab.observe import probe
from netns_lab.observe.capture import Capture
from tests.lab import evpn_fabric as ef
from tests.lab.conftest import leftovers, unique_name

pytestmark = [
    pytest.mark.root,
    pytest.mark.lab,
    pytest.mark.skipif(frr.available() is not None, reason=f"FRR: {frr.available()}"),
]

BLUE, RED = 10010, 20020
VMS = (
    ef.VM("b1", "h1", BLUE, "10.0.0.1/24", "02:0b:00:00:00:01"),
    ef.VM("b2", "h2", BLUE, "10.0.0.2/24", "02:0b:00:00:00:02"),
    ef.VM("r1", "h2", RED, "10.0.0.1/24", "02:0a:00:00:00:01"),
    ef.VM("r3", "h3", RED, "10.0.0.3/24", "02:0a:00:00:00:03"),
)
B3 = ef.VM("b3", "h3", BLUE, "10.0.0.3/24", "02:0b:00:00:00:03")
BARRIER = "10.0.0.254"  # nobody has it: an ARP request for it only marks the end of a capture
HOSTS = {"h1": "10.255.0.11/24", "h2": "10.255.0.12/24", "h3": "10.255.0.13/24"}


def frr_pids(fabric: ef.Fabric) -> list[int]:
    return [pid for n in ("rr", *fabric.hosts) for pid in frr.running(fabric.node(n)).values()]


@pytest.fixture(scope="module")
def fabric() -> Iterator[ef.Fabric]:
    f = ef.Fabric(unique_name(), dict(HOSTS), "10.255.0.254/24", vms={vm.name: vm for vm in VMS})
    with torn_down(f):
        f.converge()
        yield f


@contextlib.contextmanager
def torn_down(f: ef.Fabric) -> Iterator[None]:
    """Teardown of every lab of the fabric even on failure; it must end the FRR daemons too."""
    try:
        yield
    finally:
        inodes = {i for i in (netns.inode(n) for n in f.namespaces()) if i}
        pids = frr_pids(f)
        ended = f.down()
        assert set(pids) <= set(ended), f"teardown missed FRR daemons {set(pids) - set(ended)}"
        for lab in f.states:
            assert not leftovers(lab, inodes), lab


def test_sessions_established_through_the_reflector(fabric: ef.Fabric) -> None:
    rr = frr.sessions(fabric.node("rr"))
    states = evpn.established(rr, [fabric.vtep(h) for h in fabric.hosts])
    assert set(states.values()) == {"Established"}, states
    for host in fabric.hosts:
        assert evpn.established(frr.sessions(fabric.node(host)), [fabric.rr_ip]) == {
            str(fabric.rr_ip): "Established"
        }


def test_kernel_fdb_is_what_the_model_says_and_bgp_put_it_there(fabric: ef.Fabric) -> None:
    # exact, per host and VNI: head-end replication per remote VTEP, extern_learn per remote MAC
    assert fabric.expected_fdb("h2") == {
        BLUE: {(ef.ZERO_MAC, fabric.vtep("h1")), ("02:0b:00:00:00:01", fabric.vtep("h1"))},
        RED: {(ef.ZERO_MAC, fabric.vtep("h3")), ("02:0a:00:00:00:03", fabric.vtep("h3"))},
    }
    assert {h: ef.fdb_diff(fabric, h) for h in fabric.hosts} == {h: {} for h in fabric.hosts}
    h1 = ef.vxlan_fdb(fabric.ns("h1"), BLUE)
    assert ("02:0b:00:00:00:02", fabric.vtep("h2"), True) in h1  # extern_learn: from BGP
    # the overlay's FDB door reads both copies of a remote MAC (vxlan `dst` entry and the
    # bridge's on the vxlan port) as BGP's
    with fdb.Tables(fabric.ns("h1")) as tables:
        b2 = [(e.master, e.origin) for e in tables.fdb(f"vx-{BLUE}") if e.mac == "02:0b:00:00:00:02"]
    assert sorted(b2) == [(False, "bgp"), (True, "bgp")]
    # and zebra says it installed exactly the model's entries, head-end replication included
    # (those are `permanent` without extern_learn in the kernel: only zebra tells they are BGP's)
    for host in fabric.hosts:
        assert frr.programmed(fabric.node(host)) == fabric.expected_fdb(host), host


def test_routes_report_type2_and_type3(fabric: ef.Fabric) -> None:
    routes = frr.routes(fabric.node("h1"))
    blue = [r for r in routes if r.vni == BLUE]
    assert {(r.type, r.mac, str(r.vtep), r.local) for r in blue} >= {
        (evpn.TYPE_MACIP, "02:0b:00:00:00:01", "10.255.0.11", True),
        (evpn.TYPE_MACIP, "02:0b:00:00:00:02", "10.255.0.12", False),
        (evpn.TYPE_MULTICAST, None, "10.255.0.11", True),
        (evpn.TYPE_MULTICAST, None, "10.255.0.12", False),
    }
    b2 = frr.macs(fabric.node("h1"))[str(BLUE)]["macs"]["02:0b:00:00:00:02"]
    assert (b2["type"], b2["remoteVtep"]) == ("remote", "10.255.0.12")


def test_same_segment_reaches_across_hosts_other_tenant_does_not(fabric: ef.Fabric) -> None:
    # positive controls first: each tenant reaches its own VM on another host, and the reply
    # comes from the VM of its own segment
    assert ef.answered_by(fabric.ns("b1"), "10.0.0.2") == "02:0b:00:00:00:02"
    assert ef.answered_by(fabric.ns("r1"), "10.0.0.3") == "02:0a:00:00:00:03"
    # 10.0.0.2 lives only in blue (on r1's own host), 10.0.0.3 only in red until b3 is added:
    # not even ARP gets an answer across segments
    assert not probe.arp(fabric.ns("r1"), "eth0", "10.0.0.1", "10.0.0.2")
    assert not probe.ping(fabric.ns("r1"), "10.0.0.2")
    assert not probe.arp(fabric.ns("b1"), "eth0", "10.0.0.1", "10.0.0.3")
    assert not probe.ping(fabric.ns("b1"), "10.0.0.3")


def test_a_broadcast_goes_once_to_each_vtep_of_its_segment_and_unicast_to_one(fabric: ef.Fabric) -> None:
    """On h1's underlay port: b1's ARP request for b2 is replicated to h2 only (h3 hosts red,
    not blue), the echo request goes to h2 alone; a second ARP request is the barrier."""
    b1 = fabric.ns("b1")
    ef.forget(b1, "10.0.0.2")  # so that the ping ARPs
    tap = Capture(fabric.ns(ef.UNDERLAY), "h1-eth0")
    try:
        assert probe.ping(b1, "10.0.0.2")
        assert not probe.arp(b1, "eth0", "10.0.0.1", BARRIER, timeout=0.1, tries=1)
        seen = read_until(tap, lambda p: p.arp_target == IPv4Address(BARRIER))
    finally:
        tap.close()
    h2 = fabric.vtep("h2")
    arps = [(p.vtep, p.vni) for p in seen if p.arp_target == IPv4Address("10.0.0.2")]
    assert arps == [(h2, BLUE)]
    echoes = [(p.vtep, p.vni) for p in seen if p.dst_mac == "02:0b:00:00:00:02" and p.ethertype == 0x0800]
    assert echoes == [(h2, BLUE)]
    assert {p.vtep for p in seen} == {h2}


def test_a_full_size_vm_packet_crosses_the_overlay_unfragmented(fabric: ef.Fabric) -> None:
    """VM MTU 1450 + 50 bytes of VXLAN/UDP/IPv4/Ethernet fill the 1500-byte underlay exactly."""

    def ping(size: int) -> subprocess.CompletedProcess[str]:
        argv = ["ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", str(size), "10.0.0.2"]
        with netns.inside(fabric.ns("b1")):
            return subprocess.run(argv, capture_output=True, text=True, check=False)

    assert ping(1422).returncode == 0  # 1422 + 8 ICMP + 20 IPv4 = 1450, DF set
    over = ping(1423)
    assert over.returncode != 0 and "mtu=1450" in over.stdout + over.stderr


def read_until(tap: Capture, last: Callable[[ef.Encapsulated], bool], timeout: float = 5.0) -> list:
    seen: list[ef.Encapsulated] = []
    deadline = time.monotonic() + timeout
    while not any(last(p) for p in seen):
        assert time.monotonic() < deadline, f"barrier not seen on the underlay: {seen}"
        select.select([tap], [], [], 0.1)
        seen += ef.vxlan_packets(f.data for f in tap.read())
    return seen


def test_a_vm_added_live_becomes_reachable(fabric: ef.Fabric, record_property) -> None:
    fabric.attach(B3)  # a new VNI on h3 as well: type-3 from h3, then type-2 for b3
    began = time.monotonic()
    ef.announce(fabric.ns("b3"), B3)
    ef.wait_fdb(fabric, fabric.hosts)
    record_property("evpn_live_vm_converge_s", round(time.monotonic() - began, 3))
    assert fabric.expected_fdb("h1")[BLUE] == {
        (ef.ZERO_MAC, fabric.vtep("h2")),
        (ef.ZERO_MAC, fabric.vtep("h3")),
        ("02:0b:00:00:00:02", fabric.vtep("h2")),
        ("02:0b:00:00:00:03", fabric.vtep("h3")),
    }
    # the overlapping 10.0.0.3 now answers in blue with b3's MAC; red's r3 still only in red
    assert ef.answered_by(fabric.ns("b1"), "10.0.0.3") == "02:0b:00:00:00:03"
    assert ef.answered_by(fabric.ns("r1"), "10.0.0.3") == "02:0a:00:00:00:03"


def test_a_vm_moved_live_is_reached_at_its_new_host(fabric: ef.Fabric, record_property) -> None:
    """b2 leaves h2 (h2's last blue VM: its blue segment goes, type-3 withdrawn) for h3.

    The withdrawal from h2 is awaited before b2 shows up on h3: when h3 learns the MAC locally
    first, FRR 8.4 does the EVPN move right (h3 advertises it with MAC-mobility sequence 1, the
    bridge forwards to the local port) but leaves h2's old `dst` entry on h3's vx device
    (docs/overlay.md), which the exact FDB check would report.
    """
    moved = fabric.move("b2", "h3", between=lambda: ef.wait_fdb(fabric, fabric.hosts))
    began = time.monotonic()
    ef.announce(fabric.ns("b2"), moved)
    ef.wait_fdb(fabric, fabric.hosts)
    record_property("evpn_moved_vm_converge_s", round(time.monotonic() - began, 3))
    assert fabric.expected_fdb("h1")[BLUE] == {
        (ef.ZERO_MAC, fabric.vtep("h3")),
        ("02:0b:00:00:00:02", fabric.vtep("h3")),
        ("02:0b:00:00:00:03", fabric.vtep("h3")),
    }
    assert BLUE not in fabric.expected_fdb("h2")
    assert ef.answered_by(fabric.ns("b1"), "10.0.0.2") == "02:0b:00:00:00:02"
    assert ef.answered_by(fabric.ns("r1"), "10.0.0.3") == "02:0a:00:00:00:03"  # red untouched


def test_stop_and_start_again(fabric: ef.Fabric) -> None:
    """Last (module order): stopping h3's FRR ends exactly its daemons and withdraws its routes
    from the others; started again, it brings them back (its VMs' MACs still in its bridge)."""
    node = fabric.node("h3")
    pids = set(frr.running(node).values())
    assert len(pids) == 2
    with pytest.raises(frr.FrrError, match="already runs here"):
        frr.start(node, {"zebra": "", "bgpd": ""})
    assert set(frr.running(node).values()) == pids  # the refused start changed nothing
    assert set(frr.stop(node)) == pids
    assert frr.running(node) == {}
    others = set(frr_pids(fabric))
    assert others and not others & pids  # the other nodes' daemons live on
    h3 = fabric.vtep("h3")
    deadline = time.monotonic() + 30
    # (after the move: h1 hosts blue only, h2 red only, h3 both)
    while any(
        dst == h3 for h, vni in (("h1", BLUE), ("h2", RED)) for _, dst, _ in ef.vxlan_fdb(fabric.ns(h), vni)
    ):
        assert time.monotonic() < deadline, "h3's routes still in h1's or h2's FDB after its FRR stopped"
        time.sleep(0.05)
    frr.start(node, evpn.vtep_config(evpn.Vtep("h3", h3, ef.ASN, fabric.rr_ip)))
    fabric.wait_sessions()
    ef.wait_fdb(fabric, fabric.hosts)


# Two machines, emulated: each machine's part is its own lab, built by its own process; the parts
# meet only through the routed underlay (VXLAN over UDP) and BGP (h3 peers with the reflector on
# the other machine).
#
#   machine m1: rr .254, h1 .11, h2 .12 on ul1 10.255.1.0/24 -- m1 .1 == 192.0.2.0/30 == .2 m2
#   machine m2: h3 .13 on ul2 10.255.2.0/24 ----------------------------------------------'
MACHINES = {
    "m1": ef.Machine("m1", "ul1", "10.255.1.1/24", "192.0.2.1/30"),
    "m2": ef.Machine("m2", "ul2", "10.255.2.1/24", "192.0.2.2/30"),
}
SPLIT_HOSTS = {"h1": "10.255.1.11/24", "h2": "10.255.1.12/24", "h3": "10.255.2.13/24"}
SPLIT_VMS = (
    ef.VM("b1", "h1", BLUE, "10.0.0.1/24", "02:0b:00:00:00:01"),
    ef.VM("b3", "h3", BLUE, "10.0.0.3/24", "02:0b:00:00:00:03"),
    ef.VM("r2", "h2", RED, "10.0.0.3/24", "02:0a:00:00:00:03"),  # b3's address, on b1's machine
    ef.VM("r3", "h3", RED, "10.0.0.1/24", "02:0a:00:00:00:01"),  # b1's address
)


def test_two_machines_meet_only_through_bgp_and_vxlan() -> None:
    placement = {"rr": "m1", "h1": "m1", "h2": "m1", "h3": "m2"}
    f = ef.Fabric(unique_name(), dict(SPLIT_HOSTS), "10.255.1.254/24", dict(MACHINES), placement)
    f.vms = {vm.name: vm for vm in SPLIT_VMS}
    with torn_down(f):
        f.converge(spawn=True)  # each part built by a process of its own, from the plain data
        # h3 reached the reflector through the listen range, across the routed link
        assert frr.sessions(f.node("rr"))["peers"][str(f.vtep("h3"))]["dynamicPeer"] is True
        # cross-machine, same segment: the other machine's VM answers, not the overlapping one
        # on this machine's other segment
        assert ef.answered_by(f.ns("b1"), "10.0.0.3") == "02:0b:00:00:00:03"
        assert ef.answered_by(f.ns("r2"), "10.0.0.1") == "02:0a:00:00:00:01"
        # one part's teardown removes only its own objects: m1's part and its FRR live on
        m1 = f.lab_of("h1")
        m1_pids = {pid for n in ("rr", "h1", "h2") for pid in frr.running(f.node(n)).values()}
        m2_pids = set(frr.running(f.node("h3")).values())
        ended = set(f.down(f.lab_of("h3")))
        assert m2_pids <= ended and not ended & m1_pids
        assert {pid for n in ("rr", "h1", "h2") for pid in frr.running(f.node(n)).values()} == m1_pids
        assert all(netns.exists(ns) for ns in f.states[m1].namespaces())
        assert not any(netns.exists(ns) for ns in f.states[f.lab_of("h3")].namespaces())
        assert not probe.ping(f.ns("b1"), "10.0.0.3")  # positive control above: b3 is gone
