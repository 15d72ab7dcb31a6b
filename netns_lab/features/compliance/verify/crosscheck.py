"""The model against the dataplane: every entry the kernel holds compared with what the topology
compiles to, each difference named by its place (node, port, map, key).

Read only: maps are looked up, TC filters and FDB tables dumped; nothing is written.
  - ports: every switch port of every host and physical switch exists, runs the programs of
    its role on both hooks, and holds its VLAN policy (`ports` map);
  - firewall: every vNIC's settings and source addresses (`vnics`, `vnic_addrs`), and the live
    generation of `policy`, `ipcache` and `defaults` against `fwpolicy.compile` of the model.
    Identity numbers depend on the history of live changes, so identities are compared by the
    prefixes that map to them, rows by those prefixes;
  - mirror sessions and the mirror settings of every port; team members (one active per team);
  - overlay tables of every VTEP (the check of `nlab overlay check`).
"""

from __future__ import annotations

import ctypes
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any

from dataplane import abi, fwpolicy, lpm, syscalls, tc
from dataplane.firewall import vnic_entry
from dataplane.mirror import port_entry, session_entry
from dataplane.switch import SwitchDataplane
from netns_lab import encoding
from netns_lab.features.firewall import plan as fwplan
from netns_lab.features.mirror import live as mirror_live
from netns_lab.features.mirror import plan as mirror_plan
from netns_lab.features.team import plan as team_plan
from netns_lab.features.vlan import plan as vlan_plan
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.running import HostPlane, RunningLab
from netns_lab.lab.state import pin_dir
from netns_lab.lab.status import expected_programs
from netns_lab.topology import names
from netns_lab.topology.model import Topology

Finding = dict[str, Any]
MAX_PER_MAP = 20  # findings listed per map and node; the rest are counted


def finding(what: str, where: str, expected: Any, observed: Any) -> Finding:
    return {"what": what, "where": where, "expected": expected, "observed": observed}


# -- ports, programs and VLAN policy -----------------------------------------------------------------
def _vlan_text(port: abi.Port) -> str:
    if port.mode == abi.Mode.ACCESS:
        text = f"access {port.access_vid}"
    else:
        allowed = [v for v in range(1, 4095) if port.allowed[v >> 6] >> (v & 63) & 1]
        text = f"trunk [{', '.join(map(str, allowed))}]" if allowed else "plain"
        text += " untagged" if port.flags & abi.PORT_F_UNTAGGED else " tagged only"
    return text + (" guard" if port.flags & abi.PORT_F_GUARD else "")


def _ports(topo: Topology, node: str, plan: list[vlan_plan.SwitchPort], dp: SwitchDataplane) -> list[Finding]:
    found = []
    with Netlink(names.namespace(topo.lab, node)) as nl:
        links = {link.name: link for link in nl.links()}
        sock = nl.tc_socket()
        for p in plan:
            where = f"{node} port {p.name}"
            link = links.get(p.name)
            if link is None:
                found.append(finding("port missing", where, "present", "absent"))
                continue
            for hook, want in expected_programs(p.role).items():
                have = tc.attached(sock, link.index, hook)
                if have != want:
                    found.append(
                        finding("program not attached", f"{where} {hook}", want or "none", have or "none")
                    )
            live, model = dp.port(link.index), p.vlans.to_abi()
            if bytes(live) != bytes(model):
                found.append(
                    finding(
                        "VLAN policy",
                        f"{where} (map ports, key {link.index})",
                        _vlan_text(model),
                        _vlan_text(live),
                    )
                )
    return found


def ports(lab: RunningLab) -> list[Finding]:
    topo = lab.topo
    found = []
    for h in lab.hosts:
        found += _ports(topo, h.host, vlan_plan.host_ports(topo, h.host), h.dataplane)
        found += _mirror_port(topo, h)
    for sw in topo.switches:
        with SwitchDataplane.open(pin_dir(topo.lab) / sw.name) as dp:
            found += _ports(topo, sw.name, vlan_plan.switch_ports(topo, sw.name), dp)
    return found


