"""`nlab trace`: a crafted packet through every port, switch and router it would cross, leaving
no mark anywhere.

Like ovn-trace, but on the real dataplane. Each switch-port stage runs the very program attached
to that port (BPF_PROG_TEST_RUN, inside the port's namespace so that it sees the port's own
ifindex) on a private copy of its node's dataplane: the same instructions with maps of their own,
filled with a snapshot of the live configuration and connection state (dataplane/private.py).
Whatever the packet would cause - counters, rule hits, connection entries, fragment records,
verdict events, mirror copies - happens in the copy, where the trace reads it and reports it,
and never in the live dataplane. One copy per node serves the whole trace, so a connection the
packet opens at one port is seen at the next port of the same host, as it would be.

The L2 path is worked out from the topology: VM port, hypervisor uplink, physical switch ports,
the far hypervisor's uplink, the target's port (or the switch port of an external network). When
the next hop is a router or firewall VM, its nftables verdict is evaluated on a copy of its live
ruleset in a scratch namespace (netns_lab/observe/tracerouter.py) and the trace goes on from the NIC it
leaves by, hop after hop, to the destination.

Outcome: `delivered` (every stage passed), `dropped` at the first stage that drops it,
`unreachable` when the path ends (no route, an internal-only vSwitch, an address nobody has), or
`not-followed` when a router translates the addresses (NAT: the next leg is another flow).
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Dot1Q, Ether

from dataplane import abi, private, testrun
from dataplane.mirror import Mirrors
from dataplane.switch import SwitchDataplane
from netns_lab import encoding
from netns_lab.features.firewall import live as fwlive
from netns_lab.features.mirror import live as mirror_live
from netns_lab.kernel import netns
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.state import code_file, pin_dir
from netns_lab.observe import tracerouter
from netns_lab.topology import model, names
from netns_lab.topology.model import Network, Nic, Topology, Vm

MAX_HOPS = 8
TTL = 64


class TraceError(ValueError):
    """Bad input: no such VM, not an address, a port out of range (exit 2)."""


class NoPath(TraceError):
    """The packet has no way to go on (no route, no link out of the host): the trace's answer."""


@dataclass(frozen=True)
class Stage:
    node: str  # the switching node (host or physical switch)
    port: str
    program: str
    kind: str  # vm-port, uplink, switch-port
    vlan: int | None  # the tag the frame carries at this stage


@dataclass(frozen=True)
class Target:
    """The L2 destination of one leg: a VM's NIC or an external network."""

    name: str
    mac: str
    vm: Vm | None = None
    nic: Nic | None = None
    network: Network | None = None


# -- the path ------------------------------------------------------------------------------------
def next_hop(topo: Topology, vm: Vm, dst: str) -> tuple[Nic, str]:
    """The NIC the packet leaves `vm` by and the address it is sent to at L2 (dst or a gateway)."""
    addr = ip_address(dst)
    for nic in vm.nics:
        if nic.ip is not None and addr in nic.ip.network:
            return nic, dst
    for route in vm.routes:
        if addr in route.to:
            return _nic_for(vm, route.via), str(route.via)
    if vm.gateway is not None:
        return _nic_for(vm, vm.gateway), str(vm.gateway)
    raise NoPath(f"{vm.name} has no route to {dst}")


def _nic_for(vm: Vm, gateway: Any) -> Nic:
    return next(n for n in vm.nics if n.ip is not None and gateway in n.ip.network)


def _target(topo: Topology, ip: str) -> Target:
    addr = ip_address(ip)
    for vm in topo.vms:
        for nic in vm.nics:
            if nic.ip is not None and nic.ip.ip == addr:
                return Target(vm.name, nic.mac, vm=vm, nic=nic)
    for net in topo.networks:
        if net.ip is not None and net.ip.ip == addr:
            with Netlink(names.namespace(topo.lab, net.name)) as nl:
                link = next(x for x in nl.links() if x.name == names.NETWORK_IFNAME)
            return Target(net.name, link.mac or "", network=net)
    raise NoPath(f"{ip} is not the address of a VM NIC or network of lab {topo.lab!r}")


