"""Semantic checks of the firewall placements: appliances, ``firewall.placement(s)``, and the path
of every VM whose rules are enforced off its vNIC (a firewall VM or an appliance must be one of its
next hops, or its traffic would pass unfiltered)."""

from __future__ import annotations

from netns_lab.topology.convert import LeftOut
from netns_lab.topology.errors import Found, unknown
from netns_lab.topology.model import IpAddr, Topology, Vm

INSTANCES = {"subnet": "a firewall VM provisioned from the lab's policy", "physical": "an appliance"}


def check(found: Found, topo: Topology, switches: tuple[str, ...] | None, left_out: LeftOut) -> None:
    for appliance in topo.appliances:
        path = f"appliances.{appliance.name}"
        if switches is not None and appliance.switch not in switches:
            found.add(f"{path}.switch", unknown("switch", "switches", appliance.switch, switches))
        addrs = [nic.ip for nic in appliance.nics if nic.ip is not None]
        for index, route in enumerate(appliance.routes):
            if not any(route.via in a.network and route.via != a.ip for a in addrs):
                reason = f"{route.via} is not on a subnet of {appliance.name}"
                found.add(f"{path}.routes[{index}].via", reason)
    groups = [g.name for g in topo.security_groups]
    for group, _ in topo.firewall.placements:
        if group not in groups and not left_out.lacks("security_groups", group):
            reason = unknown("security group", "security groups", group, groups)
            found.add(f"firewall.placements.{group}", reason)
    used: dict[str, list[Vm]] = {}
    placements = topo.placements()
    for vm in topo.vms:
        where = placements[vm.name]
        _one_placement(found, topo, vm)
        used.setdefault(where, []).append(vm)
    if not (left_out.complete("vms") and left_out.complete("appliances")):
        return  # an instance or a VM left out for an error already reported: its path is unknown
    for where, noun in INSTANCES.items():
        hops = instance_addresses(topo, where)
        if where in used and not hops:
            why = "no appliance is declared" if where == "physical" else "no firewall VM without nftables"
            found.add(_placement_path(topo, where), f"placement {where} needs {noun}; {why}")
            continue
        for vm in used.get(where, []):
            if not set(next_hops(vm)) & set(hops):
                found.add(
                    f"vms.{vm.name}",
                    f"placement {where}: none of {vm.name}'s next hops ({_shown(next_hops(vm))}) is {noun} "
                    f"({', '.join(str(h) for h in hops)}), so its traffic would pass unfiltered",
                )


def _one_placement(found: Found, topo: Topology, vm: Vm) -> None:
    chosen = dict(topo.firewall.placements)
    tiers = {g: chosen[g] for nic in vm.nics for g in topo.groups_of(vm.name, nic.index) if g in chosen}
    if len(set(tiers.values())) > 1:
        said = ", ".join(f"{g} ({w})" for g, w in tiers.items())
        found.add("firewall.placements", f"{vm.name} is in tiers with different placements: {said}")


def _placement_path(topo: Topology, where: str) -> str:
    group = next((g for g, w in topo.firewall.placements if w == where), None)
    return f"firewall.placements.{group}" if group is not None else "firewall.placement"


def next_hops(vm: Vm) -> list[IpAddr]:
    hops = [route.via for route in vm.routes]
    return [vm.gateway, *hops] if vm.gateway is not None else hops


def instance_addresses(topo: Topology, where: str) -> list[IpAddr]:
    """The addresses of every instance of a placement: where its VMs' traffic must be routed."""
    if where == "physical":
        return [nic.ip.ip for a in topo.appliances for nic in a.nics if nic.ip is not None]
    if where == "subnet":
        return [nic.ip.ip for vm in topo.policy_firewalls() for nic in vm.nics if nic.ip is not None]
    return []


def _shown(hops: list[IpAddr]) -> str:
    return ", ".join(str(h) for h in hops) or "none"
