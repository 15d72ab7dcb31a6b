"""Real frames from an attacker VM leave the victim's kernel as it was (NIST 800-125B 4.3,
port security), each beside a twin that shows the same frame would have changed it.

    tor1 --- hv1 [vs1, VLAN 60] --+-- mallory .66   the attacker (port security, no rules)
                                  +-- victim  .10   its routes, addresses, neighbours, sockets
                                  +-- client  .40   no rules: unlimited
                                  +-- server  .20   [fw] in tcp 8000-8099, out tcp; quota 4
                                  +-- bystand .30   [fw] in tcp
                                  +-- rtr     .1    port security off: the legitimate twin

(tests/lab/victims.yaml.) Each attack test snapshots the victim's state, sends the attack from
mallory's own NIC, then a barrier frame from mallory that the victim must receive: once the
victim's tap holds the barrier, the kernel has handled every earlier frame (one path, in order),
so the state read after it is final. The positive control, in the same test, sends the same
frame from rtr (whose port has no port security) and waits for the victim's state to change:
the victim's kernel does take such frames, so "unchanged" means port security stopped them.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import raw

from dataplane import abi, syscalls
from netns_lab.features.firewall import live as fwlive
from netns_lab.kernel import netns
from netns_lab.lab import running as running_lab
from netns_lab.observe import probe
from tests.lab import fw_attacks as fa
from tests.lab import victim_frames as vf
from tests.lab import vlan_attacks as va
from tests.lab.conftest import Lab, running

TOPOLOGY = Path(__file__).with_name("victims.yaml")
QUOTA = 4  # victims.yaml: connections {quota: 4}; the peer quota follows it
VMS = ("mallory", "victim", "client", "server", "bystand", "rtr")
ROGUE, GOOD = "2001:db8:bad:", "2001:db8:600d:"  # prefixes the attacker's and rtr's RAs offer
LONG_CHAIN, SHORT_CHAIN = 6, 2  # destination-options headers: past the parser's bound, within it


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running(TOPOLOGY) as lab:
        yield lab


@pytest.fixture(scope="module")
def n(lab: Lab) -> dict[str, va.Nic]:
    """The VMs' NICs, once their link-local addresses are through duplicate address detection:
    a tentative address receives nothing, and most frames here are sent to one."""
    doc = fa.status_doc(lab.name)
    for vm in VMS:
        tentative = vf.until(lambda vm=vm: vf.tentative(lab.ns(vm)), lambda t: not t)
        assert not tentative, f"{vm} keeps tentative addresses: {tentative}"
    return {vm: va.nic(doc, vm) for vm in VMS}


def send(lab: Lab, vm: str, *frames: bytes) -> None:
    va.inject(lab.ns(vm), "eth0", frames)


def barrier(lab: Lab, n: dict[str, va.Nic], tap: va.Tap, headers: int = 0) -> list[bytes]:
    """A datagram from mallory to the victim, awaited in the victim's tap; what the tap caught
    until then. With `headers`, it travels behind that many extension headers (IPv6)."""
    mark = vf.marker()
    frame = (
        vf.udp6(n["mallory"], n["victim"], mark, headers=headers)
        if headers
        else vf.udp4(n["mallory"], n["victim"], mark)
    )
    send(lab, "mallory", frame)
    return caught(tap, mark)


def caught(tap: va.Tap, barrier: bytes) -> list[bytes]:
    """What `tap` caught up to the barrier: the frame that is `barrier` or carries it."""
    return [f.data for f in tap.until(lambda f: barrier in f.data)]


@contextlib.contextmanager
def victim_tap(lab: Lab) -> Iterator[va.Tap]:
    with va.taps([(lab.ns("victim"), "eth0")]) as taps:
        yield taps[lab.ns("victim"), "eth0"]


@contextlib.contextmanager
def udp_socket(ns: str, family: int, port: int) -> Iterator[socket.socket]:
    """A UDP socket of `ns` on every address of `family`, the way a DHCP client listens."""
    with netns.inside(ns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        sock.setblocking(False)
        yield sock


def drained(sock: socket.socket) -> list[bytes]:
    got = []
    with contextlib.suppress(BlockingIOError):
        while True:
            got.append(sock.recv(65536))
    return got


def forget_ra_state(lab: Lab) -> None:
    """What an accepted RA configured in the victim: its SLAAC addresses, default route and
    on-link prefix routes (all of them in 2001:db8::/32)."""
    vf.undo(lab.ns("victim"), "ip", "-6", "addr", "flush", "dev", "eth0", "dynamic")
    vf.undo(lab.ns("victim"), "ip", "-6", "route", "flush", "proto", "ra")
    vf.undo(lab.ns("victim"), "ip", "-6", "route", "flush", "root", "2001:db8::/32")


def ra_took(lab: Lab, prefix: str, router: str) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The victim's addresses in `prefix` and its routes via `router`, once both show (or 5 s)."""
    ns = lab.ns("victim")

    def read() -> tuple[list[str], list[tuple[str, str, str]]]:
        return [a for a in vf.addresses6(ns) if a.startswith(prefix)], [
            r for r in vf.routes6(ns) if r[1] == router
        ]

    return vf.until(read, lambda got: bool(got[0] and got[1]))


