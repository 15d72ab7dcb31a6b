"""VM-TM-R1..R3 of NIST SP 800-125B (section 5.3) checked on a topology's mirror sessions and
promiscuous NICs (pure).

    VM-TM-R1: Traffic Monitoring for a VM should be applied to both incoming and outgoing traffic.
    VM-TM-R2: If traffic visibility into and out of a VM is created by setting the promiscuous
    mode feature, care should be taken to see that this is activated only for the required VM
    port group and not for the entire virtual switch
    VM-TM-R3: Port mirroring feature that provides choices in destination ports (either the
    virtual port or uplink port) facilitates the use of network monitoring tools in the physical
    network which are generally more robust and feature rich compared to VM-based ones.

R1 is judged per monitored VM NIC, over every session that copies it (a promiscuous NIC's
implicit session taps both ways): a NIC copied in one direction only is not met, whichever
session does it. R2: a promiscuous NIC sees its port group (its VLAN, or untagged, on its
vSwitch) by construction (features/mirror/plan.py); when the port groups a VM is promiscuous in
hold every other VM port of a declared vSwitch, its visibility is the entire vSwitch after all.
A segment's per-host bridge holds one segment only, so there the port group is the segment.
R3 is a property of the mirror feature, which offers both destinations: met wherever sessions
exist, the reason saying which each session uses.
"""

from __future__ import annotations

from typing import Any

from netns_lab.topology.model import Nic, Topology, Vm

MET, NOT_MET, NOT_APPLICABLE = "met", "not met", "not applicable"
Result = dict[str, Any]


def check(topo: Topology) -> list[Result]:
    """The three results, in id order."""
    return [vm_tm_r1(topo), vm_tm_r2(topo), vm_tm_r3(topo)]


def _nic(vm: Vm, nic: Nic) -> str:
    return f"{vm.name}.{nic.name}"


def monitored(topo: Topology) -> dict[str, dict[str, set[str]]]:
    """VM NIC (``vm.ethN``) -> direction ("in", "out") -> the sessions copying it that way; a
    promiscuous NIC's port group counts as an implicit session ``promiscuous:VM.ethN``."""
    found: dict[str, dict[str, set[str]]] = {}
    for s in topo.mirrors:
        directions = ("in", "out") if s.direction == "both" else (s.direction,)
        for source in s.sources:
            for vm, nic in topo.mirror_nics(source):
                for d in directions:
                    found.setdefault(_nic(vm, nic), {"in": set(), "out": set()})[d].add(s.name)
    for vm in topo.vms:
        for nic in (n for n in vm.nics if n.promiscuous):
            for other, o in topo.port_group(vm, nic):
                for d in ("in", "out"):
                    entry = found.setdefault(_nic(other, o), {"in": set(), "out": set()})
                    entry[d].add(f"promiscuous:{_nic(vm, nic)}")
    return found


def vm_tm_r1(topo: Topology) -> Result:
    """Every monitored VM NIC is copied both ways."""
    copied = monitored(topo)
    if not copied:
        return _result(
            "VM-TM-R1", NOT_APPLICABLE, "no VM is monitored: no mirror session, no promiscuous NIC"
        )
    one_way = {nic: ways for nic, ways in copied.items() if not (ways["in"] and ways["out"])}
    if one_way:
        objects: list[str] = []
        parts = []
        for nic, ways in one_way.items():
            only = "in" if ways["in"] else "out"
            sessions = sorted(ways[only])
            objects += [nic, *(f"mirror {s}" for s in sessions)]
            other = "outgoing" if only == "in" else "incoming"
            parts.append(
                f"{nic} is copied {only} only (by {', '.join(sessions)}): its {other} traffic is not"
            )
        reason = "; ".join(parts) + ": set direction both"
        return _result("VM-TM-R1", NOT_MET, reason, list(dict.fromkeys(objects)))
    names = ", ".join(sorted(copied))
    return _result("VM-TM-R1", MET, f"every monitored VM NIC is copied in both directions: {names}")


