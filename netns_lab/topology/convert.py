"""Build the model from topology data whose structure the schema has accepted.

Values the schema only knows as strings (addresses, prefixes) are parsed here, and VLAN
references (a name declared in ``vlans:`` or an id) become ids. A node with a value that does
not parse or a reference that does not resolve is reported and left out of the model, like a
node with a structural error, so that the semantic checks only ever see well-formed objects.

What only the raw data shows is checked here too, and reported without leaving the node out:
a trunk that lists a VLAN twice, an access port that also sets ``trunk`` or ``untagged``, a
switch port that carries nothing. Security groups and firewall rules are built by
:mod:`netns_lab.topology.convert_firewall`, the same way; segments, routers and the NICs on
segments by :mod:`netns_lab.topology.convert_overlay`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from ipaddress import ip_address, ip_interface, ip_network
from typing import Any, TypeVar

from netns_lab.topology import convert_placement
from netns_lab.topology.convert_firewall import FirewallConverter, fit_quotas
from netns_lab.topology.convert_mirror import MirrorConverter
from netns_lab.topology.convert_overlay import OverlayConverter, machines
from netns_lab.topology.convert_team import team
from netns_lab.topology.errors import Issue, did_you_mean
from netns_lab.topology.model import (
    Host,
    IfAddr,
    IpAddr,
    IpNet,
    Network,
    Nic,
    PNic,
    PortProfile,
    Route,
    Switch,
    Topology,
    Vlan,
    Vm,
    VmkNic,
    VSwitch,
)
from netns_lab.topology.names import default_mac, vmknic_mac

# in build order, as Topology.node_names
SECTIONS = ("switches", "routers", "networks", "appliances", "hosts", "vms")
KEYED_SECTIONS = (
    *SECTIONS,
    "vlans",
    "security_groups",
    "mirrors",
    "segments",
)  # entries are left out one by one when broken
Declared = Mapping[str, tuple[str, ...] | None]  # names per section; None: not a mapping
VlanRef = int | float | str  # the schema's integer admits 10.0

Node = TypeVar("Node")


class Converter:
    """Turns one topology's data into a :class:`Topology`, collecting the values that do not parse."""

    def __init__(self, source: str, lab: str) -> None:
        self.source = source
        self.lab = lab
        self.issues: list[Issue] = []
        self.vlans = VlanTable(None, set())
        self.overlay = OverlayConverter(self)
        self._failures = 0  # values that do not parse: the node they are in is left out

    def topology(self, data: dict[str, Any], broken: set[tuple[str, str]]) -> Topology:
        """The model of every node not in ``broken`` whose values parse."""
        desc = data.get("description")
        self.vlans = VlanTable(data.get("vlans"), {name for section, name in broken if section == "vlans"})
        firewall = FirewallConverter(self.source, data, broken)
        groups, settings = firewall.security_groups(), firewall.settings(data.get("firewall"))
        settings = convert_placement.settings(settings, data.get("firewall"))
        self.issues += firewall.issues
        mirror = MirrorConverter(self.source, FirewallConverter(self.source, data, broken), self.vlans)
        mirrors = mirror.sessions(data.get("mirrors"), broken)
        self.issues += mirror.issues
        self.overlay.read(data, broken)
        switches = self._section(data, "switches", broken, self.switch)
        routers = self._section(data, "routers", broken, self.overlay.router)
        networks = self._section(data, "networks", broken, self.network)
        appliances = self._section(
            data, "appliances", broken, lambda name, raw: convert_placement.appliance(self, name, raw)
        )
        hosts = self._section(data, "hosts", broken, self.host)
        vms = self._section(data, "vms", broken, self.vm)
        topo = Topology(
            lab=self.lab,
            source=self.source,
            vlans=self.vlans.vlans,
            switches=switches,
            networks=networks,
            hosts=self.overlay.with_segment_vswitches(hosts, vms),
            vms=vms,
            description=desc if isinstance(desc, str) else "",
            security_groups=groups,
            firewall=settings,
            mirrors=mirrors,
            segments=self.overlay.segments,
            routers=routers,
            appliances=appliances,
            overlay=self.overlay.settings,
            machines=machines(data.get("machines")),
        )
        return fit_quotas(topo, firewall.given_limits)

    def _section(
        self,
        data: dict[str, Any],
        section: str,
        broken: set[tuple[str, str]],
        make: Callable[[str, Any], Node],
    ) -> tuple[Node, ...]:
        nodes = data.get(section)
        if not isinstance(nodes, dict):
            return ()
        built = []
        for name, raw in nodes.items():
            if (section, name) in broken:
                continue
            before = self._failures
            node = make(name, raw)
            if self._failures == before:
                built.append(node)
        return tuple(built)

    def network(self, name: str, raw: dict[str, Any]) -> Network:
        path = f"networks.{name}"
        return Network(
            name=name,
            switch=raw["switch"],
            ip=self.interface(f"{path}.ip", raw.get("ip")),
            gateway=self.address(f"{path}.gateway", raw.get("gateway")),
            routes=self.routes(f"{path}.routes", raw.get("routes", [])),
        )

    def switch(self, name: str, raw: dict[str, Any] | None) -> Switch:
        ports = (raw or {}).get("ports") or {}
        path = f"switches.{name}.ports"
        profiles = ((port, self.port_profile(f"{path}.{port}", p or {})) for port, p in ports.items())
        links = (raw or {}).get("links") or {}
        here = f"switches.{name}.links"
        ends = ((peer, self.port_profile(f"{here}.{peer}", p or {})) for peer, p in links.items())
        return Switch(name, ports=tuple(profiles), links=tuple(ends))

    def port_profile(self, path: str, raw: dict[str, Any]) -> PortProfile:
        """An access port, a trunk (untagged frames only if asked), or a plain port."""
        if "access" in raw:
            if "trunk" in raw or "untagged" in raw:
                reason = (
                    "'access' excludes 'trunk' and 'untagged' (an access port carries one VLAN, untagged)"
                )
                self._report(path, reason)
            return PortProfile(access=self.vlan(f"{path}.access", raw["access"]))
        untagged = raw.get("untagged", "trunk" not in raw)
        if not raw.get("trunk") and not untagged:
            self._report(path, "the port carries nothing (no 'trunk' VLANs and 'untagged' is false)")
        return PortProfile(trunk=self.trunk(f"{path}.trunk", raw.get("trunk", [])), untagged=untagged)

    def host(self, name: str, raw: dict[str, Any]) -> Host:
        pnics = raw.get("pnics") or {}
        vswitches = raw.get("vswitches") or {}
        vmknics = raw.get("vmknics") or {}
        return Host(
            name=name,
            pnics=tuple(self.pnic(name, pnic, p) for pnic, p in pnics.items()),
            vswitches=tuple(self.vswitch(name, vs, v or {}) for vs, v in vswitches.items()),
            vmknics=tuple(self.vmknic(name, k, v) for k, v in vmknics.items()),
            vtep=raw.get("vtep"),
            machine=raw.get("machine"),
        )

    def pnic(self, host: str, name: str, raw: dict[str, Any]) -> PNic:
        path = f"hosts.{host}.pnics.{name}"
        return PNic(
            name,
            raw["switch"],
            raw["driver"],
            raw["pci_bus"],
            ip=self.interface(f"{path}.ip", raw.get("ip")),
            gateway=self.address(f"{path}.gateway", raw.get("gateway")),
            routes=self.routes(f"{path}.routes", raw.get("routes", [])),
        )

    def vswitch(self, host: str, name: str, raw: dict[str, Any]) -> VSwitch:
        trunk = raw.get("trunk")
        teaming, problems = team(f"hosts.{host}.vswitches.{name}.team", raw.get("team"))
        for path, reason in problems:
            self._fail(path, reason)
        return VSwitch(
            name=name,
            uplinks=tuple(raw.get("uplinks", ())),
            trunk=None if trunk is None else self.trunk(f"hosts.{host}.vswitches.{name}.trunk", trunk),
            untagged=raw.get("untagged"),
            team=teaming,
        )

    def vmknic(self, host: str, name: str, raw: dict[str, Any]) -> VmkNic:
        path = f"hosts.{host}.vmknics.{name}"
        mac = raw.get("mac")
        return VmkNic(
            name=name,
            vswitch=raw["vswitch"],
            mac=mac.lower() if mac else vmknic_mac(self.lab, host, name),
            ip=self.interface(f"{path}.ip", raw.get("ip")),
            vlan=self.vlan(f"{path}.vlan", raw.get("vlan")),
        )

    def vm(self, name: str, raw: dict[str, Any]) -> Vm:
        path = f"vms.{name}"
        nics = tuple(self.nic(name, index, nic) for index, nic in enumerate(raw["nics"]))
        return Vm(
            name=name,
            host=raw["host"],
            nics=nics,
            role=raw.get("role", "none"),
            gateway=self.address(f"{path}.gateway", raw.get("gateway")),
            routes=self.routes(f"{path}.routes", raw.get("routes", [])),
            nftables=raw.get("nftables"),
            tenant=self.overlay.tenant(name, raw.get("tenant"), nics),
            traits=tuple(raw.get("traits", ())),
        )

    def nic(self, vm: str, index: int, raw: dict[str, Any]) -> Nic:
        mac = raw.get("mac")
        path = f"vms.{vm}.nics[{index}]"
        vlan, segment = None, None
        if "segment" in raw:
            vswitch, vni, segment = self.overlay.attachment(path, raw) or ("", None, None)
        else:
            vswitch, vni = raw["vswitch"], _whole(raw.get("vni"))
            vlan = self.vlan(f"{path}.vlan", raw.get("vlan"))
        return Nic(
            index=index,
            vswitch=vswitch,
            mac=mac.lower() if mac else default_mac(self.lab, vm, index),
            ip=self.interface(f"{path}.ip", raw.get("ip")),
            vlan=vlan,
            vni=vni,
            segment=segment,
            port_security=raw.get("port_security", True),
            allowed_addresses=self.allowed(f"vms.{vm}.nics[{index}].allowed_addresses", raw),
            promiscuous=raw.get("promiscuous", False),
            dhcp_server=raw.get("dhcp_server", False),
        )

    def allowed(self, path: str, nic: dict[str, Any]) -> tuple[IfAddr, ...]:
        """Extra source addresses: an address alone (/32, /128) or a prefix without host bits."""
        found = []
        for index, text in enumerate(nic.get("allowed_addresses", [])):
            try:
                iface = ip_interface(text)
            except ValueError:
                reason = f"{text!r} is not an IP address or prefix, like 10.20.0.100 or 10.20.0.96/28"
                self._fail(f"{path}[{index}]", reason)
                continue
            if iface.ip != iface.network.network_address:
                self._fail(
                    f"{path}[{index}]",
                    f"{text} has host bits set (write {iface.ip} for the address alone, "
                    f"{iface.network} for the whole prefix)",
                )
            else:
                found.append(iface)
        return tuple(found)

    def vlan(self, path: str, ref: VlanRef | None) -> int | None:
        if ref is None:
            return None
        found = self.vlans.resolve(ref)
        if isinstance(found, int):
            return found
        self._failures += 1
        if found is not None:  # None: a VLAN with a broken declaration may be meant, already reported
            self.issues.append(Issue(self.source, path, found))
        return None

    def trunk(self, path: str, refs: list[VlanRef]) -> frozenset[int]:
        first: dict[int, int] = {}
        for index, ref in enumerate(refs):
            vid = self.vlan(f"{path}[{index}]", ref)
            if vid in first:
                self._report(
                    f"{path}[{index}]", f"{self.vlans.label(vid)} is already listed at trunk[{first[vid]}]"
                )
            elif vid is not None:
                first[vid] = index
        return frozenset(first)

    def routes(self, path: str, raw: list[dict[str, str]]) -> tuple[Route, ...]:
        routes = []
        for index, item in enumerate(raw):
            to = self.prefix(f"{path}[{index}].to", item["to"])
            via = self.address(f"{path}[{index}].via", item["via"])
            if to is not None and via is not None:
                routes.append(Route(to, via))
        return tuple(routes)

    def interface(self, path: str, text: str | None) -> IfAddr | None:
        """An address with its prefix length: a bare address is refused, its subnet would be a guess."""
        if text is None:
            return None
        try:
            if "/" in text:
                return ip_interface(text)
        except ValueError:
            pass
        self._fail(
            path, f"{text!r} is not an address with a prefix length, like 10.20.0.11/24 or 2001:db8::11/64"
        )
        return None

    def address(self, path: str, text: str | None) -> IpAddr | None:
        if text is None:
            return None
        try:
            return ip_address(text)
        except ValueError:
            self._fail(path, f"{text!r} is not an IP address")
            return None

    def prefix(self, path: str, text: str) -> IpNet | None:
        """A destination prefix; an address alone is a host route."""
        try:
            network = ip_network(text, strict=False)
        except ValueError:
            self._fail(path, f"{text!r} is not an IP prefix, like 10.30.0.0/24")
            return None
        if network.network_address != ip_interface(text).ip:
            self._fail(path, f"{text} has host bits set (the prefix is {network})")
            return None
        return network

    def _fail(self, path: str, reason: str) -> None:
        """A value that does not parse: the node is left out."""
        self._failures += 1
        self.issues.append(Issue(self.source, path, reason))

    def _report(self, path: str, reason: str) -> None:
        """A problem the model can still represent: the node stays in."""
        self.issues.append(Issue(self.source, path, reason))