def _mirror_port(topo: Topology, h: HostPlane) -> list[Finding]:
    far = names.MIRROR_PORT[1]
    if far not in h.ifindexes:
        return [finding("port missing", f"{h.host} mirror port {far}", "present", "absent")]
    with Netlink(names.namespace(topo.lab, h.host)) as nl:
        sock = nl.tc_socket()
        found = []
        for hook, want in expected_programs("mirror").items():
            have = tc.attached(sock, h.ifindexes[far], hook)
            if have != want:
                found.append(
                    finding(
                        "program not attached", f"{h.host} port {far} {hook}", want or "none", have or "none"
                    )
                )
    return found


# -- the NIC firewall ------------------------------------------------------------------------------------
Net = IPv4Network | IPv6Network


def _ipcache_net(key: lpm.IpcacheKey) -> Net:
    size = 4 if key.family == lpm.FAMILY_V4 else 16
    return ip_network((ip_address(bytes(key.addr[:size])), key.prefixlen - abi.IPCACHE_FIXED_BITS))


def _peer(identity: int, classes: dict[int, frozenset[Net]]) -> str:
    if identity == lpm.WILDCARD:
        return "any"
    if identity == 0:
        return "world"
    return ",".join(sorted(map(str, classes.get(identity, frozenset())))) or f"identity {identity}"


Row = tuple[int, int, int, str, int, int]  # endpoint, direction, proto, peer, port, port bits


def _rows(policy: dict[lpm.PolicyPrefix, tuple[int, str, int]], classes: dict[int, frozenset[Net]]) -> dict:
    return {
        (k.endpoint, k.direction, k.proto, _peer(k.identity, classes), k.port, k.port_bits): v
        for k, v in policy.items()
    }


def _classes(ipcache: dict[Net, int]) -> dict[int, frozenset[Net]]:
    found: dict[int, set[Net]] = {}
    for net, identity in ipcache.items():
        found.setdefault(identity, set()).add(net)
    return {i: frozenset(nets) for i, nets in found.items()}


def _live_policy(
    fw_maps: dict[str, int], gen: int
) -> tuple[dict[Net, int], dict[lpm.PolicyPrefix, tuple[int, str, int]]]:
    ipcache = {
        _ipcache_net(k): v.identity
        for k, v in syscalls.map_items(fw_maps["ipcache"], lpm.IpcacheKey, lpm.IpcacheValue)
        if k.gen == gen
    }
    policy = {
        lpm.PolicyPrefix(
            k.endpoint, k.direction, k.proto, k.identity, k.port, k.prefixlen - abi.POLICY_FIXED_BITS
        ): (
            v.rule,
            lpm.ACTION_NAMES.get(v.verdict, str(v.verdict)),
            v.rank,
        )
        for k, v in syscalls.map_items(fw_maps["policy"], lpm.PolicyKey, lpm.PolicyValue)
        if k.gen == gen
    }
    return ipcache, policy


def _row_text(row: Row, endpoints: dict[int, str]) -> str:
    endpoint, direction, proto, peer, port, bits = row
    span = 1 << (lpm.PORT_BITS - bits)
    ports = (
        "any port"
        if span == 1 << lpm.PORT_BITS
        else (f"port {port}" if span == 1 else f"ports {port}-{port + span - 1}")
    )
    proto_name = {v: k for k, v in lpm.PROTOCOLS.items()}.get(proto, "other")
    way = "in" if direction == lpm.DIRECTIONS["in"] else "out"
    return f"{endpoints.get(endpoint, endpoint)} {way} {proto_name} {ports} peer {peer}"


def _verdict_text(v: tuple[int, str, int] | None) -> str | None:
    if v is None:
        return None
    return f"{v[1]} ({encoding.rule_text(encoding.rule_field(v[0]))})"