def port_group_name(topo: Topology, nic: Nic) -> str:
    """A NIC's port group as people name it: its segment, its VLAN, or untagged."""
    if nic.segment is not None:
        return f"segment {nic.segment}"
    return topo.vlan_name(nic.vlan) or "untagged"


def _declared_vswitches(topo: Topology) -> set[tuple[str, str]]:
    return {(h.name, vs.name) for h in topo.hosts for vs in h.vswitches if vs.segment is None}


def vm_tm_r2(topo: Topology) -> Result:
    """Promiscuous visibility stays within port groups, never a whole vSwitch."""
    promiscuous = [(vm, nic) for vm in topo.vms for nic in vm.nics if nic.promiscuous]
    if not promiscuous:
        return _result("VM-TM-R2", NOT_APPLICABLE, "no VM NIC is promiscuous")
    declared = _declared_vswitches(topo)
    by_vswitch: dict[tuple[str, str, str], list[Nic]] = {}  # (vm, host, vswitch) -> its promiscuous NICs
    vms = {vm.name: vm for vm in topo.vms}
    for vm, nic in promiscuous:
        by_vswitch.setdefault((vm.name, vm.host, nic.vswitch), []).append(nic)
    whole, scoped = [], []
    for (vm_name, host, vswitch), nics in by_vswitch.items():
        vm = vms[vm_name]
        groups = " and ".join(port_group_name(topo, n) for n in nics)
        seen = {(o.name, n.index) for nic in nics for o, n in topo.port_group(vm, nic) if o.name != vm_name}
        others = {
            (o.name, n.index)
            for o in topo.vms
            if o.host == host and o.name != vm_name
            for n in o.nics
            if n.vswitch == vswitch
        }
        where = f"{host}.{vswitch}"
        if (host, vswitch) in declared and seen == others and others:
            whole.append((vm, nics, where, groups, len(others)))
        else:
            scoped.append(
                f"{', '.join(_nic(vm, n) for n in nics)} sees port group {groups} on {where} "
                f"({len(seen)} of {len(others)} other VM ports)"
            )
    if whole:
        objects = [o for vm, nics, where, _, _ in whole for o in (where, *(_nic(vm, n) for n in nics))]
        parts = [
            f"{' and '.join(_nic(vm, n) for n in nics)}, promiscuous in port "
            f"group{'s' if len(nics) > 1 else ''} {groups} of {where}, "
            f"see{'' if len(nics) > 1 else 's'} all {count} other VM ports of the vSwitch"
            for vm, nics, where, groups, count in whole
        ]
        reason = (
            "; ".join(parts)
            + ": the entire vSwitch is visible, put the monitored VMs in a port group of their own"
        )
        return _result("VM-TM-R2", NOT_MET, reason, list(dict.fromkeys(objects)))
    return _result("VM-TM-R2", MET, "; ".join(scoped))


def vm_tm_r3(topo: Topology) -> Result:
    """The mirror feature offers a virtual port (an analyzer VM on any host) or an uplink (an
    analyzer on the physical network, copies encapsulated) as a session's destination."""
    if not topo.mirrors:
        return _result("VM-TM-R3", NOT_APPLICABLE, "the lab has no port-mirroring session")
    to_vm = [f"{s.name} -> {s.dest}" for s in topo.mirrors if s.dest is not None]
    to_uplink = [f"{s.name} -> uplink {s.uplink}" for s in topo.mirrors if s.dest is None]
    used = "; ".join(
        part
        for part in (
            f"to a virtual port: {', '.join(to_vm)}" if to_vm else "",
            f"to an uplink port: {', '.join(to_uplink)}" if to_uplink else "",
        )
        if part
    )
    reason = (
        "a session's destination is a virtual port (dest: VM, on any host) or an uplink port "
        f"(dest: {{uplink: NETWORK | HOST.PNIC}}, copies encapsulated in a mirror VLAN); sessions {used}"
    )
    return _result("VM-TM-R3", MET, reason)


def _result(rid: str, status: str, reason: str, objects: list[str] | None = None) -> Result:
    return {"id": rid, "status": status, "reason": reason, "objects": objects or []}
