"""The NIC firewall's maps of one host against the model: the live generation of `policy`,
`ipcache` and `defaults` against `fwpolicy.compile` of the host's policy, and every vNIC's
port-security settings (`vnics`) and source addresses (`vnic_addrs`). Read only.

Identity numbers depend on the history of live changes (a live install keeps the numbers of
unchanged classes), so identities are compared by the prefixes that map to them, and policy
rows by those prefixes.
"""

from __future__ import annotations

import ctypes
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from dataplane import abi, fwpolicy, lpm, syscalls
from dataplane.firewall import vnic_entry
from netns_lab import encoding
from netns_lab.features.compliance.verify.finding import Finding, capped, finding
from netns_lab.features.firewall import plan as fwplan
from netns_lab.lab.running import HostPlane, RunningLab
from netns_lab.topology import names
from netns_lab.topology.model import Topology

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
    return capped(found)


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
