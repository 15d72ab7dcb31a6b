"""VM-VN-R2 and VM-VN-R3 (NIST SP 800-125B 2.6), checked statically against the topology.

VM-VN-R2: "Large data center networks with hundreds of virtualized hosts and thousands of VMs and
requiring many segments should deploy an overlay-based virtual networking". A lab is a scale model
of such a network, so what the check looks for is the symptom section 2.4.2 names for VLANs at
scale: VLAN sprawl, a VLAN carried over the physical network's trunks to many hosts (more
broadcast traffic everywhere, and every physical port's profile bound to what runs on the hosts
behind it). A VLAN whose ports (VM NICs and VMkernel NICs) are on more than ``VLAN_SPAN_LIMIT``
hosts is such a segment: the recommendation is not met while one exists. Without one, it is met
when segments do span hosts through the overlay, and does not apply otherwise (nothing spans more
than two hosts: the lab is below the scale the recommendation speaks of). Two hosts is the span a
VLAN keeps between a pair of neighbours (a migration pair, a cluster of two) without sprawl; from
three on, every host added is one more trunk to keep in step.

VM-VN-R3: "Large overlay-based virtual networking deployments should always include either
centralized or federated SDN controllers using standard protocols for configuration of overlay
modules". A segment in ``controller`` mode (the lab's controller programs every VTEP from the
model) or ``evpn`` mode (BGP EVPN, a federated control plane over a standard protocol) meets it; a
segment in ``flood`` mode, whose VTEPs learn by flooding (what 2.5.2 calls inefficient), does not.
Any overlay counts as large here: the lab has no other scale to go by.

Each check returns ``{"id", "status", "reason", "objects"}``, ``status`` one of ``met``, ``not
met``, ``not applicable``; ``objects`` names what makes it not met (empty otherwise).
"""

from __future__ import annotations

from typing import Literal, TypedDict

from netns_lab.topology.model import Topology

Status = Literal["met", "not met", "not applicable"]
VLAN_SPAN_LIMIT = 2  # hosts a VLAN may reach through trunks before it counts as sprawl


class Recommendation(TypedDict):
    id: str
    status: Status
    reason: str
    objects: list[str]


def vlan_spans(topo: Topology) -> dict[int, list[str]]:
    """VLAN id -> the hosts with a VM NIC or VMkernel NIC port in it, in the order of ``hosts``."""
    found: dict[int, set[str]] = {}
    for vm in topo.vms:
        for nic in vm.nics:
            if nic.vlan is not None:
                found.setdefault(nic.vlan, set()).add(vm.host)
    for host in topo.hosts:
        for kernel_nic in host.vmknics:
            if kernel_nic.vlan is not None:
                found.setdefault(kernel_nic.vlan, set()).add(host.name)
    order = [h.name for h in topo.hosts]
    return {vid: [h for h in order if h in hosts] for vid, hosts in sorted(found.items())}


def vm_vn_r2(topo: Topology, span_limit: int = VLAN_SPAN_LIMIT) -> Recommendation:
    """Segments that span many hosts use the overlay, not VLANs."""
    sprawl = {vid: hosts for vid, hosts in vlan_spans(topo).items() if len(hosts) > span_limit}
    if sprawl:
        objects = [f"VLAN {_vlan(topo, vid)} on {', '.join(hosts)}" for vid, hosts in sprawl.items()]
        reason = (
            f"{len(sprawl)} VLAN{'s' if len(sprawl) > 1 else ''} span{'' if len(sprawl) > 1 else 's'} "
            f"more than {span_limit} hosts through the physical switches' trunks (VLAN sprawl, "
            "section 2.4.2): carry such segments on the overlay (segments:) instead"
        )
        return _result("VM-VN-R2", "not met", reason, objects)
    spanning = [s.name for s in topo.segments if len(topo.segment_hosts(s.name)) > 1]
    if spanning:
        reason = (
            f"segments that span hosts use the overlay ({', '.join(spanning)}); "
            f"no VLAN spans more than {span_limit} hosts"
        )
        return _result("VM-VN-R2", "met", reason)
    reason = (
        f"no VLAN spans more than {span_limit} hosts and no overlay segment spans hosts: the lab is "
        "below the scale the recommendation speaks of"
    )
    return _result("VM-VN-R2", "not applicable", reason)


def vm_vn_r3(topo: Topology) -> Recommendation:
    """The overlay's VTEPs are programmed by a controller or BGP EVPN, not by flooding."""
    if not topo.segments:
        return _result("VM-VN-R3", "not applicable", "the lab has no overlay segments")
    flooded = [s for s in topo.segments if s.mode == "flood"]
    if flooded:
        objects = [f"segment {s.name} (VNI {s.vni}, tenant {s.tenant})" for s in flooded]
        reason = (
            "segments in flood mode fill their VTEPs' tables by flooding and learning, with no "
            "controller: set mode controller or evpn"
        )
        return _result("VM-VN-R3", "not met", reason, objects)
    by_mode = {mode: [s.name for s in topo.segments if s.mode == mode] for mode in ("controller", "evpn")}
    parts = [f"the lab's controller ({', '.join(by_mode['controller'])})"] if by_mode["controller"] else []
    parts += [f"BGP EVPN ({', '.join(by_mode['evpn'])})"] if by_mode["evpn"] else []
    reason = f"every segment's VTEP tables are programmed by {' and by '.join(parts)}"
    return _result("VM-VN-R3", "met", reason)


def check(topo: Topology) -> list[Recommendation]:
    """Both overlay recommendations, in id order."""
    return [vm_vn_r2(topo), vm_vn_r3(topo)]


def _vlan(topo: Topology, vid: int) -> str:
    name = topo.vlan_name(vid)
    return f"{name} ({vid})" if name != str(vid) else str(vid)


def _result(rid: str, status: Status, reason: str, objects: list[str] | None = None) -> Recommendation:
    return {"id": rid, "status": status, "reason": reason, "objects": objects or []}
