"""Build the firewall placements' part of the model: physical firewall ``appliances``, the
``firewall.placement`` of the lab and ``firewall.placements`` per tier (security group).

An appliance's NICs are named eth0, eth1... in the order they are declared; each is cabled to an
access port of the appliance's switch (this kernel has no 802.1Q devices, so an appliance routes
between VLANs with one interface per VLAN rather than one tagged trunk).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from netns_lab.topology.model import Appliance, ApplianceNic, FirewallSettings, IfAddr, Route


class Values(Protocol):
    """What the converter parses (topology.convert.Converter), collecting what does not."""

    def vlan(self, path: str, ref: Any) -> int | None: ...
    def interface(self, path: str, text: str | None) -> IfAddr | None: ...
    def routes(self, path: str, raw: list[dict[str, str]]) -> tuple[Route, ...]: ...


def appliance(conv: Values, name: str, raw: dict[str, Any]) -> Appliance:
    path = f"appliances.{name}"
    nics = tuple(
        ApplianceNic(
            f"eth{index}",
            conv.vlan(f"{path}.nics[{index}].vlan", nic.get("vlan")),
            conv.interface(f"{path}.nics[{index}].ip", nic.get("ip")),
        )
        for index, nic in enumerate(raw["nics"])
    )
    return Appliance(name, raw["switch"], nics, conv.routes(f"{path}.routes", raw.get("routes", [])))


def settings(base: FirewallSettings, raw: Any) -> FirewallSettings:
    """The placement fields of ``firewall`` (the schema checked their values)."""
    if not isinstance(raw, dict):
        return base
    tiers = raw.get("placements") or {}
    return replace(
        base,
        placement=raw.get("placement") or "kernel",
        placements=tuple((str(group), str(where)) for group, where in tiers.items()),
    )
