"""The switch-security settings hardening guides check on virtual switches, as far as the lab can
express them (pure): each ``{id, status, reason, objects}``, judged on the topology and on what
the dataplane does with it (the port plan of features/vlan/plan.py, the programs of ebpf/).

    mac-address-changes    a VM that takes another MAC neither sends nor receives with it
    forged-transmits       a VM sends only with its own MAC (and addresses)
    promiscuous-mode       no VM NIC receives frames not meant for it
    switch-control-frames  STP BPDUs, LLDP, LACP, CDP, DTP, VTP from a VM are dropped at its port
    unused-ports           no physical switch port is cabled to a pNIC that carries nothing
    native-vlan            no trunk carries untagged frames beside its tagged VLANs

What the dataplane does, from ebpf/vswitch.c: a vNIC with port security (``port_security``, on
by default) has exactly one MAC. Frames from it with another source MAC are dropped
(SPOOF_MAC, an ARP sender other than its own SPOOF_ARP), and unicast frames the bridge floods
towards it for another MAC are dropped before the taps (DST_MAC): vSphere's "forged transmits"
and "MAC address changes" both at reject. Without port security both are accepted. Every VM and
VMkernel NIC port is an edge port with the guard flag (features/vlan/plan.py): frames to
01:80:c2:00:00:00-0f and 01:00:0c:cc:cc:cc/cd are dropped (CONTROL_FRAME) before the taps and
the firewall, and any 802.1Q-tagged frame from a vNIC is dropped (TAGGED_ON_ACCESS), so a VM
cannot negotiate or fake a trunk. A double-tagged or 802.1ad frame is dropped on any port (QINQ).
"""

from __future__ import annotations

from typing import Any

from netns_lab.features.mirror import checks as mirror_checks
from netns_lab.features.vlan import plan as vlan_plan
from netns_lab.topology import names
from netns_lab.topology.model import PortProfile, Topology

MET, NOT_MET, NOT_APPLICABLE = "met", "not met", "not applicable"
Result = dict[str, Any]

SETTINGS: tuple[str, ...] = (
    "mac-address-changes",
    "forged-transmits",
    "promiscuous-mode",
    "switch-control-frames",
    "unused-ports",
    "native-vlan",
)


def check(topo: Topology) -> list[Result]:
    """Every setting, in the order of ``SETTINGS``."""
    return [
        mac_address_changes(topo),
        forged_transmits(topo),
        promiscuous_mode(topo),
        switch_control_frames(topo),
        unused_ports(topo),
        native_vlan(topo),
    ]


def _vm_nics(topo: Topology) -> list[str]:
    return [f"{vm.name}.{nic.name}" for vm in topo.vms for nic in vm.nics]


def _unsecured(topo: Topology) -> list[str]:
    return [f"{vm.name}.{nic.name}" for vm in topo.vms for nic in vm.nics if not nic.port_security]


def _port_security(topo: Topology, rid: str, accepted: str, rejected: str) -> Result:
    """A setting that port security decides: not met on each VM port without it."""
    if not _vm_nics(topo):
        return _result(rid, NOT_APPLICABLE, "the lab has no VM port")
    open_ports = _unsecured(topo)
    if open_ports:
        return _result(rid, NOT_MET, f"port_security is off: {accepted}: set port_security true", open_ports)
    return _result(rid, MET, f"reject on all {len(_vm_nics(topo))} VM ports (port security): {rejected}")


def mac_address_changes(topo: Topology) -> Result:
    return _port_security(
        topo,
        "mac-address-changes",
        "a VM that changes its MAC sends with the new one and receives frames flooded to it "
        "(the port takes any MAC)",
        "a frame from another source MAC is dropped (SPOOF_MAC) and a unicast frame flooded to "
        "the port for another MAC is dropped before the taps (DST_MAC), so a changed MAC neither "
        "sends nor receives",
    )


def forged_transmits(topo: Topology) -> Result:
    return _port_security(
        topo,
        "forged-transmits",
        "frames with any source MAC, ARP sender and IP source leave these ports",
        "a frame whose source MAC is not the vNIC's is dropped (SPOOF_MAC), as are ARP and IP "
        "sources other than its own and allowed addresses (SPOOF_ARP, SPOOF_IP, SPOOF_ND)",
    )


