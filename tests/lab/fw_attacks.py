"""Real traffic for the NIC-firewall tests: TCP/UDP endpoints inside VM namespaces, attack frames
(TCP flag abuse, fragments, spoofing), the live firewall, its counters and its events.

Sockets are opened while the thread sits in a VM's namespace (kernel/netns.inside) and used from
the test's threads; nothing outlives its `with` block. Frames are sent with the raw-socket
injector of vlan_attacks, from the attacker VM's own NIC, as its kernel would send them.

Counters come from the document `nlab status --json` prints, built in-process: a CLI call costs
a second of Python start-up and the module has a time budget. For the same reason, rule changes
that are only scaffolding go through `running.opened` (the code behind `nlab fw add/del`); the changes
under test go through the real CLI.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Any

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPrefixInfo, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw, raw

from netns_lab.kernel import netns
from netns_lab.lab import running, status
from netns_lab.lab.state import LabState
from netns_lab.observe import probe
from netns_lab.topology import loader
from tests.lab.conftest import REPO, nlab
from tests.lab.vlan_attacks import BROADCAST, Nic

SPORT = 40000  # source port of crafted UDP and TCP
ROGUE_PREFIX = "2001:db8:bad::"  # what the rogue router advertisement offers


# -- the live firewall ---------------------------------------------------------------------------
def fw(lab: str, *args: str) -> Any:
    """`nlab fw --lab LAB ARGS --json`, parsed; the command must succeed."""
    return json.loads(nlab("fw", "--lab", lab, *args, "--json", check=True).stdout)


def rule(id: int, apply: str, direction: str, peer: str, proto: str, ports: int | str, **more: Any) -> dict:
    return {"id": id, "apply": apply, "direction": direction, "peer": peer, "proto": proto, "ports": ports,
            "action": "allow", **more}  # fmt: skip


def add_args(r: dict[str, Any]) -> list[str]:
    """`nlab fw add` arguments for rule `r`."""
    return ["add", *(arg for key, value in r.items() for arg in (f"--{key}", str(value)))]


def _edit_rules(data: dict[str, Any], add: list[dict[str, Any]], drop: set[int]) -> None:
    section = data["firewall"]
    section["rules"] = [r for r in section["rules"] if r["id"] not in drop] + add


def change_rules(lab: str, add: tuple[dict[str, Any], ...] = (), drop: tuple[int, ...] = ()) -> None:
    """One live change on every host (what `nlab fw add/del` runs), without a CLI start-up."""
    with running.opened(lab) as live:
        live.change(lambda data: _edit_rules(data, list(add), set(drop)))


def flip_rule(lab: str, r: dict[str, Any], times: int) -> None:
    """Add `r`, delete it, add it... `times` changes in all, each on every host."""
    with running.opened(lab) as live:
        for i in range(times):
            add, drop = ([r], set()) if i % 2 == 0 else ([], {r["id"]})
            live.change(lambda data, add=add, drop=drop: _edit_rules(data, add, drop))


@contextlib.contextmanager
def live_rules(lab: str, *rules: dict[str, Any]) -> Iterator[None]:
    """Extra rules for the block, removed after it whatever happens."""
    change_rules(lab, add=rules)
    try:
        yield
    finally:
        change_rules(lab, drop=tuple(r["id"] for r in rules))


def set_members(lab: str, group: str, members: list[str]) -> None:
    with running.opened(lab) as live:
        live.change(lambda data: data["security_groups"].__setitem__(group, members))


# -- counters ------------------------------------------------------------------------------------
def status_doc(lab: str) -> dict[str, Any]:
    """The document of `nlab status LAB --json`."""
    state = LabState.read(lab)
    text = state.topology_text() if state else None
    assert state is not None and text is not None, f"lab {lab} is not up"
    return status.document(loader.load_text(text, state.source or "topology.yaml", lab=lab), state)


def drops(doc: dict[str, Any], port: str, direction: str) -> Counter[str]:
    """Drops by reason of a VM port (e.g. `db1-0`); `ingress`: from the VM, `egress`: to it."""
    for p in (p for host in doc["hosts"] for p in host["ports"] if p["name"] == port):
        return Counter({r: c["packets"] for r, c in p["counters"][direction]["drop"].items()})
    raise AssertionError(f"status has no port {port}")


def added(after: dict[str, Any], before: dict[str, Any], port: str, direction: str) -> dict[str, int]:
    return dict(drops(after, port, direction) - drops(before, port, direction))


def grown(
    lab: str, before: dict[str, Any], port: str, direction: str, want: dict[str, int]
) -> dict[str, int]:
    """Drops `port` added since `before`, once they reach `want` (softirq may lag) or after 3 s."""
    deadline = time.monotonic() + 3.0
    while True:
        got = added(status_doc(lab), before, port, direction)
        if all(got.get(r, 0) >= n for r, n in want.items()) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


# -- endpoints -----------------------------------------------------------------------------------
def tcp_probes(lab: str, probes: list[tuple[str, str, int]], timeout: float = 1.0) -> dict[tuple, str]:
    """Connect probes (vm, address, port), all at once: a dropped SYN costs its full timeout."""
    with ThreadPoolExecutor(len(probes)) as ex:
        futures = {p: ex.submit(probe.tcp, f"{lab}-{p[0]}", p[1], p[2], timeout) for p in probes}
        return {p: f.result() for p, f in futures.items()}


def mismatches(got: dict[Any, str], want: dict[Any, str]) -> list[str]:
    return [f"{k}: {got[k]}, expected {v}" for k, v in want.items() if got[k] != v]


def _socket(ns: str, kind: int) -> socket.socket:
    with netns.inside(ns):
        return socket.socket(socket.AF_INET, kind)


@dataclass
class Server:
    """A TCP server that keeps every connection, counts what it reads and optionally echoes it."""

    echo: bool
    received: int = 0
    last_rx: float = 0.0
    conns: list[socket.socket] = field(default_factory=list)


@contextlib.contextmanager
def serving(ns: str, ip: str, port: int, echo: bool = True) -> Iterator[Server]:
    listener, server, stop = _socket(ns, socket.SOCK_STREAM), Server(echo), threading.Event()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((ip, port))
    listener.listen(64)
    listener.setblocking(False)
    thread = threading.Thread(target=_serve, args=(listener, server, stop), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join()
        for conn in [*server.conns, listener]:
            conn.close()


def _serve(listener: socket.socket, server: Server, stop: threading.Event) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(listener, selectors.EVENT_READ)
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.02):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                with contextlib.suppress(OSError):
                    if sock is listener:
                        conn, _ = listener.accept()
                        server.conns.append(conn)
                        sel.register(conn, selectors.EVENT_READ)
                    elif not (data := sock.recv(65536)):
                        sel.unregister(sock)
                    else:
                        server.received, server.last_rx = server.received + len(data), time.monotonic()
                        if server.echo:
                            sock.sendall(data)


def connect(ns: str, dst: str, port: int, timeout: float = 1.0) -> socket.socket:
    """A connected TCP socket from `ns`; TimeoutError if the SYN goes unanswered."""
    sock = _socket(ns, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((dst, port))
    except BaseException:
        sock.close()
        raise
    return sock


def exchange(sock: socket.socket, data: bytes) -> bytes:
    """Send `data` to an echo server and read as many bytes back (fewer if they stop coming)."""
    sock.sendall(data)
    got = b""
    with contextlib.suppress(TimeoutError):
        while len(got) < len(data) and (chunk := sock.recv(len(data) - len(got))):
            got += chunk
    return got


@contextlib.contextmanager
def streaming(sock: socket.socket, chunk: int = 1024, gap: float = 0.005) -> Iterator[None]:
    """Keep sending on `sock` from a thread for the block's life (a stalled send just waits)."""
    stop = threading.Event()

    def run() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):  # TimeoutError included: the window is shut
                sock.send(b"s" * chunk)
            time.sleep(gap)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def udp_receiver(ns: str, ip: str, port: int) -> Iterator[socket.socket]:
    with _socket(ns, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, port))
        yield sock


