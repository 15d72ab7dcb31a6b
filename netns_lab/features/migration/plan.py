"""Where a migrating VM's NICs land, whether it may go at all, and what it loses (pure, no I/O).

The vSwitch rule: a NIC on a plain or VLAN vSwitch lands on the target's vSwitch of the same
name; when the target has none of that name, a VLAN NIC lands on the first of the target's
vSwitches (declaration order) whose uplinks carry its VLAN. A NIC on an overlay segment stays
on its segment (the target's ``sg-<vni>`` vSwitch). The chosen vSwitch must carry the NIC's
traffic as it did on the source: an uplink whose physical switch port and declared trunk carry
the NIC's VLAN (or untagged frames); an internal-only vSwitch only if the source's was one too
(the other way round is allowed: that is how a VM leaves a subnet-level firewall's protection).

Refused: a firewall VM (its ruleset protects others from where it sits), an unknown VM or host,
a target without the vSwitch, VLAN or segment, and a segment the overlay would have to add to or
remove from a running host (its VXLAN devices are made when the lab is built).

Contrast of NIST 4.1-4.3: a NIC whose only way out on the source is through a subnet-level
firewall VM (it shares an internal-only vSwitch and VLAN with a ``role: firewall`` VM) loses that
protection when the target does not put the same firewall VM on its path: a warning, never
hidden. Rules of the kernel NIC firewall are the lab's, per endpoint: they follow the VM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netns_lab.features.firewall import plan as fwplan
from netns_lab.features.mirror import plan as mirror
from netns_lab.topology import names
from netns_lab.topology.errors import Issue, TopologyError, listing, unknown
from netns_lab.topology.model import Nic, Topology, VSwitch

SOURCE = "nlab migrate"  # the "file" of a refusal: the command line


@dataclass(frozen=True)
class NicMove:
    index: int
    port: str  # the vSwitch port (host end of the VM's veth); same name on both hosts
    vswitch_from: str
    vswitch_to: str
    vlan: int | None
    segment: str | None
    endpoint: int  # the kernel firewall's endpoint id; 0: no rule applies to this NIC


@dataclass(frozen=True)
class Plan:
    lab: str
    vm: str
    source: str
    target: str
    nics: tuple[NicMove, ...]
    kernel_rules: tuple[int, ...]  # ids of the kernel firewall rules that apply to the VM
    mirrors: tuple[str, ...]  # mirror sessions and promiscuous groups the VM is part of
    warnings: tuple[str, ...]

    @property
    def endpoints(self) -> frozenset[int]:
        return frozenset(n.endpoint for n in self.nics if n.endpoint)

    def edit(self, data: dict[str, Any]) -> None:
        """The topology data with the VM on the target (for RunningLab.prepare)."""
        vm = data["vms"][self.vm]
        vm["host"] = self.target
        for move, nic in zip(self.nics, vm["nics"], strict=True):
            if move.segment is None and move.vswitch_to != move.vswitch_from:
                nic["vswitch"] = move.vswitch_to

    def doc(self) -> dict[str, Any]:
        return {
            "vm": self.vm,
            "from": self.source,
            "to": self.target,
            "nics": [
                {
                    "nic": f"{self.vm}.eth{n.index}",
                    "port": n.port,
                    "vswitch": {"from": n.vswitch_from, "to": n.vswitch_to},
                    "vlan": n.vlan,
                    "segment": n.segment,
                    "kernel_firewall": n.endpoint != 0,
                }
                for n in self.nics
            ],
            "kernel_rules": list(self.kernel_rules),
            "mirrors": list(self.mirrors),
            "warnings": list(self.warnings),
        }


def plan(topo: Topology, vm_name: str, target: str) -> Plan:
    """The migration of `vm_name` to host `target`, or TopologyError with every refusal
    (``nlab migrate: VM|HOST|vms.X.nics[i]: reason``)."""
    found: list[Issue] = []
    vms = [v.name for v in topo.vms]
    hosts = [h.name for h in topo.hosts]
    if vm_name not in vms:
        found.append(Issue(SOURCE, "VM", unknown("VM", "VMs", vm_name, vms)))
    if target not in hosts:
        found.append(Issue(SOURCE, "HOST", unknown("host", "hosts", target, hosts)))
    if found:
        raise TopologyError(found)
    vm = topo.vm(vm_name)
    if vm.host == target:
        found.append(Issue(SOURCE, "HOST", f"{vm_name} already runs on {target}"))
    if vm.role == "firewall":
        found.append(
            Issue(
                SOURCE,
                "VM",
                f"{vm_name} is a firewall VM: the VMs behind it rely on where it sits (move the"
                " VMs it protects, or build the lab again)",
            )
        )
    here, there = topo.host(vm.host).machine, topo.host(target).machine
    if here != there:
        found.append(
            Issue(
                SOURCE,
                "HOST",
                f"{target} is built by machine {there}, {vm.host} by {here}: a port cannot leave its machine",
            )
        )
    if found:
        raise TopologyError(found)
    ids = fwplan.endpoint_ids(topo)
    firewalled = topo.firewalled_nics()
    moves = []
    for nic in vm.nics:
        where = f"vms.{vm_name}.nics[{nic.index}]"
        vswitch, reason = _landing(topo, vm.host, target, nic, vm_name)
        if reason:
            found.append(Issue(SOURCE, where, reason))
            continue
        endpoint = ids[(vm_name, nic.index)] if (vm_name, nic.index) in firewalled else 0
        moves.append(
            NicMove(
                nic.index,
                names.vm_port(vm_name, nic.index),
                nic.vswitch,
                vswitch,
                nic.vlan,
                nic.segment,
                endpoint,
            )
        )
    if found:
        raise TopologyError(found)
    rules = tuple(sorted({r.id for n in vm.nics for r in topo.rules_for(vm_name, n.index)}))
    warnings = tuple(_protection_lost(topo, vm_name, target, moves))
    return Plan(topo.lab, vm_name, vm.host, target, tuple(moves), rules, _mirrors(topo, vm_name), warnings)


# -- where a NIC lands -------------------------------------------------------------------------
def _landing(topo: Topology, source: str, target: str, nic: Nic, vm: str) -> tuple[str, str]:
    """(the target's vSwitch for `nic`, "") or ("", why it cannot land there)."""
    if nic.segment is not None:
        return nic.vswitch, _segment_refusal(topo, source, target, nic.segment, vm)
    host = topo.host(target)
    here = topo.host(source).vswitch(nic.vswitch)
    candidates = [vs for vs in host.vswitches if vs.segment is None]
    named = next((vs for vs in candidates if vs.name == nic.vswitch), None)
    if named is None and nic.vlan is not None:
        named = next((vs for vs in candidates if vs.uplinks and _carries(topo, target, vs, nic.vlan)), None)
    if named is None:
        vlan = f" and none carrying VLAN {topo.vlan_name(nic.vlan)}" if nic.vlan is not None else ""
        return (
            "",
            f"{target} has no vSwitch {nic.vswitch}{vlan}"
            f" ({listing('vSwitches', target, (v.name for v in candidates))})",
        )
    if named.internal_only and not here.internal_only:
        return "", (
            f"{target}'s vSwitch {named.name} is internal-only, {source}'s {here.name} is not:"
            " the NIC would lose its peers off the host"
        )
    if named.uplinks and not _carries(topo, target, named, nic.vlan):
        what = f"VLAN {topo.vlan_name(nic.vlan)}" if nic.vlan is not None else "untagged frames"
        return "", f"{target}'s vSwitch {named.name} does not carry {what} to its physical switch"
    return named.name, ""


def _carries(topo: Topology, host: str, vs: VSwitch, vlan: int | None) -> bool:
    """Do `vs`'s uplinks carry `vlan` (None: untagged) both in its declared trunk and at every
    physical switch port they are cabled to?"""
    if vs.trunk is not None and (vlan is not None and vlan not in vs.trunk):
        return False
    if vlan is None and vs.untagged is False:
        return False
    h = topo.host(host)
    for uplink in vs.uplinks:
        pnic = h.pnic(uplink)
        profile = topo.switch(pnic.switch).port_profile(names.switch_port(host, uplink))
        if not profile.carries(vlan):
            return False
    return True


def _segment_refusal(topo: Topology, source: str, target: str, segment: str, vm: str) -> str:
    if topo.vtep_ip(target) is None:
        return f"{target} has no VTEP: segment {segment} cannot reach it"
    spans = topo.segment_hosts(segment)
    if target not in spans:
        return (
            f"{target} does not carry segment {segment} (hosts of it: {', '.join(spans)}); the overlay"
            " makes a host's VXLAN devices when the lab is built"
        )
    others = [
        v for v in topo.vms if v.host == source and v.name != vm and any(n.segment == segment for n in v.nics)
    ]
    if not others:
        return (
            f"{vm} is the last VM of segment {segment} on {source}; the overlay removes no VXLAN device"
            " from a running host"
        )
    return ""


# -- what follows, what is lost ----------------------------------------------------------------
def _mirrors(topo: Topology, vm: str) -> tuple[str, ...]:
    return tuple(s.name for s in mirror.sessions(topo) if vm in s.source_vms or s.dest_vm == vm)


def subnet_guards(topo: Topology, host: str, vswitch: str, vlan: int | None, vm: str) -> list[str]:
    """The firewall VMs through which alone a NIC on `host`'s `vswitch` (in `vlan`) reaches
    anything off that vSwitch: those on the same internal-only vSwitch and VLAN."""
    h = topo.host(host)
    if not any(vs.name == vswitch and vs.internal_only for vs in h.vswitches):
        return []
    return [
        v.name
        for v in topo.vms
        if v.role == "firewall"
        and v.name != vm
        and v.host == host
        and any(n.vswitch == vswitch and n.vlan == vlan for n in v.nics)
    ]


def _protection_lost(topo: Topology, vm: str, target: str, moves: list[NicMove]) -> list[str]:
    source = topo.vm(vm).host
    found = []
    for m in moves:
        before = subnet_guards(topo, source, m.vswitch_from, m.vlan, vm)
        after = set(subnet_guards(topo, target, m.vswitch_to, m.vlan, vm))
        for guard in (g for g in before if g not in after):
            kept = " (its kernel NIC firewall rules follow it)" if m.endpoint else ""
            found.append(
                f"{vm}.eth{m.index} loses subnet-level firewall {guard}: on {source} it is the only way out"
                f" of internal-only vSwitch {m.vswitch_from}; on {target} it is not on the path, and its"
                f" nftables rules do not follow the VM{kept}"
            )
    return found
