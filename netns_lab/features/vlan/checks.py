"""VM-VN-R1: every host uplink's VLAN profile must match the physical switch port it plugs into.

`check` compares the two sides statically (from the topology); `probe_vlans` proves each VLAN
across each trunk with a real ARP exchange between the lab's own endpoints in that VLAN, on each
side of the trunk. ARP is what no firewall judges (port security passes a VM's own ARP, the NIC
firewall and nftables never see it), so a probe measures the VLAN path and not the security
policy: a VLAN whose VMs may not ping each other is still proven to cross. A probe that is lost
where both sides carry the VLAN is a finding of its own (`probe_findings`), so a non-compliant
verdict always names the trunk and the VLAN: a probe crosses two trunks, and the trace of its
frame through private copies of the dataplanes (netns_lab/observe/trace.py) says which port drops it.
`nlab vlans` shows both; `recommendation` is the static verdict in the shape every feature's
`checks()` returns (`nlab audit`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any, Literal

from netns_lab.observe import probe
from netns_lab.topology import names
from netns_lab.topology.model import PNic, PortProfile, Topology

Severity = Literal["error", "warning"]
RECOMMENDATION = "VM-VN-R1"


@dataclass(frozen=True)
class Trunk:
    """One cable between a vSwitch uplink and a physical switch port, with both profiles."""

    host: str
    pnic: str
    vswitch: str
    switch: str
    port: str
    host_side: PortProfile
    switch_side: PortProfile

    @property
    def name(self) -> str:
        return f"{self.host}.{self.pnic} <-> {self.switch}.{self.port}"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    trunk: str
    vlan: str  # VLAN name, or "untagged"
    reason: str


def trunks(topo: Topology) -> list[Trunk]:
    result = []
    for host in topo.hosts:
        for vs in host.vswitches:
            for uplink in vs.uplinks:
                pnic = next(p for p in host.pnics if p.name == uplink)
                port = names.switch_port(host.name, pnic.name)
                result.append(
                    Trunk(
                        host.name,
                        pnic.name,
                        vs.name,
                        pnic.switch,
                        port,
                        topo.uplink_profile(host.name, vs.name),
                        topo.switch(pnic.switch).port_profile(port),
                    )
                )
    return result


def _carried(profile: PortProfile) -> set[int | None]:
    """Frames a port carries: VLAN ids, None for untagged (an access port carries its VLAN)."""
    if profile.access is not None:
        return {profile.access}
    return set(profile.trunk) | ({None} if profile.untagged else set())


def _label(topo: Topology, vid: int | None) -> str:
    return (
        "untagged"
        if vid is None
        else f"{topo.vlan_name(vid)} ({vid})"
        if topo.vlan_name(vid) != str(vid)
        else str(vid)
    )


def _trunk_findings(topo: Topology, t: Trunk) -> list[Finding]:
    host_vlans, switch_vlans = _carried(t.host_side), _carried(t.switch_side)
    findings = []
    if t.switch_side.access is not None and t.host_side.trunk:
        findings.append(
            Finding(
                "error",
                t.name,
                "-",
                f"{t.switch}.{t.port} is an access port but {t.host}.{t.pnic} trunks tagged VLANs",
            )
        )
    for vid in sorted(host_vlans - switch_vlans, key=lambda v: -1 if v is None else v):
        findings.append(
            Finding(
                "error",
                t.name,
                _label(topo, vid),
                f"{t.host} sends it on {t.pnic} but {t.switch} port {t.port} does not carry it: "
                "its traffic is lost",
            )
        )
    team = topo.host(t.host).vswitch(t.vswitch).team
    if team is not None and "beacon" in team.detection:
        host_vlans.add(None)  # the members' beacons go untagged: the switch port must pass them
    for vid in sorted(switch_vlans - host_vlans, key=lambda v: -1 if v is None else v):
        findings.append(
            Finding(
                "warning",
                t.name,
                _label(topo, vid),
                f"{t.switch} port {t.port} carries it but {t.host}'s {t.vswitch} has no port in it: "
                "the trunk is wider than needed",
            )
        )
    return findings


def check(topo: Topology) -> list[Finding]:
    """Static VM-VN-R1 check of every trunk and of every team's standby path; an empty list means
    every profile matches."""
    return [f for t in trunks(topo) for f in _trunk_findings(topo, t)] + standby_path_findings(topo)


def standby_path_findings(topo: Topology) -> list[Finding]:
    """A team whose members sit on different switches moves its VLANs from one switch to the
    other on a failover: inter-switch links must carry each of them between every two member
    switches, or the VLAN is cut off from what lies behind the other switch after the failover.

    Beacon probing needs untagged frames between the members' switches: the members hear each
    other's beacons, untagged, across the links. A mirror VLAN that no port of the vSwitch uses
    is not required: a mirror session's copies leave through the pNIC its path names
    (``Topology.mirror_path``: the team's first member), not through whichever member is active."""
    findings = []
    for host in topo.hosts:
        for vs in host.vswitches:
            if vs.team is None:
                continue
            members = [p for name in vs.uplinks for p in host.pnics if p.name == name]
            switches = list(dict.fromkeys(p.switch for p in members))
            ports = {vlan for _, vlan in topo.vswitch_ports(host.name, vs.name)}
            profile = topo.uplink_profile(host.name, vs.name)
            mirror_only = {v for v in profile.trunk if v not in ports and vs.trunk is None}
            beacons = {None} if "beacon" in vs.team.detection else set()  # beacons go untagged
            needed = sorted(_carried(profile) - mirror_only | beacons, key=lambda v: -1 if v is None else v)
            for i, here in enumerate(switches):
                for there in switches[i + 1 :]:
                    findings += _standby_gaps(topo, host.name, vs.name, members, (here, there), needed)
    return findings


def _standby_gaps(
    topo: Topology,
    host: str,
    vswitch: str,
    members: list[PNic],
    pair: tuple[str, str],
    needed: list[int | None],
) -> list[Finding]:
    here, there = pair
    on = {s: ", ".join(p.name for p in members if p.switch == s) for s in pair}
    trunk = f"{host}.{vswitch} team: {here} <-> {there}"
    vlans = {v for link in topo.switch_links() for v in (None, *link.profile.trunk, link.profile.access)}
    linked = any(there in topo.reachable(here, v) for v in vlans)
    found = []
    for vid in needed:
        if there in topo.reachable(here, vid):
            continue
        why = (
            f"no inter-switch link path between {here} and {there} carries it"
            if linked
            else f"{here} and {there} are not joined by any inter-switch link"
        )
        found.append(
            Finding(
                "error",
                trunk,
                _label(topo, vid),
                f"{host}'s team {vswitch} carries it through {on[here]} ({here}) and {on[there]} ({there}), "
                f"but {why}: after a failover it no longer reaches what lies behind the other switch",
            )
        )
    return found


def recommendation(topo: Topology) -> dict[str, Any]:
    """VM-VN-R1 as ``{id, status, reason, objects}``: not met while a trunk misses a VLAN its host
    sends (the errors of `check`, as `nlab vlans` judges it); a switch port wider than its host's
    profile is named in the reason of a met verdict, as `nlab vlans` warns of it. It applies "in
    all VLAN deployments": not where no trunk carries a VLAN."""
    all_trunks = trunks(topo)
    if not all_trunks:
        reason = "no vSwitch has an uplink to a physical switch: there is no trunk to match"
        return {"id": RECOMMENDATION, "status": "not applicable", "reason": reason, "objects": []}
    if all(_carried(t.host_side) | _carried(t.switch_side) == {None} for t in all_trunks):
        reason = "no VLAN deployment: every uplink and its switch port carry untagged frames only"
        return {"id": RECOMMENDATION, "status": "not applicable", "reason": reason, "objects": []}
    findings = check(topo)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        objects = list(dict.fromkeys(f.trunk for f in errors))
        reason = "; ".join(f"{f.trunk}: VLAN {f.vlan}: {f.reason}" for f in errors)
        return {"id": RECOMMENDATION, "status": "not met", "reason": reason, "objects": objects}
    reason = f"the VLAN profile of each of the {len(all_trunks)} uplinks matches its physical switch port"
    wider = list(dict.fromkeys(f"{f.trunk} (VLAN {f.vlan})" for f in findings))
    if wider:
        reason += f"; wider than needed on the switch side: {', '.join(wider)}"
    return {"id": RECOMMENDATION, "status": "met", "reason": reason, "objects": []}


# -- live probe ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    node: str  # VM name, or host name for a VMkernel NIC
    host: str | None
    vswitch: str | None
    vlan: int | None
    ip: IPv4Interface | IPv6Interface
    ifname: str  # the interface inside the node's namespace


@dataclass(frozen=True)
class ProbeResult:
    trunk: str
    vlan: str
    outcome: Literal["delivered", "lost", "no-endpoints"]
    src: str | None = None
    dst: str | None = None
    expected: bool = True  # both sides carry the VLAN, so it should be delivered
    method: str | None = None  # arp (IPv4) or ping (IPv6 only endpoints)
    dropped_at: str | None = None  # a lost probe: the port that drops it (a trace of its frame)
    broken_trunk: str | None = None  # the trunk that port belongs to


def endpoints(topo: Topology) -> list[Endpoint]:
    found = [
        Endpoint(vm.name, vm.host, nic.vswitch, nic.vlan, nic.ip, nic.name)
        for vm in topo.vms
        for nic in vm.nics
        if nic.ip is not None
    ]
    found += [
        Endpoint(h.name, h.name, k.vswitch, k.vlan, k.ip, k.name)
        for h in topo.hosts
        for k in h.vmknics
        if k.ip is not None
    ]
    for net in topo.networks:
        profile = topo.switch(net.switch).port_profile(names.network_port(net.name))
        if net.ip is not None and profile.kind != "trunk":
            found.append(Endpoint(net.name, None, None, profile.access, net.ip, names.NETWORK_IFNAME))
    return found


def _pair(topo: Topology, t: Trunk, vid: int | None, eps: list[Endpoint]) -> tuple[Endpoint, Endpoint] | None:
    local = [e for e in eps if e.host == t.host and e.vswitch == t.vswitch and e.vlan == vid]
    remote = [e for e in eps if e.host != t.host and e.vlan == vid]
    local.sort(key=lambda e: e.ip.version)  # IPv4 first: ARP
    for a in local:
        for b in remote:
            if b.ip.network == a.ip.network and b.ip.ip != a.ip.ip:
                return a, b
    return None


def _probe_one(topo: Topology, t: Trunk, vid: int | None, eps: list[Endpoint], timeout: float) -> ProbeResult:
    expected = vid in _carried(t.host_side) & _carried(t.switch_side)
    label = _label(topo, vid)
    pair = _pair(topo, t, vid, eps)
    if pair is None:
        return ProbeResult(t.name, label, "no-endpoints", expected=expected)
    a, b = pair
    ns = names.namespace(topo.lab, a.node)
    if a.ip.version == 4:
        method, ok = "arp", probe.arp(ns, a.ifname, str(a.ip.ip), str(b.ip.ip), timeout=timeout)
    else:  # no ARP in IPv6; neighbour discovery is ICMPv6, which a NIC firewall may judge
        method, ok = "ping", probe.ping(ns, str(b.ip.ip), count=2, timeout=timeout)
    result = ProbeResult(
        t.name,
        label,
        "delivered" if ok else "lost",
        f"{a.node} {a.ip.ip}",
        f"{b.node} {b.ip.ip}",
        expected=expected,
        method=method,
    )
    if not ok and expected and method == "arp" and a.node in {vm.name for vm in topo.vms}:
        return _located(topo, result, a, b)
    return result


def _located(topo: Topology, result: ProbeResult, a: Endpoint, b: Endpoint) -> ProbeResult:
    """Where the lost probe's ARP request is dropped: its frame traced through the ports of the
    path on private copies of the dataplanes (`nlab trace`'s machinery, no mark left). The probe
    crosses two trunks; this says which one loses the VLAN."""
    from scapy.layers.l2 import ARP, Ether  # scapy is slow to import: only for a lost probe

    from netns_lab.observe import trace

    vm = topo.vm(a.node)
    out = next(n for n in vm.nics if n.name == a.ifname)
    request = Ether(src=out.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        hwsrc=out.mac, psrc=str(a.ip.ip), pdst=str(b.ip.ip)
    )
    try:
        drop = trace.first_drop(topo, vm, out, str(b.ip.ip), request)
    except trace.TraceError:
        return result
    if drop is None:
        return result
    where = f"{drop['node']} {drop['port']} {drop['program']} ({drop['reason'] or 'drop'})"
    owner = next(
        (
            t.name
            for t in trunks(topo)
            if (drop["kind"] == "uplink" and (t.host, t.pnic) == (drop["node"], drop["port"]))
            or (drop["kind"] == "switch-port" and (t.switch, t.port) == (drop["node"], drop["port"]))
        ),
        None,
    )
    return replace(result, dropped_at=where, broken_trunk=owner)


def probe_findings(results: list[ProbeResult]) -> list[Finding]:
    """An error for each VLAN both sides of a trunk carry that a probe could not get across,
    on the trunk that loses it where a trace of the probe found it (once per trunk and VLAN)."""
    found: dict[tuple[str, str], Finding] = {}
    for r in results:
        if not (r.expected and r.outcome == "lost"):
            continue
        trunk = r.broken_trunk or r.trunk
        where = f", dropped at {r.dropped_at}" if r.dropped_at else ""
        found.setdefault(
            (trunk, r.vlan),
            Finding(
                "error",
                trunk,
                r.vlan,
                f"the live probe was lost: {r.src} got no {r.method} answer from {r.dst}{where}, "
                "though both sides of the trunk are configured to carry the VLAN",
            ),
        )
    return list(found.values())


def probe_vlans(topo: Topology, timeout: float = 1.0) -> list[ProbeResult]:
    """Probe across every trunk in every VLAN either side carries; lost means the VLAN does not cross.

    Probes run in parallel threads: each enters its source namespace on its own thread only."""
    eps = endpoints(topo)
    jobs = [
        (t, vid)
        for t in trunks(topo)
        for vid in sorted(
            _carried(t.host_side) | _carried(t.switch_side), key=lambda v: -1 if v is None else v
        )
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda job: _probe_one(topo, job[0], job[1], eps, timeout), jobs))