class LeftOut:
    """What the model lacks of what the file declares: nodes, VLANs, groups and sessions left
    out for an error already reported, and nodes whose references do not resolve (``mark``).
    The semantic checks see only the model, so a check that reads something left out would
    report its absence as a second, unrelated error: such a check asks here first and does not
    run (its problems show once the first are fixed)."""

    def __init__(self, topo: Topology, declared: Declared) -> None:
        held = {
            "switches": topo.switches,
            "networks": topo.networks,
            "hosts": topo.hosts,
            "vms": topo.vms,
            "vlans": topo.vlans,
            "security_groups": topo.security_groups,
            "mirrors": topo.mirrors,
            "segments": topo.segments,
            "routers": topo.routers,
            "appliances": topo.appliances,
        }
        self.built = {section: {node.name for node in nodes} for section, nodes in held.items()}
        self.declared = declared

    def mark(self, section: str, name: str) -> None:
        """``name`` is in the model but one of its references does not resolve (reported)."""
        self.built[section].discard(name)

    def lacks(self, section: str, name: str) -> bool:
        """Is ``name`` declared (or may it be, in a malformed section) but not in the model?"""
        names = self.declared.get(section, ())
        return name not in self.built[section] and (names is None or name in names)

    def complete(self, section: str) -> bool:
        """Did everything the section declares make it into the model?"""
        names = self.declared.get(section, ())
        return names is not None and set(names) <= self.built[section]


