"""The underlay guard on real namespaces: a rogue underlay address injects VXLAN into a VTEP's
segment, which the kernel's vxlan device accepts, until overlay_from_underlay sits on the VTEP's
pNIC; a registered VTEP's own traffic keeps arriving.

    zzovXXXXXX-hv1  VTEP 10.255.7.11 ─ eth0 ═╗
    zzovXXXXXX-rog  rogue 10.255.7.66 ─ eth0 ═╬═ p1 p2 p3: bridge ul (zzovXXXXXX-ul)
    zzovXXXXXX-hv2  VTEP 10.255.7.12 ─ eth0 ═╝   <- TC ingress: overlay_from_underlay
          hv1, hv2: vx-10010 (id 10010, local VTEP, nolearning) in bridge sg-10010 (hv2's tapped);
          hv1 replicates broadcasts to hv2 (its all-zeros FDB entry)

The barrier is an inner broadcast frame sent into hv1's vx-10010, encapsulated by hv1's kernel;
its arrival in hv2's bridge sg-10010 (decapsulated by vx-10010, flooded up to the bridge's own
port, where the tap is) means the attack frames sent before it have been decided. Phase one, no
guard: the rogue's frames arrive (the attack is real: the kernel's vxlan socket listens on every
address, the subnet broadcast included, and the stack strips priority tags, stacked ones too).
Phase two, the guard attached: none arrives, each is counted with its reason, the barrier still
arrives and is counted on its VNI.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw, raw

from dataplane.abi import Reason
from netns_lab.kernel import fdb, netlink, netns
from netns_lab.kernel.netlink import Netlink
from tests.lab.vlan_attacks import Tap, inject, kernel_mac

if os.geteuid() == 0:
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")
    from dataplane.switch import SwitchDataplane
else:
    pytest.skip("needs root: namespaces and eBPF", allow_module_level=True)

VNI, OTHER_VNI = 10010, 10020
HV1, HV2, ROGUE = "10.255.7.11", "10.255.7.12", "10.255.7.66"
SUBNET_BROADCAST = "10.255.7.255"
PREFIX = 24
SEGMENT, VXLAN = f"sg-{VNI}", f"vx-{VNI}"


@dataclass(frozen=True)
class Underlay:
    hv1: str
    hv2: str
    rogue: str
    hv2_mac: str
    hv2_pnic: int  # ifindex of hv2's eth0


@pytest.fixture(scope="module")
def underlay() -> Iterator[Underlay]:
    root_links = socket.if_nameindex()
    prefix = "zzov" + secrets.token_hex(3)
    names = {role: f"{prefix}-{role}" for role in ("ul", "hv1", "hv2", "rog")}
    made: list[str] = []
    try:
        for name in names.values():
            netns.create(name)  # EEXIST on a clash: never adopt a namespace we did not make
            made.append(name)
            # quiet kernels: their own IPv6 (DAD, RS, MLD) and IGMP chatter would cross the segment
            # as accepted VXLAN and spoil the barrier's exact count
            for key in ("all", "default"):
                netlink.sysctl(name, f"net.ipv6.conf.{key}.disable_ipv6", "1")
            netlink.sysctl(name, "net.ipv4.igmp_link_local_mcast_reports", "0")
        with Netlink(names["ul"]) as ul:
            ul.bridge("ul")
            for port, role in (("p1", "hv1"), ("p2", "hv2"), ("p3", "rog")):
                ul.veth(port, "eth0", names[role], master="ul", up=True)
        for role, address in (("hv1", HV1), ("hv2", HV2), ("rog", ROGUE)):
            with Netlink(names[role]) as nl:
                nl.address("eth0", f"{address}/{PREFIX}")
                nl.up("eth0")
                nl.up("lo")
        for role, vtep in (("hv1", HV1), ("hv2", HV2)):
            with Netlink(names[role]) as nl, fdb.Tables(names[role]) as tables:
                nl.bridge(SEGMENT)
                tables.vxlan(VXLAN, VNI, vtep, SEGMENT)
                if role == "hv1":
                    tables.append_flood(VXLAN, HV2)  # the barrier (a broadcast) goes to hv2
                else:
                    pnic = nl.index("eth0")
        yield Underlay(names["hv1"], names["hv2"], names["rog"], kernel_mac(names["hv2"], "eth0"), pnic)
    finally:
        for name in made:
            netns.delete(name)
    assert socket.if_nameindex() == root_links, "the root namespace's interfaces changed"


def inner(marker: bytes) -> bytes:
    """The frame carried in the segment: a broadcast, so the bridge takes it in whoever it is for."""
    return raw(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:07:01", type=0x88B5) / Raw(marker))


def vxlan(src: str, dst: str, vni: int, marker: bytes, src_mac: str, dst_mac: str) -> Packet:
    header = struct.pack("!II", 0x08000000, vni << 8)
    return (
        Ether(dst=dst_mac, src=src_mac)
        / IP(src=src, dst=dst)
        / UDP(sport=49152, dport=4789)
        / Raw(header + inner(marker))
    )


@dataclass(frozen=True)
class Attack:
    name: str
    sender: str  # "rog" or "hv1": whose namespace and eth0 it leaves from
    frame: bytes
    reason: Reason


def attacks(u: Underlay, rogue_mac: str, hv1_mac: str, *, guarded: bool) -> list[Attack]:
    """Frames nobody registered may get into the segment; each carries its own marker."""

    def marker(name: str) -> bytes:
        return f"nlab-attack-{name}-".encode() + secrets.token_hex(6).encode()

    to_hv2 = {"src_mac": rogue_mac, "dst_mac": u.hv2_mac}
    found = [
        Attack(
            "rogue-to-vtep",
            "rog",
            raw(vxlan(ROGUE, HV2, VNI, marker("unicast"), **to_hv2)),
            Reason.VXLAN_UNKNOWN_VTEP,
        ),
        Attack(
            "rogue-to-subnet-broadcast",
            "rog",
            raw(vxlan(ROGUE, SUBNET_BROADCAST, VNI, marker("bcast"), rogue_mac, "ff:ff:ff:ff:ff:ff")),
            Reason.VXLAN_UNKNOWN_VTEP,
        ),
        Attack(
            "rogue-priority-tagged",
            "rog",
            raw(_priority_tagged(vxlan(ROGUE, HV2, VNI, marker("prio"), **to_hv2))),
            Reason.TAGGED_ON_ACCESS,
        ),
        Attack(
            "rogue-two-priority-tags",
            "rog",
            raw(_priority_tagged(vxlan(ROGUE, HV2, VNI, marker("prio2"), **to_hv2), tags=2)),
            Reason.QINQ,
        ),
    ]
    if guarded:  # the kernel drops these itself, silently; the guard counts them
        found.append(
            Attack(
                "vtep-unknown-vni",
                "hv1",
                raw(vxlan(HV1, HV2, OTHER_VNI, marker("vni"), hv1_mac, u.hv2_mac)),
                Reason.VXLAN_UNKNOWN_VNI,
            )
        )
    return found


def _priority_tagged(frame: Packet, tags: int = 1) -> Packet:
    """`frame` behind `tags` 802.1Q tags of VLAN 0 (priority tags: the stack strips them all)."""
    data = raw(frame)
    return (
        Ether(data[:12] + b"\x81\x00")
        / Raw(raw(Dot1Q(vlan=0, type=0x8100)) * (tags - 1))
        / Dot1Q(vlan=0, type=0x0800)
        / Raw(data[14:])
    )


def send_round(u: Underlay, tap: Tap, round_attacks: list[Attack]) -> list[bytes]:
    """Send every attack, then the barrier through hv1's vxlan device; what hv2's segment got."""
    for attack in round_attacks:
        inject(u.rogue if attack.sender == "rog" else u.hv1, "eth0", [attack.frame])
    token = b"nlab-barrier-" + secrets.token_hex(8).encode()
    inject(u.hv1, VXLAN, [inner(token)])
    frames = tap.until(lambda f: not f.outgoing and f.carries(token))
    return [f.data for f in frames if not f.outgoing]


def delivered(frames: list[bytes], attack: Attack) -> bool:
    marker = attack.frame[attack.frame.index(b"nlab-attack-") :]
    return any(marker in f for f in frames)


def test_rogue_vxlan_reaches_the_segment_until_the_guard_stops_it(
    underlay: Underlay, dataplane: SwitchDataplane
) -> None:
    u = underlay
    rogue_mac, hv1_mac = kernel_mac(u.rogue, "eth0"), kernel_mac(u.hv1, "eth0")
    tap = Tap(u.hv2, SEGMENT)  # what the segment's bridge took in (a broadcast: passed up to it too)
    try:
        # without the guard: the kernel's vxlan device takes the rogue's frames into the segment
        unguarded = attacks(u, rogue_mac, hv1_mac, guarded=False)
        got = send_round(u, tap, unguarded)
        assert [a.name for a in unguarded if not delivered(got, a)] == [], "the attack must be real"

        guard = dataplane.overlay
        guard.set_local([f"{HV2}/{PREFIX}"])
        guard.add_peer(HV1)
        guard.add_vni(VNI)
        with Netlink(u.hv2) as nl:
            guard.attach_underlay(nl.tc_socket(), u.hv2_pnic)
        before = guard.counters(u.hv2_pnic)

        guarded = attacks(u, rogue_mac, hv1_mac, guarded=True)
        got = send_round(u, tap, guarded)  # the barrier is the positive control: it got through
        assert [a.name for a in guarded if delivered(got, a)] == []

        after = guard.counters(u.hv2_pnic)
        drops = {
            reason: after.reasons.get(reason, 0) - before.reasons.get(reason, 0)
            for reason in after.reasons
            if reason is not Reason.PASS
        }
        expected: dict[Reason, int] = {}
        for attack in guarded:
            expected[attack.reason] = expected.get(attack.reason, 0) + 1
        assert {r: n for r, n in drops.items() if n} == expected
        assert after.vnis[VNI].packets - before.vnis[VNI].packets == 1  # the barrier
    finally:
        tap.close()