def _uplink(topo: Topology, host: str, vswitch: str, what: str) -> model.PNic:
    uplinks = topo.host(host).vswitch(vswitch).uplinks
    if not uplinks:
        raise NoPath(f"{what}: {host}'s {vswitch} is internal-only: no path leaves the host")
    return next(p for p in topo.host(host).pnics if p.name == uplinks[0])


def leg(topo: Topology, src: Vm, out: Nic, target: Target) -> list[Stage]:
    """The ports one frame crosses from `src`'s NIC `out` to `target`, on one L2 segment."""
    vlan = out.vlan
    stages = [Stage(src.host, names.vm_port(src.name, out.index), "port_from_vm", "vm-port", None)]
    what = f"{src.name}.{out.name} -> {target.name}"
    local = target.vm is not None and target.nic is not None and target.vm.host == src.host
    if not (local and target.nic.vswitch == out.vswitch):  # else: out of the host and back
        p_src = _uplink(topo, src.host, out.vswitch, what)
        stages += [
            Stage(src.host, p_src.name, "vlan_to_port", "uplink", vlan),
            Stage(
                p_src.switch, names.switch_port(src.host, p_src.name), "vlan_from_port", "switch-port", vlan
            ),
        ]
        if target.network is not None:
            far_switch, far_port = target.network.switch, names.network_port(target.network.name)
        else:
            assert target.vm is not None and target.nic is not None
            p_dst = _uplink(topo, target.vm.host, target.nic.vswitch, what)
            far_switch, far_port = p_dst.switch, names.switch_port(target.vm.host, p_dst.name)
        if far_switch != p_src.switch:
            raise NoPath(f"{what}: {src.host}.{p_src.name} and {far_port} are on different switches")
        stages.append(Stage(far_switch, far_port, "vlan_to_port", "switch-port", vlan))
        if target.network is not None:
            return stages
        stages.append(Stage(target.vm.host, p_dst.name, "vlan_from_port", "uplink", vlan))
    assert target.vm is not None and target.nic is not None
    stages.append(
        Stage(target.vm.host, names.vm_port(target.vm.name, target.nic.index), "port_to_vm", "vm-port", vlan)
    )
    return stages


# -- the packet ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    src: str
    dst: str
    proto: str
    sport: int
    dport: int
    ident: int  # IPv4 identification / IPv6 flow label: how the probe is known after a router

    def frame(self, src_mac: str, dst_mac: str, ttl: int) -> Ether:
        v6 = ip_address(self.dst).version == 6
        l3 = (
            IPv6(src=self.src, dst=self.dst, hlim=ttl, fl=self.ident)
            if v6
            else IP(src=self.src, dst=self.dst, ttl=ttl, id=self.ident)
        )
        if self.proto == "tcp":
            l4: Any = TCP(sport=self.sport, dport=self.dport, flags="S")
        elif self.proto == "udp":
            l4 = UDP(sport=self.sport, dport=self.dport)
        else:
            l4 = ICMPv6EchoRequest(id=self.sport) if v6 else ICMP(type=8, id=self.sport)
        return Ether(src=src_mac, dst=dst_mac) / l3 / l4


def tagged(frame: Ether, vlan: int | None) -> bytes:
    """At a trunk or inside a bridge the frame carries its VLAN tag (in the bytes: a test run
    cannot set skb->vlan_tci)."""
    if vlan is None:
        return bytes(frame)
    return bytes(Ether(src=frame.src, dst=frame.dst) / Dot1Q(vlan=vlan) / frame.payload)


