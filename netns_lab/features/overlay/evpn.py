"""BGP EVPN for the overlay, the pure half: FRR configuration text and the routes FRR reports.

Every VTEP host runs zebra + bgpd with one iBGP session (one ASN for the lab) to the route
reflector; `advertise-all-vni` makes zebra export every VNI it finds (a `vxlan` device with a
`local` address enslaved to a bridge) and bgpd advertise:
  type-3 (inclusive multicast) per hosted VNI: "send this VNI's BUM frames to my VTEP", which
         zebra on the other VTEPs turns into a head-end replication FDB entry
         (00:00:00:00:00:00 dst VTEP) on their `vx-<vni>`;
  type-2 (MAC/IP) per MAC the bridge learned on a local port, which becomes an `extern_learn`
         FDB entry (MAC dst VTEP) on the other VTEPs.
The route reflector has no VNI of its own: it only reflects between its clients, so n VTEPs
need n sessions, not n*(n-1)/2.

Input is plain data (names, addresses, ASN), so this module is tested without root; the
daemons are run by `netns_lab.features.overlay.frr`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from netns_lab.topology.model import Topology

ASN_RANGE = range(1, 2**32)  # 4-byte ASNs (RFC 6793); 0 is reserved
_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
PEER_GROUP = "vteps"  # the route reflector's clients
# Faster than FRR's datacenter defaults (3 s keepalive, 9 s hold, 10 s connect retry): a lab's
# sessions come up while the other side may still be starting, and a retry every 10 s would be
# most of a test's wait.
CONNECT_RETRY_S = 1
TYPE_MACIP, TYPE_MULTICAST = 2, 3
ZERO_MAC = "00:00:00:00:00:00"  # the FDB key of a head-end replication entry
Config = dict[str, str]  # daemon ("zebra", "bgpd") -> its config file's text


class EvpnConfigError(ValueError):
    """A value that cannot go into an FRR configuration (the text names the field)."""


@dataclass(frozen=True)
class Vtep:
    """One EVPN speaker: a host with a VTEP address, peering with the route reflector."""

    host: str
    ip: IPv4Address
    asn: int
    route_reflector: IPv4Address


@dataclass(frozen=True)
class Reflector:
    """The route reflector: reflects to every client it peers with, advertises nothing of its own.

    `clients` are peers it also connects to; `listen` ranges accept sessions from any VTEP
    address inside them (for VTEPs it does not know by address, e.g. another machine's part).
    """

    name: str
    ip: IPv4Address
    asn: int
    clients: tuple[IPv4Address, ...] = ()
    listen: tuple[IPv4Network, ...] = ()
    vnis: bool = False  # also a VTEP (a host as reflector): advertise its own VNIs too


@dataclass(frozen=True)
class EvpnRoute:
    """A type-2 or type-3 EVPN route as bgpd holds it (best path), with the VTEP it points to."""

    type: int  # TYPE_MACIP or TYPE_MULTICAST
    vni: int
    vtep: IPv4Address  # next hop: the VTEP that originated it
    rd: str
    mac: str | None = None  # type-2 only
    ip: str | None = None  # type-2 with an IP only
    local: bool = False  # originated here

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "vni": self.vni,
            "vtep": str(self.vtep),
            "rd": self.rd,
            "mac": self.mac,
            "ip": self.ip,
            "origin": "local" if self.local else "bgp",
        }


def _check(what: str, host: str, asn: int) -> None:
    if not _HOSTNAME.fullmatch(host):
        raise EvpnConfigError(f"{what}: {host!r} is not usable as an FRR hostname")
    if asn not in ASN_RANGE:
        raise EvpnConfigError(f"{what}.asn: {asn} is not in 1..{ASN_RANGE.stop - 1}")


def _configs(name: str, bgp: list[str]) -> Config:
    # One file per daemon: each rejects (and logs as errors) the other's commands. Logging is
    # set on the command line (frr.py), so that config errors are logged as well.
    preamble = ["frr defaults datacenter", f"hostname {name}", "log timestamp precision 3", "!"]
    # A routed underlay reaches the other side through a default route (a host's `gateway:`),
    # which zebra does not resolve next hops through unless told: the reflector would stay
    # unreachable for bgpd (session Active forever) and VTEPs behind routers unusable.
    zebra = [*preamble, "ip nht resolve-via-default", "!"]
    return {"zebra": "\n".join(zebra) + "\n", "bgpd": "\n".join([*preamble, *bgp]) + "\n"}


def vtep_config(vtep: Vtep) -> Config:
    """The configs of a VTEP host's daemons."""
    _check(f"host {vtep.host}", vtep.host, vtep.asn)
    if vtep.ip == vtep.route_reflector:
        raise EvpnConfigError(f"host {vtep.host}: VTEP {vtep.ip} is the route reflector's address")
    rr = vtep.route_reflector
    bgp = [
        f"router bgp {vtep.asn}",
        f" bgp router-id {vtep.ip}",
        " no bgp default ipv4-unicast",
        f" neighbor {rr} remote-as {vtep.asn}",
        # The session runs from the VTEP address, which the reflector knows (or listens for),
        # whatever interface the route to it leaves by.
        f" neighbor {rr} update-source {vtep.ip}",
        f" neighbor {rr} timers connect {CONNECT_RETRY_S}",
        " !",
        " address-family l2vpn evpn",
        f"  neighbor {rr} activate",
        "  advertise-all-vni",
        " exit-address-family",
        "exit",
        "!",
    ]
    return _configs(vtep.host, bgp)


def reflector_config(rr: Reflector) -> Config:
    """The configs of the route reflector's daemons: every client in one peer group; no VNI of
    its own unless it is a VTEP host too."""
    _check(f"router {rr.name}", rr.name, rr.asn)
    if not rr.clients and not rr.listen:
        raise EvpnConfigError(f"router {rr.name}: a route reflector needs clients or a listen range")
    if rr.ip in rr.clients:
        raise EvpnConfigError(f"router {rr.name}: {rr.ip} is its own address, not a client")
    group = PEER_GROUP
    bgp = [
        f"router bgp {rr.asn}",
        f" bgp router-id {rr.ip}",
        " no bgp default ipv4-unicast",
        f" neighbor {group} peer-group",
        f" neighbor {group} remote-as {rr.asn}",
        f" neighbor {group} update-source {rr.ip}",
        f" neighbor {group} timers connect {CONNECT_RETRY_S}",
        *(f" bgp listen range {net} peer-group {group}" for net in rr.listen),
        *(f" neighbor {ip} peer-group {group}" for ip in sorted(set(rr.clients))),
        " !",
        " address-family l2vpn evpn",
        f"  neighbor {group} activate",
        f"  neighbor {group} route-reflector-client",
        *(["  advertise-all-vni"] if rr.vnis else []),
        " exit-address-family",
        "exit",
        "!",
    ]
    return _configs(rr.name, bgp)


def part_configs(
    asn: int,
    reflector: tuple[str, IPv4Address],
    vteps: Mapping[str, IPv4Address],
    reflector_here: bool = True,
    listen: Sequence[IPv4Network] = (),
) -> dict[str, Config]:
    """node -> configs of one lab part: its VTEP hosts, and the reflector if it is placed here
    (peering with these VTEPs by address and with other parts' VTEPs by `listen` range)."""
    rr_name, rr_ip = reflector
    configs = {host: vtep_config(Vtep(host, ip, asn, rr_ip)) for host, ip in vteps.items()}
    if reflector_here:
        configs[rr_name] = reflector_config(
            Reflector(rr_name, rr_ip, asn, tuple(vteps.values()), tuple(listen))
        )
    return configs


def from_topology(topo: Topology, machine: str | None = None) -> dict[str, Config]:
    """node -> configs for the EVPN nodes one machine builds (None: the whole lab): each of its
    hosts that hosts an `evpn` segment, and the route reflector if the part builds it.

    The reflector peers with every VTEP of the lab by address, the other machines' too (every
    part reads the same topology file), from one address: its first IPv4 NIC's (a router) or
    its VTEP (a host, which then also advertises its own VNIs); VTEPs on other subnets reach it
    through their gateway. Routers name no machine: with `machine` given, the reflector is
    included only when it is one of that machine's hosts (the integrator places routers).
    """
    evpn_vnis = {s.name for s in topo.segments if s.mode == "evpn"}
    vteps: dict[str, IPv4Address] = {}
    for host in topo.hosts:
        ip = topo.vtep_ip(host.name)
        if ip is not None and any(s.name in evpn_vnis for s in topo.host_segments(host.name)):
            vteps[host.name] = ip
    if not vteps:
        return {}
    rr_name = topo.overlay.route_reflector
    if rr_name is None:
        raise EvpnConfigError("overlay.route_reflector: evpn segments need a route reflector")
    rr_ip = reflector_address(topo, rr_name)
    here = {h.name for h in topo.hosts if machine is None or h.machine == machine}
    asn = topo.overlay.asn
    configs = {
        h: vtep_config(Vtep(h, ip, asn, rr_ip)) for h, ip in vteps.items() if h in here and h != rr_name
    }
    if machine is None or rr_name in here:
        clients = tuple(ip for h, ip in vteps.items() if h != rr_name)
        configs[rr_name] = reflector_config(Reflector(rr_name, rr_ip, asn, clients, vnis=rr_name in vteps))
    return configs


def reflector_address(topo: Topology, name: str) -> IPv4Address:
    router = next((r for r in topo.routers if r.name == name), None)
    if router is not None:
        ip = next((n.ip.ip for n in router.nics if isinstance(n.ip.ip, IPv4Address)), None)
    else:
        ip = topo.vtep_ip(name) if any(h.name == name for h in topo.hosts) else None
    if ip is None:
        raise EvpnConfigError(f"overlay.route_reflector: {name!r} has no IPv4 underlay address")
    return ip


# -- what bgpd reports --------------------------------------------------------------------------
def established(summary: dict[str, Any], peers: Iterable[IPv4Address | str]) -> dict[str, str]:
    """Each asked-for peer's session state in `show bgp l2vpn evpn summary json` ("" if unknown)."""
    known = summary.get("peers", {})
    return {str(p): known.get(str(p), {}).get("state", "") for p in peers}


def parse_routes(table: dict[str, Any]) -> list[EvpnRoute]:
    """The best type-2/type-3 paths of `show bgp l2vpn evpn route json`.

    The JSON is keyed by route distinguisher, then by prefix text (`[2]:[0]:[48]:[MAC]`,
    `[3]:[0]:[32]:[VTEP]`); each prefix holds path groups with the route's fields. The VNI is
    not in the prefix: it is the route target (`RT:ASN:VNI`, auto-derived by FRR). A VTEP holds
    routes of VNIs it does not host too (the reflector sends all); only hosted VNIs reach the
    kernel.
    """
    routes = []
    for rd, prefixes in table.items():
        if not isinstance(prefixes, dict):
            continue  # numPrefix / numPaths counters
        for entry in prefixes.values():
            path = _best(entry.get("paths", [])) if isinstance(entry, dict) else None
            route = _route(rd, path) if path is not None else None
            if route is not None:
                routes.append(route)
    return sorted(routes, key=lambda r: (r.vni, r.type, int(r.vtep), r.mac or ""))


def _best(groups: Sequence[Any]) -> dict[str, Any] | None:
    paths = [p for group in groups for p in (group if isinstance(group, list) else [group])]
    return next((p for p in paths if p.get("bestpath") is True), None)


def _route(rd: str, path: dict[str, Any]) -> EvpnRoute | None:
    kind = path.get("routeType")
    vni = _vni_from_rt(path)
    hops = path.get("nexthops") or []
    if kind not in (TYPE_MACIP, TYPE_MULTICAST) or vni is None or not hops:
        return None
    local = path.get("peerId") == "(unspec)"  # originated by this bgpd
    if kind == TYPE_MULTICAST:
        return EvpnRoute(kind, vni, IPv4Address(path.get("ip", hops[0]["ip"])), rd, local=local)
    return EvpnRoute(kind, vni, IPv4Address(hops[0]["ip"]), rd, path.get("mac"), path.get("ip"), local)


def _vni_from_rt(path: dict[str, Any]) -> int | None:
    for word in path.get("extendedCommunity", {}).get("string", "").split():
        if word.startswith("RT:"):
            with contextlib.suppress(ValueError):
                return int(word.rsplit(":", 1)[1])
    return None


def zebra_fdb(macs: dict[str, Any], vnis: dict[str, Any]) -> dict[int, set[tuple[str, IPv4Address]]]:
    """What zebra programs into each `vx-<vni>`, per VNI: (ZERO_MAC, VTEP) per remote VTEP
    (type-3) and (MAC, VTEP) per remote MAC (type-2), from `show evpn vni json` and
    `show evpn mac vni all json`.

    zebra marks the remote MACs it installs `extern_learn` (kernel/fdb.py reads them as origin
    `bgp`), but its head-end replication entries are plain `permanent` ones, which the kernel
    cannot tell from a hand-made static entry: zebra's own list is how they are known as BGP's.
    """
    table: dict[int, set[tuple[str, IPv4Address]]] = {}
    for key, info in vnis.items():
        if isinstance(info, dict) and info.get("type", "L2") == "L2":
            table[int(key)] = {(ZERO_MAC, IPv4Address(v)) for v in info.get("remoteVteps", [])}
    for key, info in macs.items():
        for mac, entry in (info.get("macs", {}) if isinstance(info, dict) else {}).items():
            if entry.get("type") == "remote" and "remoteVtep" in entry:
                table.setdefault(int(key), set()).add((mac, IPv4Address(entry["remoteVtep"])))
    return table