class VlanTable:
    """The VLANs declared in ``vlans:``, turning references (a name or an id) into ids.

    Without VLANs declared (no section, or an empty one) any id is accepted, the schema having
    checked its range, and no name is. A VLAN whose declaration is broken still counts as
    declared: a reference to it cannot be resolved, but it is not reported a second time.
    """

    def __init__(self, raw: Any, broken: set[str]) -> None:
        entries = raw if isinstance(raw, dict) else {}
        self.vlans = tuple(Vlan(name, int(vid)) for name, vid in entries.items() if name not in broken)
        self.broken = broken
        self.malformed = raw is not None and not isinstance(raw, dict)  # every name may be declared
        self.strict = bool(entries)  # an id must be declared

    def resolve(self, ref: VlanRef) -> int | str | None:
        """The id ``ref`` stands for; else why it is unknown, or None if a broken VLAN may be it."""
        ids = {vlan.name: vlan.id for vlan in self.vlans}
        if isinstance(ref, str):
            if ref in ids:
                return ids[ref]
            if ref in self.broken or self.malformed:
                return None
            return f"unknown VLAN {ref!r} ({did_you_mean(ref, ids)}{self._listing()})"
        vid = int(ref)
        if not self.strict or vid in ids.values():
            return vid
        return None if self.broken else f"unknown VLAN {vid} ({self._listing()})"

    def label(self, vid: int) -> str:
        """``VLAN 110 (web)``, or ``VLAN 110`` for an id that has no name."""
        name = next((vlan.name for vlan in self.vlans if vlan.id == vid), None)
        return f"VLAN {vid} ({name})" if name else f"VLAN {vid}"

    def _listing(self) -> str:
        if not self.vlans:
            return "no VLANs are declared"
        return "vlans: " + ", ".join(f"{vlan.name} ({vlan.id})" for vlan in self.vlans)


def _whole(value: int | float | None) -> int | None:
    """The schema's ``integer`` admits 10.0; the model holds ints."""
    return None if value is None else int(value)