def udp_send(ns: str, dst: str, port: int, data: bytes) -> None:
    with _socket(ns, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, (dst, port))


def datagrams(sock: socket.socket, wait: float) -> list[bytes]:
    """Everything `sock` receives within `wait` seconds."""
    got, deadline = [], time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(65536))
        except TimeoutError:
            break
    return got


# -- frames --------------------------------------------------------------------------------------
def ip_of(nic: Nic) -> str:
    assert nic.ip, f"{nic.node}.{nic.nic} has no address"
    return nic.ip.split("/")[0]


def link_local(mac: str) -> str:
    """fe80:: with the modified EUI-64 of `mac`, as Linux derives it."""
    b = bytes.fromhex(mac.replace(":", ""))
    return str(IPv6Address(b"\xfe\x80" + bytes(6) + bytes([b[0] ^ 2, *b[1:3], 0xFF, 0xFE, *b[3:]])))


def _ether(src: Nic, dst: Nic) -> Ether:
    return Ether(src=src.mac, dst=dst.mac)


def tcp_flag_frames(src: Nic, dst: Nic, dport: int, sport: int) -> dict[str, bytes]:
    """Segments that open no connection, each from its own source port (`sport`, `sport + 1`, ...)."""
    flags = {"ACK": "A", "FIN": "F", "RST": "R", "SYN+FIN": "SF", "Xmas": "FPU"}
    ip = IP(src=ip_of(src), dst=ip_of(dst))
    return {
        name: raw(_ether(src, dst) / ip / TCP(sport=sport + i, dport=dport, flags=f))
        for i, (name, f) in enumerate(flags.items())
    }


