"""Build the port-mirroring part of the model (``mirrors:``) from data the schema has accepted.

Sources are resolved by name against the raw data, like the firewall's references (see
:mod:`netns_lab.topology.convert_firewall`): a session with a reference that does not resolve is reported
and left out. What needs the whole model (the destination's role and tenant, ports per host) is
checked in :mod:`netns_lab.topology.validate_mirror`.
"""

from __future__ import annotations

from typing import Any

from netns_lab.topology.convert_firewall import FirewallConverter, _member
from netns_lab.topology.errors import Issue
from netns_lab.topology.model import MirrorSession, MirrorSource

PORT_GROUP = "give either 'vlan' (a port group, with an optional 'vswitch') or 'group' (a security group)"


class MirrorConverter:
    def __init__(self, source: str, refs: FirewallConverter, vlans: Any) -> None:
        self.source = source
        self.refs = refs  # resolves VM, NIC and security-group names
        self.vlans = vlans  # convert.VlanTable
        self.issues: list[Issue] = []

    def sessions(self, raw: Any, broken: set[tuple[str, str]]) -> tuple[MirrorSession, ...]:
        if not isinstance(raw, dict):
            return ()
        built = []
        for name, session in raw.items():
            if ("mirrors", name) in broken:
                continue
            sources = self.sources(f"mirrors.{name}.source", session["source"])
            if sources is None:
                continue
            dest, vlan = session["dest"], None
            if "vlan" in session:
                vlan = self.vlans.resolve(session["vlan"])
                if not isinstance(vlan, int):
                    if vlan is not None:
                        self.issues.append(Issue(self.source, f"mirrors.{name}.vlan", vlan))
                    continue
            built.append(
                MirrorSession(
                    name=name,
                    sources=sources,
                    dest=dest if isinstance(dest, str) else None,
                    uplink=dest["uplink"] if isinstance(dest, dict) else None,
                    vlan=vlan,
                    direction=session.get("direction", "both"),
                    tap=session.get("tap", "before"),
                    snaplen=int(session.get("snaplen", 0)),
                    sample=int(session.get("sample", 1)),
                )
            )
        return tuple(built)

    def sources(self, path: str, raw: str | list[str] | dict[str, Any]) -> tuple[MirrorSource, ...] | None:
        if isinstance(raw, dict):
            source = self.port_group(path, raw)
            return None if source is None else (source,)
        items = [(path, raw)] if isinstance(raw, str) else [(f"{path}[{i}]", t) for i, t in enumerate(raw)]
        found = []
        for where, text in items:
            vm, nic = _member(text)
            before = len(self.refs.issues)
            if not self.refs.vm_ref(where, vm, nic):
                self.issues += self.refs.issues[before:]
                return None
            found.append(MirrorSource("vm", vm, nic))
        return tuple(dict.fromkeys(found))

    def port_group(self, path: str, raw: dict[str, Any]) -> MirrorSource | None:
        if ("vlan" in raw) == ("group" in raw) or ("vswitch" in raw and "vlan" not in raw):
            self.issues.append(Issue(self.source, path, PORT_GROUP))
            return None
        if "group" in raw:
            before = len(self.refs.issues)
            if not self.refs.group_ref(f"{path}.group", raw["group"]):
                self.issues += self.refs.issues[before:]
                return None
            return MirrorSource("group", raw["group"])
        vid = self.vlans.resolve(raw["vlan"])
        if not isinstance(vid, int):
            if vid is not None:
                self.issues.append(Issue(self.source, f"{path}.vlan", vid))
            return None
        vswitch = tuple(raw["vswitch"].split(".", 1)) if "vswitch" in raw else None
        return MirrorSource("vlan", str(raw["vlan"]), vlan=vid, vswitch=vswitch)  # type: ignore[arg-type]
