"""Helpers of the firewall program tests: the vNIC under test, frames, a clean slate, and a
harness that runs one frame and reports everything it changed.

    VM (vNIC 02:00:00:00:0a:01, 10.0.10.1, 2001:db8:10::1)
      │  "out": port_from_vm (TC ingress of the vSwitch port), untagged frames from the VM
      │  "in":  port_to_vm (TC egress), frames to the VM carrying tag 10, popped by the program
    port ifindex 1 (the loopback: test-run only names it; nothing is attached)

The firewall's state lives in maps that outlast a run (connections, fragments, quota counts,
both policy generations), so every case starts from `reset`.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw, raw

from dataplane import abi, fwpolicy, lpm, syscalls, testrun
from dataplane.events import EventReader, now_ns
from dataplane.firewall import NS, Connection, Firewall, Settings
from dataplane.switch import PortVlans, SwitchDataplane
from tests.bpf import pktref
from tests.bpf.conftest import PORT, Counters, Delta

VLAN = 10
VM_MAC = "02:00:00:00:0a:01"
GW_MAC = "02:00:00:00:0a:fe"  # whatever sits on the other side of the vSwitch
VM4 = "10.0.10.1"
VM6 = "2001:db8:10::1"
VM_LL = "fe80::ff:fe00:a01"  # modified EUI-64 of VM_MAC: the link-local address Linux derives
ENDPOINT = 1
MAX_TEST_ENDPOINT = 64  # defaults and quota slots `reset` clears
OUT, IN = "out", "in"
PROGRAM = {OUT: "port_from_vm", IN: "port_to_vm"}
COUNTED = {OUT: abi.Direction.INGRESS, IN: abi.Direction.EGRESS}  # seen from the switch
FW_DIRECTION = {OUT: abi.FwDirection.OUT, IN: abi.FwDirection.IN}
DEFAULT_SETTINGS = Settings()


@dataclass(frozen=True)
class Vnic:
    """What `Firewall.set_vnic` is told about the port under test."""

    endpoint: int = ENDPOINT
    port_security: bool = True
    any_source: bool = False
    firewall: bool = True
    addresses: tuple[str, ...] = (VM4, VM6)
    dhcp_server: bool = False

    def apply(self, fw: Firewall) -> None:
        fw.set_vnic(
            PORT,
            VM_MAC,
            self.endpoint,
            self.port_security,
            self.any_source,
            self.firewall,
            [ip_address(a) for a in self.addresses],
            dhcp_server=self.dhcp_server,
        )


# -- frames ---------------------------------------------------------------------------------------
def l3(src: str, dst: str) -> Packet:
    return IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)


def tcp(src: str, dst: str, sport: int, dport: int, flags: str = "S") -> Packet:
    return l3(src, dst) / TCP(
        sport=sport, dport=dport, flags=flags, seq=1000, ack=2000 if "A" in flags else 0
    )


def udp(src: str, dst: str, sport: int, dport: int, size: int = 16) -> Packet:
    return l3(src, dst) / UDP(sport=sport, dport=dport) / Raw(b"u" * size)


def echo(src: str, dst: str, ident: int = 0x77, reply: bool = False) -> Packet:
    if ":" in src:
        msg = ICMPv6EchoReply(id=ident, seq=1) if reply else ICMPv6EchoRequest(id=ident, seq=1)
        return IPv6(src=src, dst=dst) / msg / Raw(b"ping")
    return IP(src=src, dst=dst) / ICMP(type=0 if reply else 8, id=ident, seq=1) / Raw(b"ping")


def icmp_error(router: str, dst: str, quoted: Packet, kind: int = 3, code: int = 3) -> Packet:
    """An ICMP (or ICMPv6) error from `router` to `dst` quoting the IP packet `quoted`."""
    if ":" in router:
        return IPv6(src=router, dst=dst, nh=58) / Raw(bytes([kind, code, 0, 0, 0, 0, 0, 0]) + raw(quoted))
    return IP(src=router, dst=dst) / ICMP(type=kind, code=code) / Raw(raw(quoted)[:48])


def with_ext_headers(pkt: Packet, *kinds: str) -> Packet:
    """`pkt` (IPv6) with extension headers ("hbh", "rt", "dst") between IPv6 and its payload."""
    layers = {"hbh": IPv6ExtHdrHopByHop, "rt": IPv6ExtHdrRouting, "dst": IPv6ExtHdrDestOpt}
    head = IPv6(src=pkt[IPv6].src, dst=pkt[IPv6].dst)
    for kind in kinds:
        head = head / layers[kind]()
    return head / pkt[IPv6].payload


def fragment(
    src: str, dst: str, proto: int, payload: bytes, lo: int, hi: int, more: bool, ident: int = 0x4242
) -> Packet:
    """The fragment of `payload` (an L4 header and its data) covering bytes [lo, hi)."""
    data = Raw(payload[lo:hi])
    if ":" in src:
        frag = IPv6ExtHdrFragment(nh=proto, offset=lo // 8, m=int(more), id=ident)
        return IPv6(src=src, dst=dst) / frag / data
    return IP(src=src, dst=dst, proto=proto, id=ident, frag=lo // 8, flags="MF" if more else 0) / data


def udp_bytes(sport: int, dport: int, size: int = 64) -> bytes:
    """A UDP header and `size` bytes of data, as the payload to cut into fragments."""
    return raw(UDP(sport=sport, dport=dport, len=8 + size, chksum=0) / Raw(b"f" * size))


def tcp_bytes(sport: int, dport: int, size: int = 64) -> bytes:
    return raw(TCP(sport=sport, dport=dport, flags="S", chksum=0) / Raw(b"t" * size))


def framed(direction: str, pkt: Packet) -> bytes:
    """The frame the program sees: Ethernet added unless `pkt` has its own; tag 10 going in."""
    if not isinstance(pkt, Ether):
        src, dst = (VM_MAC, GW_MAC) if direction == OUT else (GW_MAC, VM_MAC)
        pkt = Ether(src=src, dst=dst) / pkt
    return raw(pkt)


def tagged(frame: bytes, vid: int = VLAN) -> bytes:
    return frame[:12] + b"\x81\x00" + vid.to_bytes(2, "big") + frame[12:]


@dataclass(frozen=True)
class Flow:
    """What an event should say about a frame: the outer L3/L4 header, read by scapy."""

    family: int
    proto: int
    src: str
    dst: str
    sport: int
    dport: int
    icmp_type: int = 0

    @classmethod
    def of(cls, frame: bytes) -> Flow:
        """As the reference classifier (pktref) reads the frame's outer headers."""
        p = pktref.parse(frame)
        return cls(p.family, p.proto, p.src, p.dst, p.sport, p.dport, p.icmp_type or 0)


