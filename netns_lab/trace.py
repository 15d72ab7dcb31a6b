"""`nlab trace`: a crafted packet through the real loaded programs of every port it would cross.

Like ovn-trace, but on the real dataplane: each stage is BPF_PROG_TEST_RUN of the program that
is attached to that port, with the live maps, run inside the port's namespace so that the
program sees the port's own ifindex. The L2 path is worked out from the topology (VM port,
uplink, physical switch ports, the other host's uplink, the target's port); a routed hop ends
the trace at the router or firewall VM that would route it (its nftables is not traced).

A trace is a real run: it counts on the ports it crosses like any packet, and a new flow it
allows leaves a connection entry, which the trace removes again.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Dot1Q, Ether

from dataplane import abi, syscalls, testrun
from dataplane.switch import SwitchDataplane
from netns_lab import model
from netns_lab.kernel import netns
from netns_lab.kernel.netlink import Netlink
from netns_lab.model import Nic, Topology, Vm
from netns_lab.state import pin_dir


class TraceError(ValueError):
    pass


@dataclass(frozen=True)
class Stage:
    node: str  # the switching node (host or physical switch)
    port: str
    program: str
    tagged: bool  # the frame carries its VLAN tag at this stage


def _nic_with_ip(topo: Topology, ip: str) -> tuple[Vm, Nic] | None:
    addr = ip_address(ip)
    return next(
        ((vm, nic) for vm in topo.vms for nic in vm.nics if nic.ip is not None and nic.ip.ip == addr), None
    )


def _next_hop(topo: Topology, vm: Vm, dst: str) -> tuple[Nic, str]:
    """The NIC the packet leaves by and the address it is sent to at L2 (dst or a gateway)."""
    addr = ip_address(dst)
    for nic in vm.nics:
        if nic.ip is not None and addr in nic.ip.network:
            return nic, dst
    for route in vm.routes:
        if addr in route.to:
            return _nic_for(vm, route.via), str(route.via)
    if vm.gateway is not None:
        return _nic_for(vm, vm.gateway), str(vm.gateway)
    raise TraceError(f"--to: {vm.name} has no route to {dst}")


def _nic_for(vm: Vm, gateway: Any) -> Nic:
    return next(n for n in vm.nics if n.ip is not None and gateway in n.ip.network)


def path(topo: Topology, src: Vm, out: Nic, target: Vm, into: Nic) -> list[Stage]:
    tagged = out.vlan is not None
    stages = [Stage(src.host, model.vm_port(src.name, out.index), "port_from_vm", False)]
    if src.host != target.host:
        up_src = topo.host(src.host).vswitch(out.vswitch).uplinks
        up_dst = topo.host(target.host).vswitch(into.vswitch).uplinks
        if not up_src or not up_dst:
            raise TraceError(f"{src.name} and {target.name} are on vSwitches that share no uplink path")
        p_src = next(p for p in topo.host(src.host).pnics if p.name == up_src[0])
        p_dst = next(p for p in topo.host(target.host).pnics if p.name == up_dst[0])
        if p_src.switch != p_dst.switch:
            raise TraceError(
                f"{src.host}.{p_src.name} and {target.host}.{p_dst.name} are on different switches"
            )
        stages += [
            Stage(src.host, p_src.name, "vlan_to_port", tagged),
            Stage(p_src.switch, model.switch_port(src.host, p_src.name), "vlan_from_port", tagged),
            Stage(p_src.switch, model.switch_port(target.host, p_dst.name), "vlan_to_port", tagged),
            Stage(target.host, p_dst.name, "vlan_from_port", tagged),
        ]
    elif out.vswitch != into.vswitch:
        raise TraceError(f"{out.vswitch} and {into.vswitch} of {src.host} are not connected")
    stages.append(Stage(target.host, model.vm_port(target.name, into.index), "port_to_vm", tagged))
    return stages


def _packet(src: Nic, dst_mac: str, dst: str, proto: str, dport: int, sport: int) -> Ether:
    l3 = (
        IPv6(src=str(src.ip.ip), dst=dst) if ip_address(dst).version == 6 else IP(src=str(src.ip.ip), dst=dst)
    )
    if proto == "tcp":
        l4: Any = TCP(sport=sport, dport=dport, flags="S")
    elif proto == "udp":
        l4 = UDP(sport=sport, dport=dport)
    else:
        l4 = ICMPv6EchoRequest(id=sport) if l3.version == 6 else ICMP(type=8, id=sport)
    return Ether(src=src.mac, dst=dst_mac) / l3 / l4


def _with_tag(frame: Ether, vlan: int | None) -> bytes:
    if vlan is None:
        return bytes(frame)
    tagged = Ether(src=frame.src, dst=frame.dst) / Dot1Q(vlan=vlan) / frame.payload
    return bytes(tagged)


def _ct_keys(dp: SwitchDataplane) -> set[bytes]:
    return {bytes(k) for k, _ in syscalls.map_items(dp.maps["conntrack"], abi.CtKey, abi.CtEntry)}


def _forget(dp: SwitchDataplane, before: set[bytes]) -> None:
    """Remove the connection entries the trace created (and their quota share)."""
    for raw in _ct_keys(dp) - before:
        dp.firewall.forget(abi.CtKey.from_buffer_copy(raw))


def _run_stage(topo: Topology, stage: Stage, data: bytes, rules: list[int]) -> dict[str, Any]:
    ns = model.namespace(topo.lab, stage.node)
    with Netlink(ns) as nl:
        ifindex = nl.index(stage.port)
    dp = SwitchDataplane.open(pin_dir(topo.lab) / stage.node)
    try:
        before, hits, conns = dp.counters(ifindex), dp.firewall.rule_hits(rules), _ct_keys(dp)
        with netns.inside(ns):
            result = testrun.run(dp.programs[stage.program], data, ifindex=ifindex)
        after_hits = dp.firewall.rule_hits(rules)
        grown = [r for r in rules if after_hits.get(r, (0, 0))[0] > hits.get(r, (0, 0))[0]]
        reason = _reason(before, dp.counters(ifindex))
        _forget(dp, conns)
    finally:
        dp.close()
    rule = None if not grown or stage.program not in ("port_from_vm", "port_to_vm") else grown[0]
    return {
        "node": stage.node,
        "port": stage.port,
        "program": stage.program,
        "verdict": "pass" if result.passed else "drop",
        "reason": reason,
        "rule": rule if rule else ("default" if grown else None),
    }


def _reason(before: dict, after: dict) -> str | None:
    grown = [k for k in after if after[k].packets > (before[k].packets if k in before else 0)]
    reasons = [reason.label for (_, reason) in grown if reason != abi.Reason.PASS]
    return reasons[0] if reasons else None


def trace(
    topo: Topology, src_vm: str, dst: str, proto: str, dport: int, sport: int = 40000
) -> dict[str, Any]:
    if src_vm not in {v.name for v in topo.vms}:
        raise TraceError(f"vm: no VM {src_vm!r} in lab {topo.lab!r}")
    src = topo.vm(src_vm)
    out, hop = _next_hop(topo, src, dst)
    found = _nic_with_ip(topo, hop)
    if found is None:
        raise TraceError(f"--to: {hop} is not the address of a VM NIC in the lab (networks are not traced)")
    target, into = found
    frame = _packet(out, into.mac, dst, proto, dport, sport)
    rules = [0, *(r.id for r in topo.firewall.rules)]
    doc = []
    for stage in path(topo, src, out, target, into):
        doc.append(_run_stage(topo, stage, _with_tag(frame, out.vlan if stage.tagged else None), rules))
        if doc[-1]["verdict"] == "drop":
            break
    routed = (
        None if hop == dst else {"via": target.name, "role": target.role, "note": "routed there; not traced"}
    )
    return {
        "lab": topo.lab,
        "from": src_vm,
        "to": dst,
        "proto": proto,
        "dport": dport,
        "stages": doc,
        "delivered": all(s["verdict"] == "pass" for s in doc) and routed is None,
        "routed": routed,
    }
