"""The routed hop of a trace: a router or firewall VM's forwarding verdict, evaluated on a copy.

The VM itself is never touched (its nftables counters, connection table and sockets stay as
they are). Instead a scratch namespace `<lab>-trace.<pid>` is made (journaled with the lab, so
`nlab down` removes it even after a crash; the dot keeps it apart from any node's name) with
interfaces named, addressed and MAC'd like the VM's NICs, the VM's routes, forwarding on, and a
copy of the VM's live nftables ruleset. Each of those interfaces is one end of a veth pair whose
other end, `w<N>`, stays in the scratch namespace too: the probe frame is sent into the ingress
NIC from its `w` end, and comes out of the `w` end of the NIC the copy routes it to - or not.

Whether it came out is known without a timeout: right after the probe, an ARP request for the
ingress NIC's address is sent the same way, from a thread pinned to one CPU, so that both frames
go through that CPU's backlog in order. The ARP answer is the barrier: once it is back, a probe
that was forwarded is already queued on the egress `w` socket. The copy starts with an empty
connection table, so the verdict is that of a new flow; rules whose counters grew are reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from netns_lab.kernel import netlink, netns, nft
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.state import LabState
from netns_lab.topology import names
from netns_lab.topology.model import Nic, Topology, Vm

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
NUD_PERMANENT = 0x80
BARRIER_TIMEOUT = 2.0  # only when there is no barrier (IPv6 only) or it is lost (an `arp` table)


def scratch_name(lab: str) -> str:
    return f"{lab}-trace.{os.getpid()}"


@contextlib.contextmanager
def scratch(topo: Topology, router: Vm) -> Iterator[str]:
    """A namespace shaped like `router`'s, with its live ruleset; removed when the block ends."""
    ns = scratch_name(topo.lab)
    state = LabState.read(topo.lab)
    if state is None:
        raise RuntimeError(f"lab {topo.lab!r} has no state")
    ruleset = nft.ruleset(names.namespace(topo.lab, router.name))
    state.record_namespace(ns)  # before it exists: a crash in between still leaves a record
    netns.create(ns)
    try:
        with Netlink(ns) as nl:
            nl.up("lo")
            for nic in router.nics:
                nl.veth(f"w{nic.index}", nic.name, ns, mac=nic.mac, up=True)  # the MAC goes to the peer
                nl.up(nic.name)
                for addr in nic.addresses:
                    nl.address(nic.name, str(addr))
            for route in router.routes:
                nl.route(str(route.to), str(route.via))
            if router.gateway is not None:
                nl.route("default", str(router.gateway))
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            netlink.sysctl(ns, key, "1")
        if ruleset.strip():
            nft.load(ns, ruleset)
        yield ns
    finally:
        netns.delete(ns)


def _neighbour(ns: str, nic: str, ip: str, mac: str) -> None:
    """A permanent neighbour entry, so the forwarded probe leaves at once instead of waiting on ARP."""
    with Netlink(ns) as nl:
        ipr = nl.iproute()
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        ipr.neigh("add", dst=ip, lladdr=mac, ifindex=nl.index(nic), state=NUD_PERMANENT, family=family)


def _counters(ns: str) -> dict[tuple[str, str, str, int], int]:
    """Packets counted by each rule with a counter: (family, table, chain, handle) -> packets."""
    doc = json.loads(nft.ruleset(ns, as_json=True))
    found = {}
    for item in doc.get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        for expr in rule.get("expr", []):
            if isinstance(expr, dict) and "counter" in expr:
                key = (rule["family"], rule["table"], rule["chain"], rule["handle"])
                found[key] = expr["counter"].get("packets", 0)
    return found


_COUNTER = re.compile(r"counter packets \d+ bytes \d+ ?")


def _rule_texts(ns: str) -> dict[tuple[str, str, str, int], str]:
    """Each rule's text as `nft -a list ruleset` prints it, counter values left out."""
    text = nft.ruleset(ns, handles=True)
    found, family, table, chain = {}, "", "", ""
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["table"]:
            family, table = words[1], words[2]
        elif words[:1] == ["chain"]:
            chain = words[1]
        elif "# handle" in line and chain:
            body, handle = line.rsplit("# handle", 1)
            found[(family, table, chain, int(handle))] = _COUNTER.sub("counter ", body.strip()).strip()
    return found