# -- router advertisements -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("attack_headers", "twin_headers"), [(0, 0), (LONG_CHAIN, SHORT_CHAIN)], ids=["plain", "long-chain"]
)
def test_router_advertisement_changes_no_route_or_address(
    lab: Lab, n: dict[str, va.Nic], attack_headers: int, twin_headers: int
) -> None:
    """mallory's RA (behind a chain of extension headers longer than the parser walks, in the
    second case) installs no default router and no SLAAC address; rtr's does, also behind a
    short chain, and mallory's own datagram behind that short chain still arrives."""
    ns = lab.ns("victim")
    ra = vf.router_advert(n["mallory"], ROGUE + "1::", attack_headers)
    try:
        before = (vf.routes6(ns), vf.addresses6(ns))
        with victim_tap(lab) as tap:
            send(lab, "mallory", ra)
            arrived = barrier(lab, n, tap, headers=twin_headers)
        after = (vf.routes6(ns), vf.addresses6(ns))
        send(lab, "rtr", vf.router_advert(n["rtr"], GOOD + "1::", twin_headers))
        took = ra_took(lab, GOOD + "1:", vf.ll(n["rtr"]))
    finally:
        forget_ra_state(lab)
    assert ra not in arrived, "mallory's router advertisement reached the victim"
    assert after == before, f"the victim's routes/addresses changed: {before} -> {after}"
    assert all(took), f"the victim did not take rtr's RA (addresses, routes): {took}"


# -- redirects -------------------------------------------------------------------------------------
@contextlib.contextmanager
def routes(lab: Lab, *routes: tuple[str, str]) -> Iterator[None]:
    """Routes (prefix, gateway) in the victim for the block, and no cached redirect after it."""
    ns = lab.ns("victim")
    for prefix, via in routes:
        fa.run_in(ns, "ip", "route", "add", prefix, "via", via, "dev", "eth0")
    try:
        yield
    finally:
        for prefix, via in routes:
            vf.undo(ns, "ip", "route", "del", prefix, "via", via, "dev", "eth0")
        for family in ("-4", "-6"):
            vf.undo(ns, "ip", family, "route", "flush", "cache")


REDIRECTS = {  # builder, a VM's address in the family, (mallory's prefix, dest), (rtr's prefix, dest)
    "icmpv6": (
        vf.redirect6,
        vf.ll,
        ("2001:db8:d::/64", "2001:db8:d::7"),
        ("2001:db8:e::/64", "2001:db8:e::7"),
    ),
    "ipv4": (vf.redirect4, vf.ip4, ("198.51.100.0/24", "198.51.100.7"), ("203.0.113.0/24", "203.0.113.7")),
}


