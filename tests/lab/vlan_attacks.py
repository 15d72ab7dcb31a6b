"""Real frames for the VLAN security tests: attack frames, raw-socket injection and capture.

Every socket is opened while the thread sits in a lab node's namespace (kernel/netns.inside)
and then used from the test thread: no helper process, nothing outlives the `with` block.
On a veth, the receiving kernel moves a frame's outer 802.1Q/802.1ad tag into skb metadata
before any tap sees it, so a capture reads that tag back from PACKET_AUXDATA and any further
tag from the bytes.

Attack and flood frames carry a marker (random per run) in their payload: a capture that
finds the marker has caught a frame that got through, whatever else the node sends meanwhile.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import secrets
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from scapy.contrib.cdp import CDPMsgDeviceID, CDPMsgPortID, CDPv2_HDR
from scapy.contrib.dtp import DTP, DTPDomain, DTPNeighbor, DTPStatus, DTPType
from scapy.contrib.lldp import LLDPDUChassisID, LLDPDUEndOfLLDPDU, LLDPDUPortID, LLDPDUTimeToLive
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, LLC, SNAP, STP, Dot1AD, Dot1Q, Dot3, Ether
from scapy.packet import Packet, Raw, raw

from netns_lab.kernel import netns
from netns_lab.kernel.netlink import Netlink
from netns_lab.observe.capture import (
    AUXDATA,
    PACKET_AUXDATA,
    PACKET_OUTGOING,
    SOL_PACKET,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    packet_socket,
)
from tests.lab.conftest import nlab

ANCILLARY = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(AUXDATA.size)  # receive time, then auxdata
RCVBUF = 16 << 20  # room for a MAC flood of a few thousand frames read only afterwards

TPID_8021Q, TPID_8021AD = 0x8100, 0x88A8
BROADCAST = "ff:ff:ff:ff:ff:ff"
STP_MAC = "01:80:c2:00:00:00"
LLDP_MAC = "01:80:c2:00:00:0e"
CISCO_MAC = "01:00:0c:cc:cc:cc"  # CDP, DTP, VTP


# -- capture -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    """One captured frame: `tag` is the outer (tpid, vid) the kernel held as metadata, if any."""

    outgoing: bool
    tag: tuple[int, int] | None
    data: bytes

    @property
    def dst(self) -> str:
        return self.data[0:6].hex(":")

    @property
    def src(self) -> str:
        return self.data[6:12].hex(":")

    def tags(self) -> list[tuple[int, int]]:
        """Every VLAN tag, outermost first: the metadata one, then those still in the bytes."""
        found = [self.tag] if self.tag else []
        offset = 12
        while len(self.data) >= offset + 4:
            tpid, tci = struct.unpack_from("!HH", self.data, offset)
            if tpid not in (TPID_8021Q, TPID_8021AD):
                break
            found.append((tpid, tci & 0x0FFF))
            offset += 4
        return found

    def carries(self, marker: bytes) -> bool:
        return marker in self.data

    def __str__(self) -> str:
        tags = "".join(f" {'ad' if t == TPID_8021AD else 'vlan'} {v}" for t, v in self.tags())
        return f"{'out' if self.outgoing else 'in'} {self.src} > {self.dst}{tags or ' untagged'}"


class Tap:
    """A promiscuous raw socket on one interface of one namespace; frames wait in it until read."""

    def __init__(self, ns: str, iface: str) -> None:
        self.ns, self.iface = ns, iface
        self.sock = packet_socket(ns, iface, RCVBUF, outgoing=True)

    def frames(self) -> list[Frame]:
        """Everything captured since the last call."""
        found = []
        while True:
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(65535, ANCILLARY)
            except BlockingIOError:
                return found
            found.append(Frame(addr[2] == PACKET_OUTGOING, _outer_tag(ancdata), data))

    def until(self, barrier: Callable[[Frame], bool], timeout: float = 10.0) -> list[Frame]:
        """Everything captured up to and including the first frame `barrier` accepts.

        The barrier is a legitimate frame the test sent after the ones it asserts on, along a
        path this tap sees: once it is here, anything sent before it has arrived too. Waits
        for it instead of a fixed sleep; no barrier within `timeout` is a failure.
        """
        found: list[Frame] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                break
            batch = self.frames()
            found += batch
            if any(barrier(f) for f in batch):
                return found
        raise AssertionError(f"{self.ns} {self.iface}: the barrier frame did not arrive in {timeout} s")

    def close(self) -> None:
        self.sock.close()


def _outer_tag(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
    for level, kind, blob in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(blob) >= AUXDATA.size:
            status, _len, _snap, _mac, _net, tci, tpid = AUXDATA.unpack_from(blob)
            if status & TP_STATUS_VLAN_VALID:
                return (tpid if status & TP_STATUS_VLAN_TPID_VALID else TPID_8021Q, tci & 0x0FFF)
    return None


@contextlib.contextmanager
def taps(where: Iterable[tuple[str, str]]) -> Iterator[dict[tuple[str, str], Tap]]:
    """Taps on (namespace, interface) pairs, all closed at the end of the block."""
    with contextlib.ExitStack() as stack:
        opened = {}
        for ns, iface in where:
            opened[ns, iface] = tap = Tap(ns, iface)
            stack.callback(tap.close)
        yield opened


@dataclass(frozen=True)
class Barrier:
    """An ARP request `mac`/`ip` broadcasts in its own VLAN after the frames under test, awaited,
    received, at a tap of another node of that VLAN (see `Tap.until`). ARP passes port security
    and the firewall of a VM that sends from its own addresses, and nobody owns the address asked
    for: a barrier leaves no drop and no reply. Its arrival is also the tap's positive control:
    that capture, on that path, does see frames."""

    ns: str
    iface: str
    mac: str
    ip: str  # the sender's own address, with or without its prefix length

    def frame(self, token: bytes) -> bytes:
        own = ipaddress.ip_interface(self.ip if "/" in self.ip else f"{self.ip}/24")
        nobody = str(own.network[-6])  # .250 of a /24: no node of the labs has it
        ask = Ether(dst=BROADCAST, src=self.mac) / ARP(hwsrc=self.mac, psrc=str(own.ip), pdst=nobody)
        return raw(ask / Raw(token))  # the token rides in the trailer, after the ARP payload


def kernel_mac(ns: str, iface: str) -> str:
    """An interface's MAC as the kernel has it (cheaper than a status document)."""
    with Netlink(ns) as nl:
        mac = next(link.mac for link in nl.links() if link.name == iface)
    assert mac, f"{ns} {iface} has no MAC"
    return mac