def firewall(lab: RunningLab, h: HostPlane) -> list[Finding]:
    topo = lab.topo
    compiled = fwpolicy.compile(fwplan.host_policy(topo, h.host))
    gen = h.fw.config().generation & 1
    ipcache, policy = _live_policy(h.dataplane.maps, gen)
    endpoints = {eid: encoding.nic_name(vm, idx) for (vm, idx), eid in fwplan.endpoint_ids(topo).items()}
    found: list[Finding] = []
    want_classes, have_classes = _classes(dict(compiled.ipcache)), _classes(ipcache)
    where = f"{h.host} map ipcache (generation {gen})"
    for net in sorted(set(compiled.ipcache) | set(ipcache), key=str):
        want = want_classes.get(compiled.ipcache.get(net, -1))
        have = have_classes.get(ipcache.get(net, -1))
        if want != have:
            found.append(
                finding(
                    "peer classes",
                    f"{where}, key {net}",
                    sorted(map(str, want)) if want else None,
                    sorted(map(str, have)) if have else None,
                )
            )
    want_rows = _rows(
        {k: (v.rule_id or 0, v.action, v.rank) for k, v in compiled.policy.items()}, want_classes
    )
    have_rows = _rows(policy, have_classes)
    rows = [
        r for r in sorted(set(want_rows) | set(have_rows), key=str) if want_rows.get(r) != have_rows.get(r)
    ]
    for row in rows:
        found.append(
            finding(
                "firewall rule",
                f"{h.host} map policy (generation {gen}), key {_row_text(row, endpoints)}",
                _verdict_text(want_rows.get(row)),
                _verdict_text(have_rows.get(row)),
            )
        )
    found += _defaults(h, gen, dict(compiled.defaults), endpoints)
    found += _vnics(topo, h)
    return _capped(found)


def _defaults(
    h: HostPlane, gen: int, want: dict[tuple[int, str], str], endpoints: dict[int, str]
) -> list[Finding]:
    found = []
    value = ctypes.c_uint8()
    for endpoint in range(abi.MAX_ENDPOINTS):
        for direction, code in lpm.DIRECTIONS.items():
            slot = (gen * abi.MAX_ENDPOINTS + endpoint) * 2 + code
            syscalls.map_lookup(h.dataplane.maps["defaults"], ctypes.c_uint32(slot), value)
            have = lpm.ACTION_NAMES.get(value.value, str(value.value))
            expected = want.get((endpoint, direction), "deny")
            if have != expected:
                name = endpoints.get(endpoint, f"endpoint {endpoint}")
                found.append(
                    finding(
                        "firewall default",
                        f"{h.host} map defaults, key {slot} ({name} {direction})",
                        expected,
                        have,
                    )
                )
    return found


def _vnics(topo: Topology, h: HostPlane) -> list[Finding]:
    found = []
    for vm in topo.vms:
        if vm.host != h.host:
            continue
        for nic in vm.nics:
            port = names.vm_port(vm.name, nic.index)
            ifindex = h.ifindexes.get(port)
            if ifindex is None:
                continue  # reported with the ports
            s = fwplan.vnic_settings(topo, vm, nic)
            want = vnic_entry(
                nic.mac,
                s.endpoint,
                s.port_security,
                s.any_source,
                s.endpoint != 0,
                list(s.addresses),
                s.dhcp_server,
            )
            have = abi.Vnic()
            syscalls.map_lookup(h.dataplane.maps["vnics"], ctypes.c_uint32(ifindex), have)
            if bytes(have) != bytes(want):
                found.append(
                    finding(
                        "port security",
                        f"{h.host} port {port} (map vnics, key {ifindex})",
                        _vnic_text(want),
                        _vnic_text(have),
                    )
                )
            found += _sources(h, port, ifindex, set(s.addresses))
    return found


def _vnic_text(v: abi.Vnic) -> str:
    flags = [
        name
        for bit, name in (
            (abi.VNIC_F_PORTSEC, "port-security"),
            (abi.VNIC_F_FIREWALL, "firewall"),
            (abi.VNIC_F_ANY_SOURCE, "any-source"),
            (abi.VNIC_F_DHCP_SERVER, "dhcp-server"),
        )
        if v.flags & bit
    ]
    mac = ":".join(f"{b:02x}" for b in v.mac)
    return f"mac {mac} endpoint {v.endpoint} {' '.join(flags) or 'no checks'}"


def _sources(h: HostPlane, port: str, ifindex: int, want: set) -> list[Finding]:
    have = set()
    for key, _ in syscalls.map_items(h.dataplane.maps["vnic_addrs"], abi.AddrKey, ctypes.c_uint8):
        if key.ifindex == ifindex:
            size = 4 if key.family == 4 else 16
            have.add(ip_address(bytes(key.addr[:size])))
    where = f"{h.host} port {port} (map vnic_addrs)"
    extra = [
        finding("source address", f"{where}, key {ip}", None, "allowed")
        for ip in sorted(have - want, key=str)
    ]
    missing = [
        finding("source address", f"{where}, key {ip}", "allowed", None)
        for ip in sorted(want - have, key=str)
    ]
    return extra + missing