@pytest.mark.parametrize("family", REDIRECTS)
def test_redirect_changes_no_route(lab: Lab, n: dict[str, va.Nic], family: str) -> None:
    """mallory, the victim's next hop for one prefix (no forwarder), redirects it to client:
    refused. rtr, next hop for another, sends the same redirect: the victim follows it."""
    build, address, (attacked, dest), (twin_prefix, twin_dest) = REDIRECTS[family]
    ns, mallory, client = lab.ns("victim"), address(n["mallory"]), address(n["client"])
    # IPv4 follows a redirect only to a resolved gateway (IPv6 takes the target's MAC from it)
    assert probe.ping(ns, f"{client}%eth0" if family == "icmpv6" else client), "victim -> client ping"
    with routes(lab, (attacked, mallory), (twin_prefix, address(n["rtr"]))):
        attack = build(n["mallory"], n["victim"], dest, n["client"])
        with victim_tap(lab) as tap:
            send(lab, "mallory", attack)
            arrived = barrier(lab, n, tap)
        kept = vf.gateway(ns, dest)
        send(lab, "rtr", build(n["rtr"], n["victim"], twin_dest, n["client"]))
        followed = vf.until(lambda: vf.gateway(ns, twin_dest), lambda gw: gw == client)
    assert attack not in arrived, "mallory's redirect reached the victim"
    assert kept == mallory, f"the victim's next hop for {dest} is {kept}, not mallory's {mallory}"
    assert followed == client, f"the victim ignored rtr's redirect too: via {followed}"


# -- neighbour discovery ---------------------------------------------------------------------------
def test_neighbour_advertisement_for_another_vm_changes_no_neighbour(lab: Lab, n: dict[str, va.Nic]) -> None:
    """mallory claims client's link-local address with its own MAC: the victim's entry for client
    keeps client's MAC. rtr's identical claim (its MAC) does move the entry."""
    ns, client = lab.ns("victim"), vf.ll(n["client"])
    assert probe.ping(ns, f"{client}%eth0"), "victim -> client ping6 failed: nothing to poison"
    try:
        assert vf.neighbour(ns, client) == n["client"].mac
        attack = vf.neighbour_advert(n["mallory"], n["victim"], n["client"])
        with victim_tap(lab) as tap:
            send(lab, "mallory", attack)
            arrived = barrier(lab, n, tap)
        kept = vf.neighbour(ns, client)
        send(lab, "rtr", vf.neighbour_advert(n["rtr"], n["victim"], n["client"]))
        moved = vf.until(lambda: vf.neighbour(ns, client), lambda mac: mac == n["rtr"].mac)
    finally:
        vf.undo(ns, "ip", "-6", "neigh", "flush", "dev", "eth0")
    assert attack not in arrived, "mallory's neighbour advertisement reached the victim"
    assert kept == n["client"].mac, (
        f"the victim's neighbour entry for client is {kept} (mallory {n['mallory'].mac})"
    )
    assert moved == n["rtr"].mac, f"the victim ignored rtr's advertisement too: {moved}"


# -- DHCP servers ----------------------------------------------------------------------------------
def test_dhcp_server_messages_never_reach_the_client_sockets(lab: Lab, n: dict[str, va.Nic]) -> None:
    """DHCPv6 ADVERTISE and REPLY (547 -> 546) and a DHCPv4 OFFER from port 6767 (not 67) from
    mallory reach no DHCP client socket of the victim; from rtr they do. An ordinary datagram
    of mallory's from source port 67 is no DHCP message and arrives."""
    ns, victim, mallory, rtr = lab.ns("victim"), n["victim"], n["mallory"], n["rtr"]

    def messages(sender: va.Nic) -> list[bytes]:
        return [
            vf.dhcp6(sender, victim, "advertise"),
            vf.dhcp6(sender, victim, "reply"),
            vf.dhcp4_offer(sender, victim, 6767),
        ]

    ordinary = vf.marker()
    with (
        udp_socket(ns, socket.AF_INET6, 546) as client6,
        udp_socket(ns, socket.AF_INET, 68) as client4,
        udp_socket(ns, socket.AF_INET, 9999) as plain,
        victim_tap(lab) as tap,
    ):
        send(lab, "mallory", *messages(mallory), vf.udp4(mallory, victim, ordinary, sport=67, dport=9999))
        arrived = barrier(lab, n, tap)
        got = (drained(client6), drained(client4), drained(plain))
        send(lab, "rtr", *messages(rtr))
        twin: list[list[bytes]] = [[], []]

        def read() -> tuple[int, int]:
            twin[0] += drained(client6)
            twin[1] += drained(client4)
            return len(twin[0]), len(twin[1])

        counts = vf.until(read, lambda c: c == (2, 1), 3.0)
    leaked = [m[:60].hex() for m in messages(mallory) if m in arrived]
    assert not leaked, f"mallory's DHCP server messages reached the victim: {leaked}"
    assert got[:2] == ([], []), f"the victim's DHCP client sockets got mallory's messages: {got[:2]}"
    assert got[2] == [ordinary], "mallory's ordinary datagram from port 67 was refused as a DHCP reply"
    assert counts == (2, 1), f"rtr's DHCP messages did not reach the victim's sockets either: {counts}"