def address(family: int, raw16: Iterable[int]) -> str:
    data = bytes(raw16)
    return str(IPv4Address(data[:4]) if family == 4 else IPv6Address(data))


# -- state ----------------------------------------------------------------------------------------
def _clear_hash(fd: int, key_type: type, value_type: type) -> None:
    for key, _ in list(syscalls.map_items(fd, key_type, value_type)):
        syscalls.map_delete(fd, key)


def reset(dp: SwitchDataplane) -> None:
    """Forget every connection, fragment, quota count, policy row, ipcache entry, default and vNIC
    address, and the vNIC of the port under test. The generation number only grows."""
    maps = dp.maps
    _clear_hash(maps["frags"], abi.FragKey, abi.Frag)
    _clear_hash(maps["policy"], lpm.PolicyKey, lpm.PolicyValue)
    _clear_hash(maps["ipcache"], lpm.IpcacheKey, lpm.IpcacheValue)
    _clear_hash(maps["vnic_addrs"], abi.AddrKey, ctypes.c_uint8)
    for half in (0, abi.MAX_ENDPOINTS * 2):  # defaults are double-buffered by generation bit
        for slot in range(2 * MAX_TEST_ENDPOINT):
            syscalls.map_update(maps["defaults"], ctypes.c_uint32(half + slot), ctypes.c_uint8(0))
    clear_connections(dp)
    syscalls.map_update(maps["vnics"], ctypes.c_uint32(PORT), abi.Vnic())


