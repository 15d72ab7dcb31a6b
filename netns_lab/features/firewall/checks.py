"""VM-FW-R1..R4 of NIST SP 800-125B (section 4.4) checked on a topology's firewall placements.

    VM-FW-R1: delay-sensitive VMs want virtual firewalls, not physical ones (hairpin latency).
    VM-FW-R2: I/O-intensive VMs want kernel-based firewalls, not subnet-level ones.
    VM-FW-R3: one point of provisioning for every firewall instance.
    VM-FW-R4: rules using higher-level abstractions (security groups), not only the 5-tuple.

A VM's placement is `Topology.placement_of`; its needs are `vms.NAME.traits`. The instances are
the kernel firewall of every vNIC port and the nftables of the firewall VMs and appliances: the
lab provisions all of them from its one policy, except a firewall VM whose ruleset is written by
hand in the topology (only that file's author keeps it in step with the rules).
"""

from __future__ import annotations

from typing import Any

from netns_lab.topology.model import PeerSpec, Topology

MET, NOT_MET, NOT_APPLICABLE = "met", "not met", "not applicable"
Result = dict[str, Any]


def checks(topo: Topology) -> list[Result]:
    return [_r1(topo), _r2(topo), _r3(topo), _r4(topo)]


def _result(rid: str, status: str, reason: str, objects: list[str]) -> Result:
    return {"id": rid, "status": status, "reason": reason, "objects": objects}


def _trait(topo: Topology, rid: str, trait: str, bad: str, better: str) -> Result:
    marked = [vm.name for vm in topo.vms if trait in vm.traits]
    if not marked:
        return _result(rid, NOT_APPLICABLE, f"no VM has the trait {trait}", [])
    where = topo.placements()
    behind = [vm for vm in marked if where[vm] == bad]
    if behind:
        return _result(
            rid,
            NOT_MET,
            f"{trait} VMs behind a {bad} firewall ({better} wanted): {', '.join(behind)}",
            behind,
        )
    shown = ", ".join(f"{vm} ({where[vm]})" for vm in marked)
    return _result(rid, MET, f"no {trait} VM is behind a {bad} firewall: {shown}", marked)


def _r1(topo: Topology) -> Result:
    return _trait(topo, "VM-FW-R1", "delay-sensitive", "physical", "a virtual firewall")


def _r2(topo: Topology) -> Result:
    return _trait(topo, "VM-FW-R2", "io-intensive", "subnet", "the kernel firewall")


def _r3(topo: Topology) -> Result:
    firewalls = [vm for vm in topo.vms if vm.role == "firewall"]
    if not topo.firewall.rules and not firewalls and not topo.appliances:
        return _result("VM-FW-R3", NOT_APPLICABLE, "no firewall rules, firewall VMs or appliances", [])
    by_hand = [vm.name for vm in firewalls if vm.nftables is not None]
    if by_hand:
        return _result(
            "VM-FW-R3",
            NOT_MET,
            "firewall VMs with hand-written nftables, not provisioned from the lab's policy: "
            + ", ".join(by_hand),
            by_hand,
        )
    instances = ["kernel", *(vm.name for vm in firewalls), *(a.name for a in topo.appliances)]
    return _result(
        "VM-FW-R3",
        MET,
        "every instance is provisioned from the lab's one policy, by build and by every live change: "
        + ", ".join(instances),
        instances,
    )


def _uses_group(specs: tuple[PeerSpec, ...]) -> bool:
    return any(spec.kind == "group" for spec in specs)


def _r4(topo: Topology) -> Result:
    rules = topo.firewall.rules
    if not rules:
        return _result("VM-FW-R4", NOT_APPLICABLE, "no firewall rules", [])
    grouped = [str(r.id) for r in rules if _uses_group(r.apply) or _uses_group(r.peers)]
    if not grouped:
        ids = [str(r.id) for r in rules]
        return _result("VM-FW-R4", NOT_MET, "no rule names a security group (addresses and VMs only)", ids)
    groups = sorted({str(s.value) for r in rules for s in (*r.apply, *r.peers) if s.kind == "group"})
    return _result(
        "VM-FW-R4",
        MET,
        f"{len(grouped)} of {len(rules)} rules name security groups ({', '.join(groups)})",
        [f"group:{g}" for g in groups],
    )
