"""The firewall of a running lab: its policy installed on a host by a live change (one change
reaches every host: VM-FW-R3), its counters and connections, its verdict events decoded (read by
the lab's event hub, netns_lab.lab.eventhub).

A host's new policy is compiled beside the live one and installed with a generation flip, so no
packet meets half a policy.
"""

from __future__ import annotations

import socket
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

from dataplane import abi, fwpolicy
from dataplane.events import wall_time
from netns_lab import encoding
from netns_lab.features.firewall import plan as firewall
from netns_lab.topology import names
from netns_lab.topology.model import Nic, Topology, Vm

if TYPE_CHECKING:
    from netns_lab.features.base import HostPlane, LiveContext

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}


def install(h: HostPlane, old: Topology, new: Topology) -> None:
    """`new`'s policy and vNIC settings onto one host, beside `old`'s (a generation flip); a host
    whose policy and vNICs `new` leaves as they were is not touched."""
    previous = fwpolicy.compile(firewall.host_policy(old, h.host))
    policy = fwpolicy.compile(firewall.host_policy(new, h.host), prev=previous)
    vnics = _vnics(new, h.host)
    if policy == previous and vnics == _vnics(old, h.host):
        return
    h.fw.install(policy, previous=previous)
    for vm, nic, settings in vnics:
        firewall.install_vnic(h.fw, h.ifindexes[names.vm_port(vm.name, nic.index)], nic, settings)


def _vnics(topo: Topology, host: str) -> list[tuple[Vm, Nic, firewall.VnicSettings]]:
    return [
        (vm, nic, firewall.vnic_settings(topo, vm, nic))
        for vm in topo.vms
        if vm.host == host
        for nic in vm.nics
    ]


# -- reading -----------------------------------------------------------------------------------
def rule_hits(lab: LiveContext) -> dict[int, tuple[int, int]]:
    ids = [0, *(r.id for r in lab.topo.firewall.rules)]
    total: dict[int, tuple[int, int]] = {}
    for h in lab.hosts:
        for rule, (packets, nbytes) in h.fw.rule_hits(ids).items():
            p, b = total.get(rule, (0, 0))
            total[rule] = (p + packets, b + nbytes)
    return total


def events_lost(lab: LiveContext) -> int:
    return sum(h.fw.events_lost() for h in lab.hosts)


def connections(lab: LiveContext) -> list[dict[str, Any]]:
    by_endpoint = {
        eid: encoding.nic_name(vm, idx) for (vm, idx), eid in firewall.endpoint_ids(lab.topo).items()
    }
    rows = []
    for h in lab.hosts:
        for c in h.fw.connections():
            proto = PROTO_NAMES.get(c.proto, str(c.proto))
            rows.append(
                {
                    "host": h.host,
                    "nic": by_endpoint.get(c.endpoint, str(c.endpoint)),
                    "proto": proto,
                    "src": c.src,
                    "dst": c.dst,
                    # an ICMP flow is keyed by (identifier, request type) in the ports' places
                    **encoding.flow_fields(proto, c.sport, c.dport, icmp_type=c.dport, icmp_id=c.sport),
                    "state": c.state,
                    "origin": c.origin,
                    "rule": encoding.rule_field(c.rule),
                    "idle_s": round(c.age_s, 1),
                }
            )
    return rows


def gc(lab: LiveContext) -> int:
    return sum(h.fw.gc() for h in lab.hosts)


def decode(ev: abi.FwEvent, port: str) -> dict[str, Any]:
    """An event as `nlab fw events --json` prints it (see netns_lab.encoding)."""
    reason = abi.Reason(ev.reason) if ev.reason in abi.Reason._value2member_map_ else None
    nic = encoding.nic_of_port(port)
    proto = PROTO_NAMES.get(ev.proto, str(ev.proto))
    doc: dict[str, Any] = {
        "time": round(wall_time(ev.time_ns), 6),
        "vm": nic.split(".")[0] if nic else port,
        "nic": nic or port,
        "port": port,  # the vSwitch port whose program decided, as `nlab status` counts its drops
        "direction": "out" if ev.direction == abi.FwDirection.OUT else "in",
        "verdict": "allow" if ev.verdict == abi.Verdict.ALLOW else "deny",
        "reason": "new-flow" if reason == abi.Reason.PASS else (reason.label if reason else str(ev.reason)),
        "rule": encoding.rule_field(ev.rule, by_policy=reason in (abi.Reason.PASS, abi.Reason.POLICY)),
        "proto": proto,
        "src": None,
        "dst": None,
        # an ICMP query's identifier is in both port fields
        **encoding.flow_fields(proto, ev.sport, ev.dport, icmp_type=ev.icmp_type, icmp_id=ev.sport),
    }
    if ev.family == 4:  # bytes() of the whole array: slicing a ctypes array builds a list of ints
        doc["src"] = socket.inet_ntop(socket.AF_INET, bytes(ev.saddr)[:4])
        doc["dst"] = socket.inet_ntop(socket.AF_INET, bytes(ev.daddr)[:4])
    elif ev.family == 6:
        doc["src"] = str(ip_address(bytes(ev.saddr)))
        doc["dst"] = str(ip_address(bytes(ev.daddr)))
    else:  # refused before its IP header was read: a forged MAC, or ARP
        proto = "arp" if reason == abi.Reason.SPOOF_ARP else "ethernet"
        doc.update(proto=proto, **encoding.flow_fields(proto, None, None))
    return doc