def clear_connections(dp: SwitchDataplane) -> None:
    """Empty the connection table, each entry through ct_reap so that its quota shares (peer
    buckets included) are given back, then zero the shares of the test endpoints."""
    for key, _ in list(syscalls.map_items(dp.maps["conntrack"], abi.CtKey, abi.CtEntry)):
        dp.firewall.forget(key)
    for share in range(2 * MAX_TEST_ENDPOINT):
        syscalls.map_update(dp.maps["ct_count"], ctypes.c_uint32(share), ctypes.c_uint32(0))


def forget(dp: SwitchDataplane, endpoint: int) -> None:
    """Empty the connection table, one endpoint's quota counts with it (cheaper than
    clear_connections when only that endpoint made connections)."""
    for key, _ in list(syscalls.map_items(dp.maps["conntrack"], abi.CtKey, abi.CtEntry)):
        dp.firewall.forget(key)
    for origin in abi.FwDirection:
        syscalls.map_update(dp.maps["ct_count"], ctypes.c_uint32(endpoint * 2 + origin), ctypes.c_uint32(0))


def ct_count(dp: SwitchDataplane, endpoint: int = ENDPOINT, origin: str = OUT) -> int:
    """The entries `endpoint` holds against its quota of flows opened `origin` (out: by the VM)."""
    count = ctypes.c_uint32()
    syscalls.map_lookup(dp.maps["ct_count"], ctypes.c_uint32(endpoint * 2 + FW_DIRECTION[origin]), count)
    return count.value


def age(dp: SwitchDataplane, seconds: float) -> int:
    """Move every connection's last packet `seconds` into the past (the dataplane's clock is
    CLOCK_MONOTONIC_COARSE: events.now_ns()). Returns how many entries it aged."""
    fd, aged = dp.maps["conntrack"], 0
    for key, entry in list(syscalls.map_items(fd, abi.CtKey, abi.CtEntry)):
        entry.last_seen = now_ns() - int(seconds * NS)
        syscalls.map_update(fd, key, entry)
        dp.firewall.rewritten(key)  # as the tick moving on would: no flow cache slot serves it
        aged += 1
    return aged


# -- the harness ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sent:
    """One run: the frame as sent, the program's result and everything the run changed."""

    frame: bytes  # untagged, as the VM sends or gets it
    wire: bytes  # as the program got it
    result: testrun.Result
    counted: Delta
    events: list[abi.FwEvent]
    hits: dict[int, int]  # rule -> packets added