def arp_request(src: Nic, dst: Nic) -> bytes:
    """An honest who-has from `src` for `dst`'s address."""
    arp = ARP(op=1, hwsrc=src.mac, psrc=ip_of(src), hwdst="00:00:00:00:00:00", pdst=ip_of(dst))
    return raw(Ether(src=src.mac, dst=BROADCAST) / arp)


@dataclass(frozen=True)
class Attack:
    name: str
    expect: dict[str, int]  # drops by reason on the attacker's port
    frames: tuple[bytes, ...]
    dropped: tuple[bytes, ...]  # the frames that must never reach the victim


def expected(attacks: list[Attack]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for a in attacks:
        total.update(a.expect)
    return dict(total)


def _fragment(src: Nic, dst: Nic, ident: int, proto: int, offset: int, more: bool, data: bytes) -> bytes:
    ip = IP(
        src=ip_of(src), dst=ip_of(dst), id=ident, proto=proto, flags="MF" if more else 0, frag=offset // 8
    )
    return raw(_ether(src, dst) / ip / Raw(data))


def _transport(src: Nic, dst: Nic, l4: Any) -> bytes:
    """The transport bytes of a whole datagram, checksummed over its real pseudo-header."""
    return raw(IP(src=ip_of(src), dst=ip_of(dst)) / l4)[20:]


def fragment_attacks(src: Nic, dst: Nic, udp_port: int, tcp_port: int, ids: list[int]) -> list[Attack]:
    """RFC 1858 tiny fragment, an orphan, an overlap, a duplicate first fragment; one IP id each."""
    tcp = _transport(src, dst, TCP(sport=SPORT, dport=tcp_port, flags="S") / Raw(b"tiny" * 8))
    udp = _transport(src, dst, UDP(sport=SPORT, dport=udp_port) / Raw(b"overlap!" * 7))

    def frag(ident: int, proto: int, offset: int, more: bool, data: bytes) -> bytes:
        return _fragment(src, dst, ident, proto, offset, more, data)

    tiny = (frag(ids[0], 6, 0, True, tcp[:8]), frag(ids[0], 6, 8, False, tcp[8:]))  # flags in the 2nd
    orphan = frag(ids[1], 17, 1480, False, b"orphan")
    first, overlap = frag(ids[2], 17, 0, True, udp[:32]), frag(ids[2], 17, 16, False, udp[16:])
    dup_first, dup_again = frag(ids[3], 17, 0, True, udp[:32]), frag(ids[3], 17, 0, True, udp[:8] + bytes(24))
    return [
        Attack("tiny first fragment (TCP header split)", {"frag-tiny": 1, "frag-orphan": 1}, tiny, tiny),
        Attack("orphan later fragment", {"frag-orphan": 1}, (orphan,), (orphan,)),
        Attack("overlapping fragment", {"frag-overlap": 1}, (first, overlap), (overlap,)),
        Attack("duplicated first fragment", {"frag-dup": 1}, (dup_first, dup_again), (dup_again,)),
    ]


def spoof_attacks(attacker: Nic, victim: Nic, other: Nic) -> list[Attack]:
    """Port-security violations from `attacker`, aimed at `victim`, mostly impersonating `other`."""
    me, you, them = ip_of(attacker), ip_of(victim), ip_of(other)
    udp, to_victim = UDP(sport=SPORT, dport=9) / Raw(b"spoofed"), _ether(attacker, victim)
    bcast, all_nodes = (
        Ether(src=attacker.mac, dst=BROADCAST),
        Ether(src=attacker.mac, dst="33:33:00:00:00:01"),
    )
    ipv6 = IPv6(src=link_local(other.mac), dst=link_local(victim.mac))
    garp = ARP(op=1, hwsrc=attacker.mac, psrc=them, hwdst="00:00:00:00:00:00", pdst=them)
    dhcp = BOOTP(op=2, yiaddr=you, siaddr=me, chaddr=bytes.fromhex(victim.mac.replace(":", ""))) / DHCP(
        options=[("message-type", "offer"), ("server_id", me), ("router", me), "end"]
    )
    ra = (
        IPv6(src=link_local(attacker.mac), dst="ff02::1", hlim=255)
        / ICMPv6ND_RA(routerlifetime=1800)
        / ICMPv6NDOptSrcLLAddr(lladdr=attacker.mac)
        / ICMPv6NDOptPrefixInfo(prefix=ROGUE_PREFIX, prefixlen=64)
    )
    frames = {
        "forged source MAC": ("spoof-mac", Ether(src=other.mac, dst=victim.mac) / IP(src=me, dst=you) / udp),
        "foreign IPv4 source": ("spoof-ip", to_victim / IP(src=them, dst=you) / udp),
        "foreign IPv6 source": ("spoof-ip", to_victim / ipv6 / udp),
        "ARP reply claiming another VM's IP": (
            "spoof-arp",
            to_victim / ARP(op=2, hwsrc=attacker.mac, psrc=them, hwdst=victim.mac, pdst=you),
        ),
        "gratuitous ARP for another VM's IP": ("spoof-arp", bcast / garp),
        "DHCP server reply (udp 67)": (
            "dhcp-server",
            bcast / IP(src=me, dst="255.255.255.255") / UDP(sport=67, dport=68) / dhcp,
        ),
        "IPv6 router advertisement": ("router-advert", all_nodes / ra),
    }
    return [Attack(name, {reason: 1}, (raw(pkt),), (raw(pkt),)) for name, (reason, pkt) in frames.items()]


# -- namespaces ----------------------------------------------------------------------------------
def run_in(ns: str, *cmd: str) -> str:
    """A command's output, run inside `ns` (the child inherits the thread's namespace)."""
    with netns.inside(ns):
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def tc_programs(ns: str, dev: str, hook: str) -> list[str]:
    """Names of the BPF programs `tc filter show` lists on `dev`'s `hook` (ingress|egress) in `ns`."""
    out = run_in(ns, "tc", "filter", "show", "dev", dev, hook)
    return [part.split()[1] for part in out.split(" bpf chain 0 handle ")[1:]]


def neighbour(ns: str, ip: str) -> str | None:
    """The MAC the namespace holds for `ip` in its neighbour table, if any."""
    entries = json.loads(run_in(ns, "ip", "-j", "neigh", "show", ip) or "[]")
    return entries[0].get("lladdr") if entries else None


def addresses(ns: str) -> list[str]:
    links = json.loads(run_in(ns, "ip", "-j", "addr", "show"))
    return [a["local"] for link in links for a in link["addr_info"]]


@dataclass
class AttachWatch:
    """What a poller saw while a lab was built: VM ports found carrying frames, and how."""

    verified: set[str] = field(default_factory=set)  # carrier seen, both programs attached
    violations: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    polls: int = 0


@contextlib.contextmanager
def watching_attach(lab: str, hosts: list[str], vm_ports: set[str]) -> Iterator[AttachWatch]:
    """Poll the hosts while the block builds the lab: each VM port is checked for its programs
    the first time its link has a carrier (LOWER_UP: the VM's end is up). A program attached
    between the two reads would hide a violation, never invent one."""
    watch, stop = AttachWatch(), threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for host in hosts:
                with contextlib.suppress(OSError, subprocess.CalledProcessError, json.JSONDecodeError):
                    _check_ports(f"{lab}-{host}", vm_ports, watch)
            watch.polls += 1
            time.sleep(0.02)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join()


def _check_ports(ns: str, vm_ports: set[str], watch: AttachWatch) -> None:
    if not netns.exists(ns):
        return
    for link in json.loads(run_in(ns, "ip", "-j", "link", "show")):
        name = link["ifname"]
        if name not in vm_ports or name in watch.verified or "LOWER_UP" not in link["flags"]:
            continue
        programs = (tc_programs(ns, name, "ingress"), tc_programs(ns, name, "egress"))
        if programs == (["port_from_vm"], ["port_to_vm"]):
            watch.verified.add(name)
        else:
            watch.violations[name] = programs


# -- events --------------------------------------------------------------------------------------
class Follower:
    """`nlab fw events --json [--denied]` in the background, its lines collected as they come."""

    def __init__(self, lab: str, seconds: float, denied: bool = True) -> None:
        only = ["--denied"] if denied else []
        cmd = ["fw", "--lab", lab, "events", "--json", *only, "--timeout", str(seconds)]
        pipe = subprocess.PIPE
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netns_lab", *cmd], stdout=pipe, stderr=pipe, text=True, cwd=REPO
        )
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout or ()), daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def wait_for(self, found: Callable[[list[dict[str, Any]]], bool], seconds: float) -> list[dict[str, Any]]:
        """The events so far, once `found(events)` holds; AssertionError after `seconds`."""
        deadline = time.monotonic() + seconds
        while not found(events := self.events()):
            assert time.monotonic() < deadline, (
                f"`nlab fw events` did not print it in {seconds} s: {events[-5:]}"
            )
            time.sleep(0.1)
        return events

    def stop(self) -> str:
        """Stop it (it would run to its --timeout); what it wrote to stderr."""
        self.proc.terminate()
        self.proc.wait(10)
        self.thread.join(5)
        return self.proc.stderr.read() if self.proc.stderr else ""
