"""Build the overlay's part of the model: ``overlay``, ``segments``, ``routers``, ``machines``,
the NICs that attach to a segment, and the vSwitches of segments.

Run by :class:`~netns_lab.topology.convert.Converter` on data whose structure the schema has
accepted. A NIC names a segment instead of a vSwitch and a VLAN; the loader turns it into an
ordinary, untagged NIC on the segment's own vSwitch ``sg-<vni>``, which it adds to every host
where a VM has a NIC on that segment. So everything that works per vSwitch port (port security,
the NIC firewall, mirroring, port groups) works on a segment without knowing about it; only the
way out of the vSwitch differs (the host's VXLAN device ``vx-<vni>`` instead of a pNIC).

A segment reference is resolved here, like a VLAN reference: one that does not resolve, or a NIC
that also names a vSwitch, a VLAN or a VNI, is reported and its VM left out. A VM takes the tenant
of its segments when it declares none (so that mirrors and promiscuous ports keep tenants apart
on segments too); NICs on two tenants' segments, or on a segment of another tenant than the VM's,
are reported and the VM kept. What needs the whole model (VTEPs, route reflector, unique VNIs,
machines) is checked in :mod:`netns_lab.topology.validate_overlay`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from netns_lab.topology.errors import unknown
from netns_lab.topology.model import (
    OVERLAY_MODES,
    Host,
    IfAddr,
    Nic,
    OverlayMode,
    OverlaySettings,
    Route,
    Router,
    RouterNic,
    Segment,
    Vm,
    VSwitch,
)


class Converter(Protocol):
    """What the overlay reader uses of the topology converter (convert.Converter)."""

    _failures: int

    def _fail(self, path: str, reason: str) -> None: ...
    def _report(self, path: str, reason: str) -> None: ...
    def interface(self, path: str, text: str | None) -> IfAddr | None: ...
    def routes(self, path: str, raw: list[dict[str, str]]) -> tuple[Route, ...]: ...


Attachment = tuple[str, int, str]  # vswitch, VNI, segment of a NIC on a segment


class OverlayConverter:
    """Reads the overlay sections for one :class:`Converter`, reporting through it."""

    def __init__(self, base: Converter) -> None:
        self.base = base  # parses addresses and routes, collects issues, counts failures
        self.settings = OverlaySettings()
        self.segments: tuple[Segment, ...] = ()
        self.by_name: dict[str, Segment] = {}
        self.broken: set[str] = set()  # segments left out for a structural error
        self.malformed = False  # ``segments`` is not a mapping: any name may be declared

    def read(self, data: dict[str, Any], broken: set[tuple[str, str]]) -> None:
        """The lab-wide settings and the segments, before any NIC refers to them."""
        self.settings = _settings(data.get("overlay"))
        raw = data.get("segments")
        self.malformed = raw is not None and not isinstance(raw, dict)
        self.broken = {name for section, name in broken if section == "segments"}
        entries = raw if isinstance(raw, dict) else {}
        self.segments = tuple(
            Segment(name, int(seg["vni"]), seg["tenant"], seg.get("mode", self.settings.mode))
            for name, seg in entries.items()
            if name not in self.broken
        )
        self.by_name = {s.name: s for s in self.segments}

    def router(self, name: str, raw: dict[str, Any]) -> Router:
        path = f"routers.{name}"
        nics = []
        for nic, r in raw["nics"].items():
            ip = self.base.interface(f"{path}.nics.{nic}.ip", r["ip"])
            if ip is not None:
                nics.append(RouterNic(nic, r.get("switch", ""), ip, r.get("link")))
        return Router(name, tuple(nics), self.base.routes(f"{path}.routes", raw.get("routes", [])))

    def attachment(self, path: str, raw: dict[str, Any]) -> Attachment | None:
        """The vSwitch, VNI and segment of a NIC that names a segment; None when it cannot be
        attached (reported, unless the segment is left out for an error already reported)."""
        name = raw["segment"]
        segment = self.by_name.get(name)
        why = {
            "vswitch": f"a NIC on a segment plugs into the segment's own vSwitch{_bridge(segment)}: "
            "give 'segment' or 'vswitch', not both",
            "vlan": "a NIC on a segment is untagged: its segment is its layer-2 network",
            "vni": f"the segment gives the NIC its VNI{_vni(segment)}: leave 'vni' out",
        }
        clashes = [key for key in why if key in raw]
        for key in clashes:
            self.base._fail(f"{path}.{key}", why[key])
        if segment is None:
            if name not in self.broken and not self.malformed:
                names = [s.name for s in self.segments]
                self.base._fail(f"{path}.segment", unknown("segment", "segments", name, names))
            else:
                self.base._failures += 1
            return None
        return None if clashes else (segment.bridge, segment.vni, segment.name)

    def tenant(self, vm: str, declared: str | None, nics: tuple[Nic, ...]) -> str | None:
        """The VM's tenant: as declared, else that of its segments; NICs of another tenant are
        reported (a VM on two tenants' segments would join their networks)."""
        first: tuple[int, Segment] | None = None  # the NIC whose segment gives the tenant
        for nic in nics:
            if nic.segment is None:
                continue
            segment, path = self.by_name[nic.segment], f"vms.{vm}.nics[{nic.index}].segment"
            tenant = segment.tenant
            if declared is not None and tenant != declared:
                self.base._report(
                    path, f"segment {segment.name!r} is of tenant {tenant}, not of {vm}'s tenant {declared}"
                )
            elif declared is None and first is not None and tenant != first[1].tenant:
                self.base._report(
                    path,
                    f"segment {segment.name!r} is of tenant {tenant}, but nics[{first[0]}] is on "
                    f"{first[1].name!r} of tenant {first[1].tenant}: a VM belongs to one tenant",
                )
            first = first or (nic.index, segment)
        return declared if declared is not None or first is None else first[1].tenant

    def with_segment_vswitches(self, hosts: tuple[Host, ...], vms: tuple[Vm, ...]) -> tuple[Host, ...]:
        """Each host with one vSwitch ``sg-<vni>`` more per segment its VMs have a NIC on, by VNI."""
        result = []
        for host in hosts:
            used = {nic.segment for vm in vms if vm.host == host.name for nic in vm.nics if nic.segment}
            segments = sorted((self.by_name[name] for name in used), key=lambda s: s.vni)
            added = tuple(VSwitch(s.bridge, segment=s.name) for s in segments)
            result.append(replace(host, vswitches=host.vswitches + added) if added else host)
        return tuple(result)


def machines(raw: Any) -> tuple[str, ...]:
    """The declared machines, each once (a name listed twice is reported by the checks)."""
    return tuple(name for name in raw if isinstance(name, str)) if isinstance(raw, list) else ()


def _settings(raw: Any) -> OverlaySettings:
    """The ``overlay`` section; a key with a structural error (reported) keeps its default."""
    raw = raw if isinstance(raw, dict) else {}
    default = OverlaySettings()
    mode: OverlayMode = raw["mode"] if raw.get("mode") in OVERLAY_MODES else default.mode
    asn = raw.get("asn")
    reflector = raw.get("route_reflector")
    return OverlaySettings(
        mode=mode,
        asn=int(asn) if isinstance(asn, int | float) and not isinstance(asn, bool) else default.asn,
        route_reflector=reflector if isinstance(reflector, str) else None,
    )


def _bridge(segment: Segment | None) -> str:
    return f" ({segment.bridge})" if segment is not None else ""


def _vni(segment: Segment | None) -> str:
    return f" ({segment.vni})" if segment is not None else ""