# -- running the stages on private copies -----------------------------------------------------------
class Copies:
    """The private dataplane copy of each node the trace crosses, made when first needed."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self._copies: dict[str, private.PrivateCopy] = {}
        self.rules = [0, *(r.id for r in topo.firewall.rules)]
        self.sessions = {sid: name for name, sid in mirror_live.read_ids(topo.lab).items()}

    def get(self, node: str, *programs: str) -> private.PrivateCopy:
        """`node`'s copy, with `programs` loaded (the verifier's work is most of a trace's cost:
        only the programs a stage runs are loaded)."""
        try:
            if node not in self._copies:
                pins, code = pin_dir(self.topo.lab) / node, code_file(self.topo.lab, node)
                self._copies[node] = private.private_copy(pins, code, ())
            for program in programs:
                self._copies[node].program(program)
        except private.PrivateCopyError as err:
            raise TraceError(f"{node}: {err}") from None
        return self._copies[node]

    def close(self) -> None:
        for dp in self._copies.values():
            dp.close()
        self._copies = {}


def _mirror_totals(dp: SwitchDataplane, ids: list[int]) -> dict[int, tuple[int, int]]:
    if "mirror_stats" not in dp.maps:
        return {}
    stats = Mirrors(dp.maps)
    return {sid: (s.dropped, s.skipped) for sid in ids for s in [stats.stats(sid)]}


def run_stage(copies: Copies, stage: Stage, frame: bytes) -> dict[str, Any]:
    ns = names.namespace(copies.topo.lab, stage.node)
    with Netlink(ns) as nl:
        ifindex = nl.index(stage.port)
    vm_port = stage.kind == "vm-port"
    dp = copies.get(stage.node, stage.program, *(["ct_reap"] if vm_port else []))  # ct_reap: dp.firewall
    before = dp.counters(ifindex)
    hits = dp.firewall.rule_hits(copies.rules) if vm_port else {}
    copied = _mirror_totals(dp, list(copies.sessions)) if vm_port else {}
    with netns.inside(ns):
        result = testrun.run(dp.programs[stage.program], frame, ifindex=ifindex)
    doc: dict[str, Any] = {
        "node": stage.node,
        "port": stage.port,
        "kind": stage.kind,
        "program": stage.program,
        "vlan": stage.vlan,
        "verdict": "pass" if result.passed else "drop",
        "reason": _reason(before, dp.counters(ifindex)),
        "firewall": None,
        "rule": None,
        "events": [],
        "mirrored": [],
    }
    if vm_port:
        grown = [r for r, (n, _) in dp.firewall.rule_hits(copies.rules).items() if n > hits.get(r, (0, 0))[0]]
        if grown:
            doc["firewall"] = "rule" if grown[0] else "default policy"
            doc["rule"] = encoding.rule_field(grown[0])
        doc["events"] = [fwlive.decode(ev, stage.port) for ev in private.events(dp)]
        doc["mirrored"] = _would_copy(copies, copied, _mirror_totals(dp, list(copies.sessions)))
    return doc


def _would_copy(copies: Copies, before: dict, after: dict) -> list[dict[str, Any]]:
    """Sessions whose copy the private copy tried to send (and could not: no device)."""
    found = []
    for sid, (tried, skipped) in after.items():
        was_tried, was_skipped = before.get(sid, (0, 0))
        if tried > was_tried or skipped > was_skipped:
            found.append(
                {
                    "session": copies.sessions[sid],
                    "copies": tried - was_tried,
                    "sampled_out": skipped - was_skipped,
                }
            )
    return found


def _reason(before: dict, after: dict) -> str | None:
    grown = [k for k in after if after[k].packets > (before[k].packets if k in before else 0)]
    reasons = [reason.label for (_, reason) in grown if reason != abi.Reason.PASS]
    return reasons[0] if reasons else None


# -- the trace -------------------------------------------------------------------------------------
def trace(
    topo: Topology,
    src_vm: str,
    dst: str,
    proto: str,
    dport: int,
    sport: int = 40000,
    copies: Copies | None = None,
) -> dict[str, Any]:
    """`copies`: private copies shared with other traces of the caller (who closes them): each
    node's programs are then loaded once, and a flow one trace opened is known to the next."""
    if src_vm not in {v.name for v in topo.vms}:
        raise TraceError(f"vm: no VM {src_vm!r} in lab {topo.lab!r}")
    try:
        ip_address(dst)
    except ValueError:
        raise TraceError(f"--to: {dst!r} is not an IP address") from None
    if proto in ("tcp", "udp") and not 0 < dport < 65536:
        raise TraceError(f"--dport: {dport} is not in 1..65535")
    vm = topo.vm(src_vm)
    doc: dict[str, Any] = {
        "lab": topo.lab,
        "from": src_vm,
        "to": dst,
        "proto": proto,
        "sport": sport if proto != "icmp" else None,
        "dport": dport if proto != "icmp" else None,
        "stages": [],
    }
    try:
        out, hop = next_hop(topo, vm, dst)
        if out.ip is None or out.ip.version != ip_address(dst).version:
            raise TraceError(f"--to: {src_vm}.{out.name} has no address of the family of {dst}")
        probe = Probe(str(out.ip.ip), dst, proto, sport, dport, secrets.randbelow(0xFFFF) + 1)
        own = contextlib.closing(Copies(topo)) if copies is None else contextlib.nullcontext(copies)
        with own as used:
            outcome, why = _walk(topo, used, probe, vm, out, hop, doc["stages"])
    except NoPath as err:
        outcome, why = "unreachable", str(err)
    doc.update(outcome=outcome, delivered=outcome == "delivered", why=why)
    return doc


