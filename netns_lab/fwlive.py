"""The firewall of a running lab: change its policy on every host at once (VM-FW-R3), read its
counters and connections, decode its verdict events (read by the lab's event hub, eventhub.py).

A change is made to the lab's topology (the copy in its state directory), validated exactly like
a topology file, compiled per host and installed beside the live policy with a generation flip
on each host; the state copy is rewritten only when every host took it.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import yaml

from dataplane import abi, fwpolicy
from dataplane.events import wall_time
from dataplane.firewall import Firewall
from dataplane.switch import SwitchDataplane
from netns_lab import encoding, firewall
from netns_lab.kernel.netlink import Netlink
from netns_lab.state import LabState, pin_dir
from netns_lab.topology import loader, names
from netns_lab.topology.model import Topology

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}


class NotRunning(Exception):
    pass


@dataclass
class HostPlane:
    host: str
    dataplane: SwitchDataplane
    ifindexes: dict[str, int]  # interface name -> ifindex in the host namespace

    @property
    def fw(self) -> Firewall:
        return self.dataplane.firewall


class LiveFirewall:
    def __init__(self, lab: str) -> None:
        self.state = LabState.read(lab)
        text = self.state.topology_text() if self.state else None
        if self.state is None or text is None:
            raise NotRunning(lab)
        self.lab, self.text = lab, text
        self.topo = loader.load_text(text, self.state.source or "topology.yaml", lab=lab)
        self.hosts = [self._open(h.name) for h in self.topo.hosts]

    def _open(self, host: str) -> HostPlane:
        dp = SwitchDataplane.open(pin_dir(self.lab) / host)
        with Netlink(names.namespace(self.lab, host)) as nl:
            ifindexes = {link.name: link.index for link in nl.links()}
        return HostPlane(host, dp, ifindexes)

    def close(self) -> None:
        for h in self.hosts:
            h.dataplane.close()

    def __enter__(self) -> LiveFirewall:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- changes -----------------------------------------------------------------------------
    def change(self, edit: Callable[[dict[str, Any]], None]) -> Topology:
        """Apply `edit` to the topology data, validate, install on every host, then record it."""
        data, _ = loader.parse_yaml(self.text, "state")  # the loader's YAML 1.2 reading, not PyYAML's 1.1
        edit(data)
        text = yaml.safe_dump(data, sort_keys=False)
        new = loader.load_text(text, f"{self.lab} (live firewall)", lab=self.lab)
        for h in self.hosts:
            self._install(h, self.topo, new)
        state_file = self.state.dir / "topology.yaml"  # type: ignore[union-attr]
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(state_file)
        self.topo, self.text = new, text
        return new

    def _install(self, h: HostPlane, old: Topology, new: Topology) -> None:
        previous = fwpolicy.compile(firewall.host_policy(old, h.host))
        h.fw.install(fwpolicy.compile(firewall.host_policy(new, h.host), prev=previous), previous=previous)
        for vm in (v for v in new.vms if v.host == h.host):
            for nic in vm.nics:
                v = firewall.vnic_settings(new, vm, nic)
                ifindex = h.ifindexes[names.vm_port(vm.name, nic.index)]
                firewall.install_vnic(h.fw, ifindex, nic, v)

    # -- reading -----------------------------------------------------------------------------
    def rule_hits(self) -> dict[int, tuple[int, int]]:
        ids = [0, *(r.id for r in self.topo.firewall.rules)]
        total: dict[int, tuple[int, int]] = {}
        for h in self.hosts:
            for rule, (packets, nbytes) in h.fw.rule_hits(ids).items():
                p, b = total.get(rule, (0, 0))
                total[rule] = (p + packets, b + nbytes)
        return total

    def events_lost(self) -> int:
        return sum(h.fw.events_lost() for h in self.hosts)

    def connections(self) -> list[dict[str, Any]]:
        by_endpoint = {
            eid: encoding.nic_name(vm, idx) for (vm, idx), eid in firewall.endpoint_ids(self.topo).items()
        }
        rows = []
        for h in self.hosts:
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

    def gc(self) -> int:
        return sum(h.fw.gc() for h in self.hosts)


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


@contextlib.contextmanager
def opened(lab: str) -> Iterator[LiveFirewall]:
    live = LiveFirewall(lab)
    try:
        yield live
    finally:
        live.close()
