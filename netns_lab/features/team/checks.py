"""VM-MP-R1..R3 of NIST SP 800-125B (section 3.3) checked on a topology's NIC teams.

The recommendations, as the publication words them:

    VM-MP-R1: It would be preferable to use physical NICs that use different drivers in the NIC
    team. The failure of one driver will only affect one member of the NIC team and will keep
    the traffic flowing through the other physical NICs of the NIC team.

    VM-MP-R2: If multiple PCI buses are available in the virtualized host, each physical NIC in
    the NIC team should be placed on a separate PCI bus. This provides fault tolerance against
    the PCI bus failure in the virtualized host.

    VM-MP-R3: The network path redundancy created within the virtual network of the virtualized
    host should also be extended to the immediate physical network links emanating from the
    virtualized host. This can be achieved by having the individual members of the NIC team
    (i.e., the two or more physical NICs) connected to different physical switches.

Each team gets one result per recommendation, ``{id, status, reason, objects}``, status ``met``,
``not met`` or ``not applicable``; ``objects`` name the team (``HOST.VSWITCH``) and the members
concerned (``HOST.PNIC``). Members are read pairwise, as the text does ("only affect one
member", "each physical NIC ... on a separate PCI bus", "individual members ... different
physical switches"): two members sharing a driver, a bus or a switch is a finding. A PCI bus is
``domain:bus`` of the address: ``0000:03:00.0`` and ``0000:03:00.1`` are two functions of one
card on one bus. R2 does not apply on a host whose pNICs all sit on one bus.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from netns_lab.topology.model import Host, PNic, Topology, VSwitch

MET, NOT_MET, NOT_APPLICABLE = "met", "not met", "not applicable"
Result = dict[str, Any]


def pci_bus(address: str) -> str:
    """``0000:03:00.1`` -> ``0000:03`` (domain and bus: device and function do not matter)."""
    return address.rsplit(":", 1)[0]


def check(topo: Topology) -> list[Result]:
    """Three results per team, in declaration order; three ``not applicable`` without teams."""
    results: list[Result] = []
    for host in topo.hosts:
        for vs in host.vswitches:
            if vs.team is not None:
                results += check_team(host, vs)
    if not results:
        reason = "no vSwitch has a NIC team"
        results = [_result(rid, NOT_APPLICABLE, reason, []) for rid in ("VM-MP-R1", "VM-MP-R2", "VM-MP-R3")]
    return results


def check_team(host: Host, vs: VSwitch) -> list[Result]:
    members = [p for name in vs.uplinks for p in host.pnics if p.name == name]
    team = f"{host.name}.{vs.name}"
    objects = [team, *(f"{host.name}.{p.name}" for p in members)]
    if len(members) < 2:
        reason = f"{team} has one member: there is nothing to fail over to"
        return [_result(rid, NOT_APPLICABLE, reason, objects) for rid in ("VM-MP-R1", "VM-MP-R2", "VM-MP-R3")]
    buses = {pci_bus(p.pci_bus) for p in host.pnics}
    r2 = (
        _result("VM-MP-R2", NOT_APPLICABLE, f"every pNIC of {host.name} is on PCI bus {buses.pop()}", objects)
        if len(buses) == 1
        else _pairwise("VM-MP-R2", host, team, members, "PCI bus", lambda p: pci_bus(p.pci_bus))
    )
    return [
        _pairwise("VM-MP-R1", host, team, members, "driver", lambda p: p.driver),
        r2,
        _pairwise("VM-MP-R3", host, team, members, "physical switch", lambda p: p.switch),
    ]


def _pairwise(
    rid: str, host: Host, team: str, members: list[PNic], what: str, key: Callable[[PNic], str]
) -> Result:
    """Met when no two members share `key`; else the members that share one, per value."""
    groups: dict[str, list[str]] = {}
    for p in members:
        groups.setdefault(key(p), []).append(p.name)
    shared = {value: names for value, names in groups.items() if len(names) > 1}
    if not shared:
        each = ", ".join(f"{p.name} {key(p)}" for p in members)
        objects = [team, *(f"{host.name}.{p.name}" for p in members)]
        return _result(rid, MET, f"the members of {team} each have their own {what}: {each}", objects)
    reason = "; ".join(f"{' and '.join(names)} share {what} {value}" for value, names in shared.items())
    objects = [team, *(f"{host.name}.{name}" for names in shared.values() for name in names)]
    return _result(rid, NOT_MET, f"{team}: {reason}", objects)


def _result(rid: str, status: str, reason: str, objects: list[str]) -> Result:
    return {"id": rid, "status": status, "reason": reason, "objects": objects}