# -- unspecified sources ---------------------------------------------------------------------------
def test_unspecified_source_reaches_nothing(lab: Lab, n: dict[str, va.Nic]) -> None:
    """Datagrams from 0.0.0.0 and :: (neither DHCP discovery nor address detection) never reach
    the victim; the same datagrams from mallory's own addresses do."""
    ns, mallory, victim = lab.ns("victim"), n["mallory"], n["victim"]
    marks = [vf.marker() for _ in range(4)]
    attacks = [
        vf.udp4(mallory, victim, marks[0], src="0.0.0.0", dport=7777),
        vf.udp6(mallory, victim, marks[1], src="::", dport=7777),
    ]
    twins = [vf.udp4(mallory, victim, marks[2], dport=7777), vf.udp6(mallory, victim, marks[3], dport=7777)]
    with (
        udp_socket(ns, socket.AF_INET, 7777) as v4,
        udp_socket(ns, socket.AF_INET6, 7777) as v6,
        victim_tap(lab) as tap,
    ):
        send(lab, "mallory", *attacks, *twins)
        arrived = barrier(lab, n, tap)
        got = sorted([*drained(v4), *drained(v6)])
    leaked = [a[:60].hex() for a in attacks if a in arrived]
    assert not leaked, f"datagrams from an unspecified source reached the victim: {leaked}"
    assert got == sorted(marks[2:]), f"the victim's sockets got {got}, want only mallory's own two"


# -- flooded unicast -------------------------------------------------------------------------------
UNKNOWN_MAC = "02:00:00:de:ad:01"  # no VM's: the bridge floods frames to it to every port


def test_flooded_syn_leaves_no_state_event_or_hit_on_bystanders(lab: Lab, n: dict[str, va.Nic]) -> None:
    """A SYN for server's address sent to an unknown MAC is flooded to every port of the VLAN:
    each port-secured VM port refuses it (dst-mac), and no firewall (server's, bystand's) keeps
    an entry, an event or a rule hit of it. The same SYN to server's MAC opens a flow: entry,
    allow event, hit of rule 10."""
    name, server = lab.name, n["server"]
    ip = IP(src=vf.ip4(n["mallory"]), dst=vf.ip4(server))
    syn = {
        sport: raw(Ether(src=n["mallory"].mac, dst=mac) / ip / TCP(sport=sport, dport=8000, flags="S"))
        for sport, mac in ((41000, UNKNOWN_MAC), (41001, server.mac))
    }
    # the barrier: ARP passes every port without meeting a firewall (no event, no hit)
    mark = fa.arp_request(n["mallory"], server)
    guarded = ["victim-0", "client-0", "server-0", "bystand-0"]
    follower = fa.Follower(name, 30, denied=False)

    def reading(events: list[dict]) -> bool:  # a denied probe until one shows: the reader is live
        probe.tcp(lab.ns("mallory"), vf.ip4(server), 9999, 0.2)
        return any(e["dport"] == 9999 for e in events)

    try:
        follower.wait_for(reading, 8)
        before, hits = fa.status_doc(name), rule_hits(name)
        with va.taps([(lab.ns(vm), "eth0") for vm in ("server", "bystand")]) as taps:
            send(lab, "mallory", syn[41000], mark)
            seen = {ns: caught(tap, mark) for (ns, _), tap in taps.items()}
        after, flooded_hits, flooded_conns = fa.status_doc(name), rule_hits(name), connections(name, 41000)
        send(lab, "mallory", syn[41001])
        control = follower.wait_for(lambda ev: any(e["sport"] == 41001 for e in ev), 5)
        control_hits, control_conns = rule_hits(name), connections(name, 41001)
    finally:
        follower.stop()
    leaked = [ns for ns, got in seen.items() if syn[41000] in got]
    assert not leaked, f"the flooded SYN reached {leaked}"
    refused = {port: fa.added(after, before, port, "egress").get("dst-mac", 0) for port in guarded}
    assert refused == dict.fromkeys(guarded, 1), f"dst-mac drops towards the VMs: {refused}"
    assert flooded_conns == [], f"connection entries of the flooded SYN: {flooded_conns}"
    assert flooded_hits == hits, f"rule hits moved for the flooded SYN: {hits} -> {flooded_hits}"
    assert [e for e in control if e["sport"] == 41000] == [], "an event reported the flooded SYN"
    assert [c["nic"] for c in control_conns] == ["server.eth0"], f"the SYN to server's MAC: {control_conns}"
    assert control_hits[10][0] == hits[10][0] + 1, f"rule 10 hits: {hits[10]} -> {control_hits[10]}"
    assert [(e["verdict"], e["rule"]) for e in control if e["sport"] == 41001] == [("allow", 10)]


