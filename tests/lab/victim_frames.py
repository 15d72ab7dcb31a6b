"""Frames and kernel state for tests/lab/test_victim_state.py: what an attacker VM sends to change
another VM's kernel (routers, redirects, neighbours, DHCP offers), the same frames from a
legitimate sender, and the victim's routes, addresses and neighbours as the kernel reports them.

Every frame is built for one sender (`Nic`): its MAC, its IPv4 address, its link-local address.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dhcp6 import DHCP6_Advertise, DHCP6_Reply, DHCP6OptClientId, DHCP6OptServerId
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw, raw

from netns_lab.kernel import netns
from tests.lab import fw_attacks as fa
from tests.lab.vlan_attacks import BROADCAST, Nic

ALL_NODES_MAC = "33:33:00:00:00:01"
T = TypeVar("T")


def ll(nic: Nic) -> str:
    return fa.link_local(nic.mac)


def ip4(nic: Nic) -> str:
    return fa.ip_of(nic)


def marker() -> bytes:
    return b"nlab-victim-" + secrets.token_hex(6).encode()


# -- frames ------------------------------------------------------------------------------------
def chained(head: IPv6, body: Packet, headers: int) -> Packet:
    """`body` behind `headers` destination-options headers."""
    pkt: Packet = head
    for _ in range(headers):
        pkt = pkt / IPv6ExtHdrDestOpt()
    return pkt / body


def router_advert(sender: Nic, prefix: str, headers: int = 0) -> bytes:
    """An RA making `sender` a default router and offering `prefix`/64 for SLAAC."""
    head = IPv6(src=ll(sender), dst="ff02::1", hlim=255)
    body = (
        ICMPv6ND_RA(routerlifetime=1800)
        / ICMPv6NDOptSrcLLAddr(lladdr=sender.mac)
        / ICMPv6NDOptPrefixInfo(prefix=prefix, prefixlen=64, validlifetime=3600, preferredlifetime=1800)
    )
    return raw(Ether(src=sender.mac, dst=ALL_NODES_MAC) / chained(head, body, headers))


def redirect6(sender: Nic, victim: Nic, dest: str, target: Nic) -> bytes:
    """From `sender` (the victim's next hop for `dest`): send `dest`'s traffic to `target` instead."""
    icmp = ICMPv6ND_Redirect(tgt=ll(target), dst=dest) / ICMPv6NDOptDstLLAddr(lladdr=target.mac)
    return raw(Ether(src=sender.mac, dst=victim.mac) / IPv6(src=ll(sender), dst=ll(victim), hlim=255) / icmp)


def redirect4(sender: Nic, victim: Nic, dest: str, gateway: Nic) -> bytes:
    """From `sender` (the victim's gateway for `dest`), quoting the victim's echo reply to `dest`
    (the kernel itself handles a redirect about an echo reply; about anything else it looks for
    the socket that sent it)."""
    quoted = IP(src=ip4(victim), dst=dest) / ICMP(type=0, id=7, seq=1)
    icmp = ICMP(type=5, code=1, gw=ip4(gateway)) / raw(quoted)[:28]
    return raw(Ether(src=sender.mac, dst=victim.mac) / IP(src=ip4(sender), dst=ip4(victim)) / icmp)


def neighbour_advert(sender: Nic, victim: Nic, owner: Nic) -> bytes:
    """An unsolicited override NA: `owner`'s link-local address is at `sender`'s MAC."""
    na = ICMPv6ND_NA(tgt=ll(owner), R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=sender.mac)
    return raw(Ether(src=sender.mac, dst=victim.mac) / IPv6(src=ll(sender), dst=ll(victim), hlim=255) / na)


def dhcp6(sender: Nic, victim: Nic, kind: str) -> bytes:
    """A DHCPv6 ADVERTISE or REPLY (547 -> 546) to the victim's link-local address."""
    message = {"advertise": DHCP6_Advertise, "reply": DHCP6_Reply}[kind](trid=0x4242)
    ids = DHCP6OptClientId() / DHCP6OptServerId()
    udp = UDP(sport=547, dport=546) / message / ids
    return raw(Ether(src=sender.mac, dst=victim.mac) / IPv6(src=ll(sender), dst=ll(victim)) / udp)


def dhcp4_offer(sender: Nic, victim: Nic, sport: int) -> bytes:
    """A broadcast DHCP OFFER of the victim's address, from UDP port `sport`, `sender` as router."""
    bootp = BOOTP(
        op=2, yiaddr=ip4(victim), siaddr=ip4(sender), chaddr=bytes.fromhex(victim.mac.replace(":", ""))
    )
    dhcp = DHCP(
        options=[("message-type", "offer"), ("server_id", ip4(sender)), ("router", ip4(sender)), "end"]
    )
    ip = IP(src=ip4(sender), dst="255.255.255.255") / UDP(sport=sport, dport=68)
    return raw(Ether(src=sender.mac, dst=BROADCAST) / ip / bootp / dhcp)


def udp4(
    sender: Nic, victim: Nic, data: bytes, src: str | None = None, sport: int = fa.SPORT, dport: int = 9
) -> bytes:
    ip = IP(src=ip4(sender) if src is None else src, dst=ip4(victim))
    return raw(Ether(src=sender.mac, dst=victim.mac) / ip / UDP(sport=sport, dport=dport) / Raw(data))


def udp6(
    sender: Nic, victim: Nic, data: bytes, src: str | None = None, dport: int = 9, headers: int = 0
) -> bytes:
    head = IPv6(src=ll(sender) if src is None else src, dst=ll(victim))
    body = UDP(sport=fa.SPORT, dport=dport) / Raw(data)
    return raw(Ether(src=sender.mac, dst=victim.mac) / chained(head, body, headers))


# -- waiting -----------------------------------------------------------------------------------
def until(read: Callable[[], T], done: Callable[[T], bool], seconds: float = 5.0) -> T:
    """`read()` again until `done` holds of it or `seconds` pass; its last value."""
    deadline = time.monotonic() + seconds
    while not done(value := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


# -- kernel state --------------------------------------------------------------------------------
def undo(ns: str, *cmd: str) -> None:
    """A clean-up command in `ns`; whether there was anything to undo does not matter."""
    with netns.inside(ns):
        subprocess.run(cmd, capture_output=True, check=False)


def _json(ns: str, *cmd: str) -> list[dict[str, Any]]:
    return json.loads(fa.run_in(ns, *cmd) or "[]")


def routes6(ns: str) -> list[tuple[str, str, str]]:
    """The IPv6 main table as (destination, gateway, protocol); lifetimes left out."""
    rows = _json(ns, "ip", "-j", "-6", "route", "show")
    return sorted((r.get("dst", ""), r.get("gateway", ""), r.get("protocol", "")) for r in rows)


def addresses6(ns: str) -> list[str]:
    links = _json(ns, "ip", "-j", "-6", "addr", "show")
    return sorted(f"{a['local']}/{a['prefixlen']}" for link in links for a in link.get("addr_info", []))


def tentative(ns: str) -> list[str]:
    """Addresses still in duplicate address detection."""
    links = _json(ns, "ip", "-j", "-6", "addr", "show", "tentative")
    return [a["local"] for link in links for a in link.get("addr_info", [])]


def gateway(ns: str, dest: str) -> str:
    """The next hop the kernel uses for `dest` (redirects included): `ip route get`."""
    rows = _json(ns, "ip", "-j", *(["-6"] if ":" in dest else []), "route", "get", dest)
    return rows[0].get("gateway", "") if rows else ""


def neighbour(ns: str, address: str) -> str | None:
    rows = _json(ns, "ip", "-j", "neigh", "show", address)
    return rows[0].get("lladdr") if rows else None