class Harness:
    """Runs frames through the VM-port programs of a loaded dataplane and reports their effects."""

    def __init__(self, dp: SwitchDataplane, reader: EventReader) -> None:
        self.dp, self.fw, self.reader = dp, dp.firewall, reader
        self.counters = Counters(dp)
        self.rules: list[int] = [0]
        self.vlan: int | None = VLAN
        self.installed: fwpolicy.Compiled | None = None

    def start(
        self,
        policy: fwpolicy.Policy,
        vnic: Vnic = Vnic(),
        settings: Settings = DEFAULT_SETTINGS,
        vlan: int | None = VLAN,
    ) -> None:
        """A clean slate: the port an access port of `vlan` (None: a plain port, untagged only,
        as a VM NIC without VLAN gets), `vnic` on it, `policy` installed."""
        reset(self.dp)
        self.vlan = vlan
        self.dp.configure(
            PORT, PortVlans(access=vlan, guard=True) if vlan else PortVlans(untagged=True, guard=True)
        )
        self.fw.set_settings(settings)
        self.install(policy, previous=False)
        vnic.apply(self.fw)
        self.drain()

    def install(self, policy: fwpolicy.Policy, previous: bool = True) -> int:
        """Install `policy` as the next generation (telling the firewall what it replaces)."""
        compiled = fwpolicy.compile(policy)
        generation = self.fw.install(compiled, previous=self.installed if previous else None)
        self.installed = compiled
        self.rules = sorted({0, *(r.id for r in policy.rules)})
        return generation

    def drain(self) -> list[abi.FwEvent]:
        return [ev for _, ev in self.reader.poll(0)]

    def send(self, direction: str, pkt: Packet | bytes) -> Sent:
        frame = pkt if isinstance(pkt, bytes) else framed(direction, pkt)
        wire = tagged(frame, self.vlan) if direction == IN and self.vlan else frame
        self.drain()
        before, hits = self.counters.snapshot(), self.fw.rule_hits(self.rules)
        result = testrun.run(self.dp.programs[PROGRAM[direction]], wire, ifindex=PORT)
        after = self.fw.rule_hits(self.rules)
        added = {r: after[r][0] - hits.get(r, (0, 0))[0] for r in after}
        return Sent(
            frame,
            wire,
            result,
            self.counters.delta(before),
            self.drain(),
            {r: n for r, n in added.items() if n},
        )

    def connections(self) -> list[Connection]:
        return list(self.fw.connections())


def check_event(
    ev: abi.FwEvent,
    direction: str,
    frame: bytes,
    verdict: abi.Verdict,
    reason: abi.Reason,
    rule: int,
    endpoint: int = ENDPOINT,
) -> None:
    """The record must describe this frame, this decision and this vNIC, field by field."""
    unread = reason in (abi.Reason.SPOOF_MAC, abi.Reason.SPOOF_ARP)  # refused before any IP header
    flow = Flow(0, 0, "::", "::", 0, 0) if unread else Flow.of(frame)
    got = {
        "verdict": ev.verdict,
        "reason": ev.reason,
        "rule": ev.rule,
        "direction": ev.direction,
        "ifindex": ev.ifindex,
        "endpoint": ev.endpoint,
        "family": ev.family,
        "proto": ev.proto,
        "src": address(ev.family, ev.saddr),
        "dst": address(ev.family, ev.daddr),
        "sport": ev.sport,
        "dport": ev.dport,
        "icmp_type": ev.icmp_type,
    }
    want = {
        "verdict": verdict,
        "reason": reason,
        "rule": rule,
        "direction": FW_DIRECTION[direction],
        "ifindex": PORT,
        "endpoint": endpoint,
        "family": flow.family,
        "proto": flow.proto,
        "src": str(ip_address(flow.src)),
        "dst": str(ip_address(flow.dst)),
        "sport": flow.sport,
        "dport": flow.dport,
        "icmp_type": flow.icmp_type,
    }
    if reason is abi.Reason.FRAG_TINY:  # too short for its ports: they are not read
        want.update(sport=0, dport=0, icmp_type=0)
    if reason is abi.Reason.IPV6_CHAIN:  # refused before its upper layer was found
        want.update(proto=0, sport=0, dport=0, icmp_type=0)
    assert got == want
    assert abs(now_ns() - ev.time_ns) < 10 * NS, "time_ns is not CLOCK_MONOTONIC_COARSE now"


@contextlib.contextmanager
def harness_on(dp: SwitchDataplane) -> Iterator[Harness]:
    """A Harness reading `dp`'s events; the dataplane is `reset` after, for the modules that follow."""
    with EventReader() as reader:
        reader.add(dp.maps["fw_events"], "test")
        try:
            yield Harness(dp, reader)
        finally:
            reset(dp)