def _socket(ns: str, ifname: str) -> socket.socket:
    with netns.inside(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    sock.setblocking(False)
    return sock


def _arp_barrier(frame: Ether, into: Nic) -> bytes | None:
    if into.ip is None or into.ip.version != 4:
        return None
    sender = str(next(iter(into.ip.network.hosts())))
    if sender == str(into.ip.ip):
        sender = str(list(into.ip.network.hosts())[-1])
    return bytes(
        Ether(src=frame.src, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=frame.src, psrc=sender, pdst=str(into.ip.ip))
    )


def _forwarded(raw: bytes, probe: Ether) -> tuple[str, str] | None:
    """(src, dst) of `raw` if it is the probe as forwarded: known by its IPv4 identification or
    IPv6 flow label, which a router leaves alone even when it translates addresses."""
    pkt = Ether(raw)
    if IPv6 in probe:
        same = IPv6 in pkt and pkt[IPv6].fl == probe[IPv6].fl and pkt[IPv6].nh == probe[IPv6].nh
        return (pkt[IPv6].src, pkt[IPv6].dst) if same else None
    same = IP in pkt and pkt[IP].id == probe[IP].id and pkt[IP].proto == probe[IP].proto
    return (pkt[IP].src, pkt[IP].dst) if same else None


Left = tuple[str, tuple[str, str]] | None  # the NIC the probe left by, with its (src, dst) there


def _send_and_watch(ns: str, router: Vm, into: Nic, frame: Ether) -> tuple[Left, bool]:
    """Send the probe into `into`; (where it left, or None; whether the barrier came back)."""
    socks = {nic.name: _socket(ns, f"w{nic.index}") for nic in router.nics}
    barrier = _arp_barrier(frame, into)
    cpu = min(os.sched_getaffinity(0))
    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})
        try:
            socks[into.name].send(bytes(frame))
            if barrier is not None:
                socks[into.name].send(barrier)
        finally:
            os.sched_setaffinity(0, saved)
        left: Left = None
        barrier_back = False
        deadline = time.monotonic() + BARRIER_TIMEOUT
        # with a barrier, until its answer; without one (no IPv4 address to ask for), until the
        # probe shows up or the time is out
        while not (barrier_back if barrier else left) and time.monotonic() < deadline:
            ready, _, _ = select.select(list(socks.values()), [], [], deadline - time.monotonic())
            for name, sock in socks.items():
                if sock in ready:
                    left, barrier_back = _drain(sock, name, into, frame, left, barrier_back)
        for name, sock in socks.items():  # what was queued before the barrier's answer
            left, _ = _drain(sock, name, into, frame, left, barrier_back)
        return left, barrier_back
    finally:
        for sock in socks.values():
            sock.close()


def _drain(
    sock: socket.socket, name: str, into: Nic, frame: Ether, left: Left, barrier_back: bool
) -> tuple[Left, bool]:
    while True:
        try:
            raw, addr = sock.recvfrom(65535)
        except BlockingIOError:
            return left, barrier_back
        if addr[2] == PACKET_OUTGOING:
            continue
        pkt = Ether(raw)
        if name == into.name and ARP in pkt and pkt[ARP].op == 2:
            barrier_back = True
        elif name != into.name and (addresses := _forwarded(raw, frame)) is not None:
            left = name, addresses


def forward(
    topo: Topology, router: Vm, into: Nic, out: Nic, frame: bytes, next_mac: str, next_ip: str
) -> dict[str, Any]:
    """The router's verdict on `frame` arriving on `into` (a trace stage); `out`, `next_ip`: where
    the topology says it leaves and to whom."""
    probe = Ether(frame)
    doc: dict[str, Any] = {
        "node": router.name,
        "port": f"{into.name} -> {out.name}",
        "kind": "router",
        "program": "nftables forward (copy)",
        "vlan": None,
        "verdict": "drop",
        "reason": None,
        "firewall": None,
        "rule": None,
        "events": [],
        "mirrored": [],
        "next_hop": next_ip,
        "matched": [],
    }
    with scratch(topo, router) as ns:
        _neighbour(ns, out.name, next_ip, next_mac)
        before = _counters(ns)
        left, barrier_back = _send_and_watch(ns, router, into, probe)
        after = _counters(ns)
        texts = _rule_texts(ns)
    doc["matched"] = [texts.get(k, str(k)) for k, n in after.items() if n > before.get(k, 0)]
    l3 = IPv6 if IPv6 in probe else IP
    if left is None:
        doc["reason"] = "its nftables ruleset drops it"
        if not barrier_back:
            doc["reason"] = f"not forwarded within {BARRIER_TIMEOUT:g} s (no ARP barrier answered sooner)"
    elif left[0] != out.name:
        doc["reason"] = f"routed out of {left[0]}, not {out.name} as the topology says"
    else:
        doc["verdict"] = "pass"
        if left[1] != (probe[l3].src, probe[l3].dst):
            doc["translated"] = {"src": left[1][0], "dst": left[1][1]}
    return doc