def _walk(
    topo: Topology, copies: Copies, probe: Probe, vm: Vm, out: Nic, hop: str, stages: list[dict[str, Any]]
) -> tuple[str, str]:
    """Leg after leg until the packet is delivered or dropped: (outcome, a sentence why)."""
    for n in range(MAX_HOPS):
        target = _target(topo, hop)
        frame = probe.frame(out.mac, target.mac, TTL - n)
        for stage in leg(topo, vm, out, target):
            stages.append({"hop": n, **run_stage(copies, stage, tagged(frame, stage.vlan))})
            if stages[-1]["verdict"] == "drop":
                why = stages[-1]["reason"] or "dropped"
                return "dropped", f"dropped at {stage.node} {stage.port} ({why})"
        if hop == probe.dst:
            return "delivered", f"delivered to {target.name}"
        assert target.vm is not None and target.nic is not None
        router = target.vm
        if any(a.ip == ip_address(probe.dst) for nic in router.nics for a in nic.addresses):
            return "delivered", f"delivered to {router.name} itself"
        if not router.forwards:
            stages.append(_not_forwarded(n, router, "it is no router or firewall (it does not forward)"))
            return "dropped", f"{router.name} does not forward"
        try:
            out, hop = next_hop(topo, router, probe.dst)
        except NoPath:
            stages.append(_not_forwarded(n, router, f"it has no route to {probe.dst}"))
            return "dropped", f"{router.name} has no route to {probe.dst}"
        routed = tracerouter.forward(topo, router, target.nic, out, bytes(frame), _target(topo, hop).mac, hop)
        stages.append({"hop": n, **routed})
        if routed["verdict"] != "pass":
            return "dropped", f"dropped by {router.name}'s nftables"
        if "translated" in routed:  # a NAT: the next leg would be another flow
            new = routed["translated"]
            return (
                "not-followed",
                f"{router.name} translates it to {new['src']} -> {new['dst']} (not followed)",
            )
        vm = router
    return "dropped", f"more than {MAX_HOPS} routed hops"


def first_drop(topo: Topology, src: Vm, out: Nic, target_ip: str, frame: Ether) -> dict[str, Any] | None:
    """The first stage that drops `frame`, sent by `src` on `out` toward the NIC or network that
    has `target_ip` (one leg, private copies: no mark), or None if every stage passes it."""
    copies = Copies(topo)
    with contextlib.closing(copies):
        for stage in leg(topo, src, out, _target(topo, target_ip)):
            doc = run_stage(copies, stage, tagged(frame, stage.vlan))
            if doc["verdict"] == "drop":
                return doc
    return None


def _not_forwarded(hop: int, vm: Vm, reason: str) -> dict[str, Any]:
    return {
        "hop": hop,
        "node": vm.name,
        "port": None,
        "kind": "router",
        "program": "routing",
        "vlan": None,
        "verdict": "drop",
        "reason": reason,
        "firewall": None,
        "rule": None,
        "events": [],
        "mirrored": [],
    }