def promiscuous_mode(topo: Topology) -> Result:
    rid = "promiscuous-mode"
    if not _vm_nics(topo):
        return _result(rid, NOT_APPLICABLE, "the lab has no VM port")
    found = [
        (f"{vm.name}.{nic.name}", f"{mirror_checks.port_group_name(topo, nic)} on {vm.host}.{nic.vswitch}")
        for vm in topo.vms
        for nic in vm.nics
        if nic.promiscuous
    ]
    if found:
        each = ", ".join(f"{nic} (port group {group})" for nic, group in found)
        reason = (
            f"accept on {each}: each gets a copy of every frame of its port group (VM-TM-R2 judges "
            "the scope); hardening guides keep reject everywhere but on a port group dedicated to "
            "monitoring"
        )
        return _result(rid, NOT_MET, reason, [nic for nic, _ in found])
    reason = (
        f"reject on all {len(_vm_nics(topo))} VM ports: no NIC is promiscuous, and a port-secured "
        "vNIC does not even get the unicast frames the bridge floods for other MACs (DST_MAC)"
    )
    return _result(rid, MET, reason)


def switch_control_frames(topo: Topology) -> Result:
    """Read from the port plan the builder installs: every VM and VMkernel NIC port guarded."""
    rid = "switch-control-frames"
    edge = [
        (host.name, p)
        for host in topo.hosts
        for p in vlan_plan.host_ports(topo, host.name)
        if p.role in ("vm", "vmknic")
    ]
    if not edge:
        return _result(rid, NOT_APPLICABLE, "the lab has no VM or VMkernel NIC port")
    open_ports = [f"{host}.{p.name} ({p.owner})" for host, p in edge if not p.vlans.guard]
    if open_ports:
        reason = "these edge ports are not guarded: STP/CDP/DTP frames from the VM reach the vSwitch"
        return _result(rid, NOT_MET, reason, open_ports)
    reason = (
        f"dropped on all {len(edge)} VM and VMkernel NIC ports (edge ports, guarded): frames to "
        "01:80:c2:00:00:00-0f (STP BPDUs, LACP, LLDP) and 01:00:0c:cc:cc:cc/cd (CDP, DTP, VTP, "
        "PVST+) are dropped and counted (CONTROL_FRAME) before the taps and the firewall; an "
        "802.1Q-tagged frame from a VM is dropped too (TAGGED_ON_ACCESS), so no VM port becomes a trunk"
    )
    return _result(rid, MET, reason)


def unused_ports(topo: Topology) -> Result:
    """vSwitch ports exist only for declared NICs; a pNIC cabled to a physical switch is in use
    when it is a vSwitch uplink (a team's standby too), has an address, or is the VTEP."""
    rid = "unused-ports"
    cabled = [(h, p) for h in topo.hosts for p in h.pnics if p.switch]
    if not cabled:
        return _result(rid, NOT_APPLICABLE, "no pNIC is cabled to a physical switch")
    unused = []
    for h, p in cabled:
        uplinks = {u for vs in h.vswitches for u in vs.uplinks}
        if p.name not in uplinks and p.ip is None and h.vtep != p.name:
            unused.append(f"{p.switch}.{names.switch_port(h.name, p.name)} ({h.name}.{p.name})")
    if unused:
        reason = (
            "these physical switch ports are live and forward, but the pNIC behind each is in no "
            "vSwitch, has no address and is no VTEP: take the cable out or make it a team member"
        )
        return _result(rid, NOT_MET, reason, unused)
    reason = (
        "every vSwitch port is a declared VM or VMkernel NIC (none is created spare), and each of "
        f"the {len(cabled)} cabled pNICs is an uplink, a VTEP or an addressed host interface"
    )
    return _result(rid, MET, reason)


def _native(profile: PortProfile) -> bool:
    return profile.access is None and bool(profile.trunk) and profile.untagged


def native_vlan(topo: Topology) -> Result:
    rid = "native-vlan"
    trunks: list[tuple[str, PortProfile]] = []
    for h in topo.hosts:
        for vs in h.vswitches:
            if vs.uplinks and vs.segment is None:
                profile = topo.uplink_profile(h.name, vs.name)
                trunks += [(f"{h.name}.{u} ({vs.name} uplink)", profile) for u in vs.uplinks]
    for sw in topo.switches:
        for port, profile in sw.ports:
            trunks.append((f"{sw.name}.{port}", profile))
    tagged = [(name, p) for name, p in trunks if p.access is None and p.trunk]
    if not tagged:
        return _result(rid, NOT_APPLICABLE, "no port carries tagged VLANs: there is no trunk")
    native = [name for name, p in tagged if _native(p)]
    if native:
        reason = (
            "these trunks carry untagged frames beside their tagged VLANs (a native VLAN): tag "
            "every VLAN and set untagged false"
        )
        return _result(rid, NOT_MET, reason, native)
    reason = (
        f"none of the {len(tagged)} trunk ports passes untagged frames: every VLAN is tagged, so a "
        "double-tagged frame has no native VLAN to hop from (and is dropped anyway: QINQ)"
    )
    return _result(rid, MET, reason)


def _result(rid: str, status: str, reason: str, objects: list[str] | None = None) -> Result:
    return {"id": rid, "status": status, "reason": reason, "objects": objects or []}