def _capped(found: list[Finding]) -> list[Finding]:
    if len(found) <= MAX_PER_MAP:
        return found
    rest = len(found) - MAX_PER_MAP
    return [
        *found[:MAX_PER_MAP],
        finding(f"{rest} more differences", found[0]["where"].split(",")[0], None, None),
    ]


# -- mirrors, teams, overlay ------------------------------------------------------------------------------
def mirrors(lab: RunningLab, h: HostPlane) -> list[Finding]:
    topo = lab.topo
    planned = mirror_plan.plan(topo)[h.host]
    ids = mirror_live.read_ids(topo.lab)
    m = h.dataplane.mirrors
    found = []
    for s in planned.sessions:
        want = session_entry(mirror_live.planned_session(s, lambda port: h.ifindexes[port]))
        have = m.session(ids[s.name])
        if bytes(want) != bytes(have):
            where = f"{h.host} map mirror_sessions, key {ids[s.name]} (session {s.name})"
            found.append(finding("mirror session", where, _session_text(want), _session_text(have)))
    ports = planned.ports(ids)
    for port, ifindex in sorted(h.ifindexes.items()):
        if not 0 < ifindex < abi.MAX_IFINDEX:
            continue
        want_port = port_entry(ports.get(port, []), analyzer=port in planned.analyzers)
        have_port = m.port(ifindex)
        if bytes(want_port) != bytes(have_port):
            where = f"{h.host} port {port} (map mirror_ports, key {ifindex})"
            found.append(finding("mirror port", where, _port_text(want_port), _port_text(have_port)))
    return found


def _session_text(s: abi.MirrorSession) -> str:
    return (
        f"dest ifindex {s.dest} via {s.ifindex} taps {s.taps:#x} snaplen {s.snaplen}"
        f" sample {s.sample} vlan {s.vlan} flags {s.flags:#x}"
    )


def _port_text(p: abi.MirrorPort) -> str:
    sessions = [p.session[i] for i in range(p.nr)]
    return f"sessions {sessions} taps {p.taps:#x}" + (
        " analyzer" if p.flags & abi.MIRROR_PORT_ANALYZER else ""
    )


def teams(lab: RunningLab, h: HostPlane) -> list[Finding]:
    members = h.dataplane.team.members()
    found = []
    planned: set[int] = set()
    for t in team_plan.teams(lab.topo, h.host):
        indexes = {m: h.ifindexes.get(m) for m in t.members}
        planned |= {i for i in indexes.values() if i is not None}
        for m, i in indexes.items():
            if i is None or i not in members:
                found.append(
                    finding(
                        "team member",
                        f"{h.host} team {t.name} member {m} (map team_state)",
                        "member",
                        "not a member",
                    )
                )
        active = [m for m, i in indexes.items() if members.get(i or -1)]
        if len(active) != 1:
            found.append(
                finding(
                    "team active member",
                    f"{h.host} team {t.name} (map team_state)",
                    "exactly one active",
                    active or "none",
                )
            )
    by_index = {i: name for name, i in h.ifindexes.items()}
    for i in sorted(set(members) - planned):
        found.append(
            finding(
                "team member",
                f"{h.host} port {by_index.get(i, i)} (map team_state, key {i})",
                "not a member",
                "member",
            )
        )
    return found


def overlay(lab: RunningLab) -> list[Finding]:
    if not lab.topo.segments:
        return []
    from netns_lab.features.overlay import controller, install

    drift = controller.check(lab.lab, install.plan_of(lab.topo)) + controller.check(
        lab.lab, install.evpn_plan(lab.topo)
    )
    return [
        finding(
            f"overlay {c.table} entry: {c.action}", f"{c.host} {c.dev} {c.table}, key {c.key}", c.want, c.have
        )
        for c in drift
    ]


def run(lab: RunningLab) -> list[Finding]:
    """Every difference between the model and the kernel, ports first."""
    found = ports(lab)
    for h in lab.hosts:
        found += firewall(lab, h) + mirrors(lab, h) + teams(lab, h)
    return found + overlay(lab)