def own_barrier(ns: str, iface: str, ip: str) -> Barrier:
    """A barrier from a NIC's own MAC and address."""
    return Barrier(ns, iface, kernel_mac(ns, iface), ip)


def barriers(
    taps: dict[tuple[str, str], Tap], senders: dict[tuple[str, str], Barrier]
) -> dict[tuple[str, str], list[Frame]]:
    """Each tap's sender sends its barrier, then each tap is read up to it: what each received."""
    tokens = {}
    for where, sender in senders.items():
        tokens[where] = token = b"nlab-barrier-" + secrets.token_hex(8).encode()
        inject(sender.ns, sender.iface, [sender.frame(token)])
    return {
        where: taps[where].until(lambda f, token=token: not f.outgoing and f.carries(token))
        for where, token in tokens.items()
    }


# -- injection -----------------------------------------------------------------------------------
def inject(ns: str, iface: str, frames: Iterable[bytes], gap: float = 0.0) -> int:
    """Send raw frames out of `iface` in `ns`, as a VM's own kernel would; returns how many."""
    with netns.inside(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sent = 0
    with sock:
        sock.bind((iface, 0))
        for frame in frames:
            sock.send(frame)
            sent += 1
            if gap:
                time.sleep(gap)
    return sent


# -- attack frames -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Attack:
    name: str
    reason: str  # the drop-reason label the attacker's port must count (dataplane/abi/reasons.py)
    frames: tuple[bytes, ...]


@dataclass(frozen=True)
class Target:
    """Where hopping frames are aimed: a MAC (a victim's, or broadcast) and the victim's address."""

    mac: str
    ip: str


def _payload(marker: bytes, src_ip: str, dst_ip: str) -> Packet:
    return IP(src=src_ip, dst=dst_ip) / UDP(sport=40000, dport=9) / Raw(marker)


def hopping_attacks(
    attacker_mac: str,
    attacker_ip: str,
    own_vid: int,
    victim_vid: int,
    targets: list[Target],
    marker: bytes,
    per_target: int,
) -> list[Attack]:
    """VLAN hopping from an access port: double tag, a foreign tag, an 802.1ad S-tag over a C-tag."""
    shapes: list[tuple[str, str, list[Packet]]] = [
        ("double-tag", "qinq", [Dot1Q(vlan=own_vid), Dot1Q(vlan=victim_vid)]),
        ("foreign-tag", "tagged-on-access", [Dot1Q(vlan=victim_vid)]),
        ("8021ad-qinq", "qinq", [Dot1AD(vlan=own_vid), Dot1Q(vlan=victim_vid)]),
    ]
    attacks = []
    for name, reason, tags in shapes:
        frames = []
        for t in targets:
            pkt: Packet = Ether(dst=t.mac, src=attacker_mac)
            for tag in tags:
                pkt = pkt / tag.copy()
            frames += [raw(pkt / _payload(marker, attacker_ip, t.ip))] * per_target
        attacks.append(Attack(name, reason, tuple(frames)))
    return attacks


def control_attacks(attacker_mac: str, marker: bytes, count: int) -> list[Attack]:
    """Switch-control protocols a VM must never get to speak to the fabric: DTP, CDP, STP, LLDP."""

    def snap(code: int) -> Packet:
        return (
            Dot3(dst=CISCO_MAC, src=attacker_mac)
            / LLC(dsap=0xAA, ssap=0xAA, ctrl=3)
            / SNAP(OUI=0x0C, code=code)
        )

    frames = {
        # "desirable" trunk negotiation, what `negotiate_trunk` of scapy.contrib.dtp sends
        "dtp": snap(0x2004)
        / DTP(tlvlist=[DTPDomain(), DTPStatus(), DTPType(), DTPNeighbor(neighbor=attacker_mac)]),
        "cdp": snap(0x2000)
        / CDPv2_HDR(msg=[CDPMsgDeviceID(val=b"rogue-switch"), CDPMsgPortID(iface=b"eth0")]),
        # a configuration BPDU claiming root with the best priority: a root-bridge takeover
        "stp-bpdu": Dot3(dst=STP_MAC, src=attacker_mac)
        / LLC()
        / STP(rootid=0, rootmac=attacker_mac, bridgeid=0, bridgemac=attacker_mac),
        "lldp": Ether(dst=LLDP_MAC, src=attacker_mac)
        / LLDPDUChassisID(subtype=4, id=attacker_mac)
        / LLDPDUPortID(subtype=5, id=b"eth0")
        / LLDPDUTimeToLive(ttl=120)
        / LLDPDUEndOfLLDPDU(),
    }
    return [Attack(name, "control-frame", (raw(pkt / Raw(marker)),) * count) for name, pkt in frames.items()]


def mac_flood(count: int, marker: bytes, seed: int) -> list[bytes]:
    """Frames from `count` random locally administered source MACs to random unknown unicast MACs."""
    rng = random.Random(seed)

    def mac() -> bytes:
        first = (rng.randrange(256) & 0xFC) | 0x02  # unicast, locally administered
        return bytes([first, *rng.randbytes(5)])

    return [mac() + mac() + b"\x88\xb5" + marker + bytes(32) for _ in range(count)]


# -- status document -----------------------------------------------------------------------------
def _ports(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(node, port) for every switch port that reports counters, hosts and physical switches."""
    for node in (*doc["hosts"], *doc["switches"]):
        for port in node.get("ports", []):
            if "counters" in port:
                yield node["name"], port


def port_drops(doc: dict[str, Any], node: str, port: str, direction: str = "ingress") -> Counter[str]:
    for name, p in _ports(doc):
        if name == node and p["name"] == port:
            return Counter({r: c["packets"] for r, c in p["counters"][direction]["drop"].items()})
    raise AssertionError(f"status has no counters for port {port} of {node}")


def total_drops(doc: dict[str, Any], direction: str = "ingress") -> Counter[str]:
    total: Counter[str] = Counter()
    for _, p in _ports(doc):
        total.update({r: c["packets"] for r, c in p["counters"][direction]["drop"].items()})
    return total


def delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {r: n for r in sorted(after.keys() | before.keys()) if (n := after[r] - before[r])}


@dataclass(frozen=True)
class Nic:
    node: str
    nic: str
    mac: str
    vlan: int | None
    ip: str | None


def nics(doc: dict[str, Any]) -> dict[str, Nic]:
    """Every VM NIC and VMkernel NIC of the lab by MAC."""
    found = [
        Nic(vm["name"], n["name"], n["mac"], n["vlan"], n["ip"]) for vm in doc["vms"] for n in vm["nics"]
    ]
    found += [
        Nic(h["name"], k["name"], k["mac"], k["vlan"], k["ip"]) for h in doc["hosts"] for k in h["vmknics"]
    ]
    return {n.mac: n for n in found}


def nic(doc: dict[str, Any], node: str, name: str = "eth0") -> Nic:
    return next(n for n in nics(doc).values() if n.node == node and n.nic == name)


# -- temporary addresses -------------------------------------------------------------------------
@contextlib.contextmanager
def temporary_addresses(lab: str, addresses: dict[tuple[str, str], str]) -> Iterator[None]:
    """Extra addresses ((node, interface) -> CIDR) for the block; removed, neighbours flushed, after."""
    added: list[tuple[str, str, str]] = []
    try:
        for (node, iface), cidr in addresses.items():
            nlab("exec", "--lab", lab, node, "--", "ip", "addr", "add", cidr, "dev", iface, check=True)
            added.append((node, iface, cidr))
        yield
    finally:
        for node, iface, cidr in reversed(added):
            nlab("exec", "--lab", lab, node, "--", "ip", "addr", "del", cidr, "dev", iface)
            subnet = str(ipaddress.ip_interface(cidr).network)
            nlab("exec", "--lab", lab, node, "--", "ip", "neigh", "flush", "to", subnet, "dev", iface)
