"""A BGP EVPN fabric built with netns_lab.kernel helpers (no builder), for lab tests and benchmarks.

Flat underlay (one switch) or two "machines" joined by a routed link; each part's hosts peer
with the route reflector over the underlay only:

    flat                                      two machines
                 rr .254                        rr .254  h1 .11  h2 .12      h3 .13
                  |                              \\       |      /            |
     h1 .11 --- [ul] --- h2 .12                  [ul1] 10.255.1.0/24        [ul2] 10.255.2.0/24
                  |                                 |                         |
                h3 .13  (10.255.0.0/24)            m1 .1 --- 192.0.2.0/30 --- .2 m2
                                                      (routers: the machines' own namespaces)
    per host: sg-<vni> (bridge) + vx-<vni> (vxlan id VNI local VTEP dstport 4789 nolearning)
              VM namespaces on sg-<vni>

The lab is journaled like a real one (LabState, one namespace per line) so that
`netns_lab.lab.teardown.down` removes it, FRR daemons included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError

from netns_lab.features.overlay import evpn, frr
from netns_lab.kernel import fdb, netlink, netns
from netns_lab.lab import teardown
from netns_lab.lab.state import LabState
from netns_lab.observe import probe
from netns_lab.topology import names

VXLAN_PORT = 4789
ASN = 65000
VM_MTU = 1450  # underlay 1500 - 50 bytes of VXLAN/UDP/IPv4/Ethernet
NTF_SELF, NTF_MASTER, NTF_EXT_LEARNED = 0x02, 0x04, 0x10
ZERO_MAC = evpn.ZERO_MAC
UNDERLAY = "ul"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class VM:
    name: str
    host: str
    vni: int
    ip: str  # with prefix length
    mac: str


@dataclass(frozen=True)
class Machine:
    """A machine's share of a routed underlay: its switch, its subnet's gateway, its WAN end."""

    name: str
    switch: str
    gateway: str  # with prefix length, on the machine's switch
    wan: str  # with prefix length, on the routed link between the machines


@dataclass
class Fabric:
    """Flat: one lab `lab`. Routed: the machines' own namespaces (and their link) are lab `lab`,
    each machine's part (switch, hosts, VMs, route reflector) is lab `<lab>-<machine>`, as
    `nlab up --machine` would make it: each part is torn down on its own."""

    lab: str
    hosts: dict[str, str]  # host -> VTEP address with prefix length
    reflector: str  # with prefix length
    machines: dict[str, Machine] = field(default_factory=dict)  # machine name -> its underlay
    placement: dict[str, str] = field(default_factory=dict)  # rr/host -> machine name
    vms: dict[str, VM] = field(default_factory=dict)
    states: dict[str, LabState] = field(default_factory=dict)  # lab -> its journal, in creation order

    # -- names and plain data ----------------------------------------------------------------
    def lab_of(self, node: str) -> str:
        """The lab (part) a node belongs to."""
        if node in self.vms:
            node = self.vms[node].host
        if node in self.placement:
            return f"{self.lab}-{self.placement[node]}"
        switch_of = {m.switch: name for name, m in self.machines.items()}
        return f"{self.lab}-{switch_of[node]}" if node in switch_of else self.lab

    def ns(self, node: str) -> str:
        return names.namespace(self.lab_of(node), node)

    def node(self, name: str) -> frr.Node:
        return frr.Node(self.lab_of(name), name)

    def namespaces(self) -> list[str]:
        return [ns for state in self.states.values() for ns in state.namespaces()]

    def down(self, part: str | None = None) -> list[int]:
        """Tear down one part's lab (None: every lab, parts first); the pids teardown ended."""
        labs = [part] if part is not None else list(reversed(self.states))
        return [pid for lab in labs for pid in teardown.down(lab).processes]

    def vtep(self, host: str) -> IPv4Address:
        return ipaddress.ip_interface(self.hosts[host]).ip

    @property
    def rr_ip(self) -> IPv4Address:
        return ipaddress.ip_interface(self.reflector).ip

    def segments(self, host: str) -> set[int]:
        return {vm.vni for vm in self.vms.values() if vm.host == host}

    def expected_fdb(self, host: str) -> dict[int, set[tuple[str, IPv4Address]]]:
        """What BGP must program on `host`'s vx-<vni>, from the model alone: a head-end
        replication entry per other VTEP hosting the VNI, each remote VM's MAC at its VTEP."""
        table: dict[int, set[tuple[str, IPv4Address]]] = {}
        for vni in self.segments(host):
            remote = [h for h in self.hosts if h != host and vni in self.segments(h)]
            entries = {(ZERO_MAC, self.vtep(h)) for h in remote}
            entries |= {
                (vm.mac, self.vtep(vm.host)) for vm in self.vms.values() if vm.vni == vni and vm.host != host
            }
            table[vni] = entries
        return table

    # -- building --------------------------------------------------------------------------
    def _namespace(self, node: str) -> str:
        name, lab = self.ns(node), self.lab_of(node)
        if lab not in self.states:
            self.states[lab] = LabState.begin(lab, "tests/lab/evpn_fabric.py", "")
        self.states[lab].record_namespace(name)  # journal first: teardown covers a crash in create()
        netns.create(name)
        with netlink.session(name) as nl:
            nl.up("lo")
        return name

    def _switch(self, switch: str) -> None:
        self._namespace(switch)
        with netlink.session(self.ns(switch)) as nl:
            nl.bridge(names.SWITCH_BRIDGE)

    def _cable(self, node: str, switch: str, ifname: str, ifaddr: str) -> None:
        with netlink.session(self.ns(switch)) as nl:
            nl.veth(f"{node}-{ifname}", ifname, self.ns(node), master=names.SWITCH_BRIDGE, up=True)
        with netlink.session(self.ns(node)) as nl:
            nl.up(ifname)
            nl.address(ifname, ifaddr)

    def _underlay_node(self, node: str, ifaddr: str) -> None:
        self._namespace(node)
        machine = self.machines.get(self.placement.get(node, ""))
        self._cable(node, machine.switch if machine else UNDERLAY, "eth0", ifaddr)
        if machine:
            with netlink.session(self.ns(node)) as nl:
                nl.route("default", str(ipaddress.ip_interface(machine.gateway).ip))

    def parts(self) -> list[str | None]:
        return list(self.machines) if self.machines else [None]

    def build(self, spawn: bool = False) -> None:
        """The machines (if any), then each part: in this process, or (`spawn`) each part by a
        process of its own, as `nlab up --machine` on each machine would."""
        self.build_world()
        for part in self.parts():
            if spawn:
                self.spawn_part(part)
            else:
                self.build_part(part)

    def build_world(self) -> None:
        """The machines' own namespaces and the routed link between them (lab `lab`)."""
        ms = list(self.machines.values())
        for m in ms:
            self._namespace(m.name)
            netlink.sysctl(self.ns(m.name), "net.ipv4.ip_forward", "1")
        if len(ms) == 2:  # the routed link: a veth between the two machines, each its own subnet
            a, b = ms
            with netlink.session(self.ns(a.name)) as nl:
                nl.veth("wan0", "wan0", self.ns(b.name), up=True)
                nl.address("wan0", a.wan)
            with netlink.session(self.ns(b.name)) as nl:
                nl.up("wan0")
                nl.address("wan0", b.wan)
            for here, there in ((a, b), (b, a)):
                with netlink.session(self.ns(here.name)) as nl:
                    subnet = ipaddress.ip_interface(there.gateway).network
                    nl.route(str(subnet), str(ipaddress.ip_interface(there.wan).ip))
        if ms:
            self.states[self.lab].mark_up()

    def build_part(self, part: str | None) -> None:
        """One machine's part (None: the flat fabric): its switch, the reflector if placed
        there, its hosts and their VMs, their FRR."""
        machine = self.machines.get(part or "")
        self._switch(machine.switch if machine else UNDERLAY)
        if machine:
            self._cable(machine.name, machine.switch, "eth0", machine.gateway)
        if self.placement.get("rr") == part:
            self._underlay_node("rr", self.reflector)
        for host, ifaddr in self.hosts.items():
            if self.placement.get(host) == part:
                self._underlay_node(host, ifaddr)
        for vm in list(self.vms.values()):
            if self.placement.get(vm.host) == part:
                self.attach(vm)
        self.start_frr(part)
        for lab in {self.lab_of(n) for n in (*self.hosts, "rr") if self.placement.get(n) == part}:
            self.states[lab].mark_up()

    def spawn_part(self, part: str | None) -> None:
        """build_part(part) by another process, knowing only the fabric's plain data."""
        spec = {
            "lab": self.lab,
            "hosts": self.hosts,
            "reflector": self.reflector,
            "machines": {n: dataclasses.asdict(m) for n, m in self.machines.items()},
            "placement": self.placement,
            "vms": {n: dataclasses.asdict(vm) for n, vm in self.vms.items()},
        }
        argv = [sys.executable, "-m", "tests.lab.evpn_fabric", json.dumps(spec), json.dumps(part)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
        assert proc.returncode == 0, f"part {part} failed:\n{proc.stderr}"
        lab = f"{self.lab}-{part}" if part else self.lab
        state = LabState.read(lab)
        assert state is not None, f"part {part} left no state"
        self.states[lab] = state

    def segment(self, host: str, vni: int) -> None:
        """sg-<vni> + vx-<vni> on `host` (once), through the overlay's FDB door (kernel/fdb)."""
        bridge, vx = f"sg-{vni}", f"vx-{vni}"
        with fdb.Tables(self.ns(host)) as tables:
            if bridge in tables.refresh():
                return
            tables.nl.bridge(bridge)
            index = tables.vxlan(vx, vni, str(self.vtep(host)), bridge, learning=False)
            # FRR's advice for its traditional model: the bridge must not learn remote MACs on
            # the vxlan port either (BGP installs them); no neigh_suppress (nothing fills the
            # bridge's neighbour table in this mode)
            tables.ipr.brport("set", index=index, learning=0)

    def attach(self, vm: VM) -> None:
        """The VM's namespace with eth0 on `sg-<vni>` of its host (MTU sized for VXLAN)."""
        self.vms[vm.name] = vm
        self._namespace(vm.name)
        self._plug(vm)

    def move(self, name: str, host: str, between: Callable[[], object] = lambda: None) -> VM:
        """The VM's eth0 re-cabled to `host` (same namespace, MAC and address), as a live
        migration ends; its old host's segment goes when no VM is left on it. `between` runs
        while the VM is cabled nowhere (and out of the model)."""
        old = self.vms.pop(name)
        with netlink.session(self.ns(old.host)) as nl:
            nl.iproute().link("del", index=nl.index(names.vm_port(name, 0)))
        if old.vni not in self.segments(old.host):
            with netlink.session(self.ns(old.host)) as nl:
                for ifname in (f"vx-{old.vni}", f"sg-{old.vni}"):
                    nl.iproute().link("del", index=nl.index(ifname))
        between()
        vm = self.vms[name] = dataclasses.replace(old, host=host)
        self._plug(vm)
        return vm

    def _plug(self, vm: VM) -> None:
        self.segment(vm.host, vm.vni)
        with netlink.session(self.ns(vm.host)) as nl:
            port = names.vm_port(vm.name, 0)
            nl.veth(port, "eth0", self.ns(vm.name), mac=vm.mac, master=f"sg-{vm.vni}", up=True)
        with netlink.session(self.ns(vm.name)) as nl:
            nl.iproute().link("set", index=nl.index("eth0"), mtu=VM_MTU)
            nl.up("eth0")
            nl.address("eth0", vm.ip)

    def start_frr(self, part: str | None) -> None:
        """A part's FRR, from that part's data only: its VTEPs, and the reflector if placed
        there (which knows its own part's VTEPs and accepts other machines' subnets)."""
        vteps = {h: self.vtep(h) for h in self.hosts if self.placement.get(h) == part}
        others = [ipaddress.ip_interface(m.gateway).network for n, m in self.machines.items() if n != part]
        here = self.placement.get("rr") == part
        configs = evpn.part_configs(ASN, ("rr", self.rr_ip), vteps, here, others)
        for node, config in sorted(configs.items(), key=lambda kv: kv[0] != "rr"):  # reflector first
            frr.start(self.node(node), config)

    def converge(self, spawn: bool = False) -> None:
        """Build, wait for the sessions, let every VM announce itself, wait for the FDBs."""
        self.build(spawn)
        self.wait_sessions()
        for vm in self.vms.values():
            announce(self.ns(vm.name), vm)
        wait_fdb(self, self.hosts)

    def wait_sessions(self, timeout: float = 30.0) -> None:
        frr.wait_established(self.node("rr"), [self.vtep(h) for h in self.hosts], timeout)
        for host in self.hosts:
            frr.wait_established(self.node(host), [self.rr_ip], timeout)


# -- the kernel's view ----------------------------------------------------------------------------
def vxlan_fdb(ns: str, vni: int) -> set[tuple[str, IPv4Address, bool]]:
    """(MAC, dst VTEP, extern_learn) of each entry with a destination on vx-<vni>."""
    with fdb.Tables(ns) as tables:
        entries = tables.fdb(f"vx-{vni}")
    return {
        (e.mac, IPv4Address(e.dst), bool(e.flags & NTF_EXT_LEARNED))
        for e in entries
        if e.dst and not e.master
    }


def announce(ns: str, vm: VM, mac: str | None = None) -> None:
    """One gratuitous ARP from the VM (source `mac`, default its own): its host's bridge learns
    the MAC, which is what zebra advertises."""
    with netns.inside(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with sock:
        sock.bind(("eth0", 0))
        ip = ipaddress.ip_interface(vm.ip).ip.packed
        src = bytes.fromhex((mac or vm.mac).replace(":", ""))
        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + src + ip + b"\0" * 6 + ip
        sock.send(b"\xff" * 6 + src + struct.pack("!H", 0x0806) + arp)


def forget(ns: str, ip: str) -> None:
    """Drop `ns`'s neighbour entry for `ip`: the next packet resolves it afresh, at once (an
    entry still INCOMPLETE from an earlier unanswered probe would wait for its next retry)."""
    with netlink.session(ns) as nl, contextlib.suppress(NetlinkError):
        nl.iproute().neigh("del", dst=ip, ifindex=nl.index("eth0"))


def answered_by(ns: str, dst: str) -> str | None:
    """The MAC behind `dst` after a ping from `ns` (its neighbour entry, resolved afresh), None
    if no reply: with overlapping addresses, which VM answered is the point."""
    forget(ns, dst)
    if not probe.ping(ns, dst):
        return None
    with netlink.session(ns) as nl:
        for msg in nl.iproute().get_neighbours(dst=dst):
            if (mac := msg.get_attr("NDA_LLADDR")) is not None:
                return mac
    return None


def wait_fdb(fabric: Fabric, hosts: Iterable[str], timeout: float = 30.0) -> float:
    """Poll until each host's vx-<vni> FDB equals the model's (BGP-programmed); the seconds taken."""
    began = time.monotonic()
    while True:
        diffs = {h: fdb_diff(fabric, h) for h in hosts}
        if not any(diffs.values()):
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"FDB not as the model says after {timeout:g} s: {diffs}")
        time.sleep(0.02)


def fdb_diff(fabric: Fabric, host: str) -> dict[int, dict[str, list]]:
    """Per VNI, entries missing from or extra in the kernel (remote MACs must be extern_learn)."""
    diffs = {}
    for vni, want in fabric.expected_fdb(host).items():
        have = vxlan_fdb(fabric.ns(host), vni)
        got = {(mac, dst) for mac, dst, ext in have if mac == ZERO_MAC or ext}
        not_bgp = sorted((m, str(d)) for m, d, ext in have if m != ZERO_MAC and not ext)
        missing, extra = sorted(want - got), sorted(got - want)
        if missing or extra or not_bgp:
            diffs[vni] = {"missing": missing, "extra": extra, "not extern_learn": not_bgp}
    return diffs


@dataclass(frozen=True)
class Encapsulated:
    """A VXLAN packet seen on the underlay: outer destination, VNI, the inner frame's fields."""

    vtep: IPv4Address
    vni: int
    dst_mac: str
    ethertype: int
    arp_target: IPv4Address | None  # an ARP request's target address


def vxlan_packets(frames: Iterable[bytes]) -> list[Encapsulated]:
    """The IPv4/UDP 4789 frames of `frames`, decapsulated (anything else is left out)."""
    found = []
    for data in frames:
        if len(data) < 34 or data[12:14] != b"\x08\x00" or data[23] != 17:  # IPv4, UDP
            continue
        udp = 14 + (data[14] & 0x0F) * 4
        if int.from_bytes(data[udp + 2 : udp + 4], "big") != VXLAN_PORT or len(data) < udp + 30:
            continue
        inner = data[udp + 16 :]
        ethertype = int.from_bytes(inner[12:14], "big")
        arp = ethertype == 0x0806 and len(inner) >= 42 and inner[20:22] == b"\x00\x01"
        found.append(
            Encapsulated(
                IPv4Address(data[30:34]),
                int.from_bytes(data[udp + 12 : udp + 15], "big"),
                ":".join(f"{b:02x}" for b in inner[:6]),
                ethertype,
                IPv4Address(inner[38:42]) if arp else None,
            )
        )
    return found


def main(spec: str, part: str) -> None:
    """Build one part of a fabric described by `spec` (JSON), as its own process."""
    data = json.loads(spec)
    fabric = Fabric(
        data["lab"],
        data["hosts"],
        data["reflector"],
        {n: Machine(**m) for n, m in data["machines"].items()},
        data["placement"],
        {n: VM(**vm) for n, vm in data["vms"].items()},
    )
    fabric.build_part(json.loads(part))


if __name__ == "__main__":
    main(*sys.argv[1:])
