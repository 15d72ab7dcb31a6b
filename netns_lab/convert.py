"""Build the model from topology data whose structure the schema has accepted.

Values the schema only knows as strings (addresses, prefixes) are parsed here; a node with a
value that does not parse is reported and left out of the model, like a node with a structural
error, so that the semantic checks only ever see well-formed objects.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_address, ip_interface, ip_network
from typing import Any, TypeVar

from netns_lab.errors import Issue
from netns_lab.model import (
    Host,
    IfAddr,
    IpAddr,
    IpNet,
    Network,
    Nic,
    PNic,
    Route,
    Switch,
    Topology,
    Vm,
    VSwitch,
    default_mac,
)

SECTIONS = ("switches", "networks", "hosts", "vms")  # in build order, as Topology.node_names

Node = TypeVar("Node")


class Converter:
    """Turns one topology's data into a :class:`Topology`, collecting the values that do not parse."""

    def __init__(self, source: str, lab: str) -> None:
        self.source = source
        self.lab = lab
        self.issues: list[Issue] = []

    def topology(self, data: dict[str, Any], broken: set[tuple[str, str]]) -> Topology:
        """The model of every node not in ``broken`` whose values parse."""
        desc = data.get("description")
        return Topology(
            lab=self.lab,
            source=self.source,
            switches=self._section(data, "switches", broken, lambda name, _: Switch(name)),
            networks=self._section(data, "networks", broken, self.network),
            hosts=self._section(data, "hosts", broken, self.host),
            vms=self._section(data, "vms", broken, self.vm),
            description=desc if isinstance(desc, str) else "",
        )

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
            before = len(self.issues)
            node = make(name, raw)
            if len(self.issues) == before:
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

    def host(self, name: str, raw: dict[str, Any]) -> Host:
        pnics = raw.get("pnics") or {}
        vswitches = raw.get("vswitches") or {}
        return Host(
            name=name,
            pnics=tuple(PNic(pnic, p["switch"], p["driver"], p["pci_bus"]) for pnic, p in pnics.items()),
            vswitches=tuple(VSwitch(vs, tuple((v or {}).get("uplinks", ()))) for vs, v in vswitches.items()),
        )

    def vm(self, name: str, raw: dict[str, Any]) -> Vm:
        path = f"vms.{name}"
        return Vm(
            name=name,
            host=raw["host"],
            nics=tuple(self.nic(name, index, nic) for index, nic in enumerate(raw["nics"])),
            role=raw.get("role", "none"),
            gateway=self.address(f"{path}.gateway", raw.get("gateway")),
            routes=self.routes(f"{path}.routes", raw.get("routes", [])),
            nftables=raw.get("nftables"),
        )

    def nic(self, vm: str, index: int, raw: dict[str, Any]) -> Nic:
        mac = raw.get("mac")
        return Nic(
            index=index,
            vswitch=raw["vswitch"],
            mac=mac.lower() if mac else default_mac(self.lab, vm, index),
            ip=self.interface(f"vms.{vm}.nics[{index}].ip", raw.get("ip")),
            vlan=_whole(raw.get("vlan")),
            vni=_whole(raw.get("vni")),
        )

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
        self.issues.append(Issue(self.source, path, reason))


def _whole(value: int | float | None) -> int | None:
    """The schema's ``integer`` admits 10.0; the model holds ints."""
    return None if value is None else int(value)