def rule_hits(lab: str) -> dict[int, tuple[int, int]]:
    with running_lab.opened(lab) as live:
        return fwlive.rule_hits(live)


def connections(lab: str, sport: int | None = None) -> list[dict]:
    with running_lab.opened(lab) as live:
        return [c for c in fwlive.connections(live) if sport is None or sport in (c["sport"], c["dport"])]


# -- the connection quota of a server ------------------------------------------------------------
def test_unlimited_client_fills_only_the_servers_inbound_share(lab: Lab, n: dict[str, va.Nic]) -> None:
    """client (no rules, no quota of its own) opens 8 connections to server (quota 4, so peer
    quota 4): 4 are tracked and open, 4 are refused as ct-quota towards server; server's table
    holds those 4 inbound entries and nothing more, another peer (mallory) still opens a flow to
    server, and server one of its own."""
    name, server, client = lab.name, vf.ip4(n["server"]), vf.ip4(n["client"])
    forget_connections(name)  # earlier tests' flows would hold part of the share
    before = fa.status_doc(name)
    with (
        fa.serving(lab.ns("server"), server, 8000),
        probe.listening(lab.ns("server"), [(server, 8001)]),
        probe.listening(lab.ns("client"), [(client, 9000)]),
    ):
        with ThreadPoolExecutor(8) as ex:
            tries = list(ex.map(lambda _: attempt(lab.ns("client"), server, 8000), range(8)))
        try:
            held = [c["origin"] for c in connections(name) if c["nic"] == "server.eth0"]
            other = probe.tcp(lab.ns("mallory"), server, 8001)
            own = probe.tcp(lab.ns("server"), client, 9000)
        finally:
            for sock in tries:
                if sock is not None:
                    sock.close()
    refused = fa.grown(name, before, "server-0", "egress", {"ct-quota": 4})
    assert sum(s is not None for s in tries) == QUOTA, f"{sum(s is not None for s in tries)} of 8 opened"
    assert held == ["in"] * QUOTA, f"server.eth0 holds {held}: at most {QUOTA} flows opened towards it"
    assert refused.get("ct-quota", 0) >= QUOTA, f"drops towards server: {refused}"
    assert other == "open", f"another peer's flow to server was refused: {other}"
    assert own == "open", f"server's own flow (its outbound share) was refused: {own}"


def forget_connections(lab: str) -> None:
    """Every connection entry of the lab deleted, and its quota share given back (ct_reap)."""
    with running_lab.opened(lab) as live:
        for host in live.hosts:
            for key, _ in list(syscalls.map_items(host.fw.maps["conntrack"], abi.CtKey, abi.CtEntry)):
                host.fw.forget(key)


def attempt(ns: str, dst: str, port: int) -> socket.socket | None:
    with contextlib.suppress(TimeoutError):
        return fa.connect(ns, dst, port, timeout=1.5)
    return None
