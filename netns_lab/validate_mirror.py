"""Semantic checks of port mirroring (NIST 5): sessions and promiscuous NICs.

A session's destination is an analyzer VM (role ``analyzer``, receive-only) on the same host as
every port it copies (copies across hosts are not carried yet); its sources stand for at least
one NIC and never include the analyzer; no port is the source of more sessions than the
dataplane holds. Tenants: a copy never goes to a VM of another tenant than the VM it was taken
from (a VM without ``tenant`` belongs to no tenant, which is a tenant of its own here), for
sessions and for promiscuous NICs alike.
"""

from __future__ import annotations

from collections import Counter

from dataplane.abi import MAX_MIRRORS, MIRROR_PER_PORT
from netns_lab.errors import Found, unknown
from netns_lab.model import MirrorSession, Nic, Topology, Vm


def check(found: Found, topo: Topology) -> None:
    vms = {vm.name: vm for vm in topo.vms}
    for session in topo.mirrors:
        _session(found, topo, vms, session)
    for vm in topo.vms:
        for nic in vm.nics:
            if nic.promiscuous:
                _promiscuous(found, topo, vm, nic)
    _capacity(found, topo)


def tenant_name(vm: Vm) -> str:
    return f"tenant {vm.tenant}" if vm.tenant else "no tenant"


def _session(found: Found, topo: Topology, vms: dict[str, Vm], session: MirrorSession) -> None:
    path = f"mirrors.{session.name}"
    dest = vms.get(session.dest)
    if dest is None:
        found.add(f"{path}.dest", unknown("VM", "VMs", session.dest, vms))
        return
    if dest.role != "analyzer":
        found.add(
            f"{path}.dest",
            f"{dest.name} is not an analyzer (role {dest.role}): copies go only to a receive-only "
            "VM with role analyzer",
        )
        return
    for source in session.sources:
        if source.vswitch is not None and not _vswitch_exists(topo, *source.vswitch):
            host, vswitch = source.vswitch
            found.add(f"{path}.source.vswitch", f"{host} has no vSwitch {vswitch!r} (write HOST.VSWITCH)")
            return
    nics = [nic for source in session.sources for nic in topo.mirror_nics(source)]
    if not nics:
        found.add(f"{path}.source", "stands for no VM NIC: the session would copy nothing")
        return
    for vm, _ in nics:
        if vm.name == dest.name:
            found.add(f"{path}.source", f"{dest.name} is the destination: an analyzer cannot mirror itself")
            return
    others = sorted({vm.name for vm, _ in nics if vm.tenant != dest.tenant})
    if others:
        vm = vms[others[0]]
        found.add(
            f"{path}.dest",
            f"{dest.name} ({tenant_name(dest)}) would receive copies of {', '.join(others)} "
            f"({tenant_name(vm)}): never mirror into another tenant",
        )
        return
    remote = sorted({vm.name for vm, _ in nics if vm.host != dest.host})
    if remote:
        found.add(
            f"{path}.dest",
            f"{dest.name} is on {dest.host}, {', '.join(remote)} on another host: copies across hosts "
            "(remote or uplink destinations) are not supported yet",
        )


def _vswitch_exists(topo: Topology, host: str, vswitch: str) -> bool:
    return any(h.name == host and any(v.name == vswitch for v in h.vswitches) for h in topo.hosts)


def _promiscuous(found: Found, topo: Topology, vm: Vm, nic: Nic) -> None:
    path = f"vms.{vm.name}.nics[{nic.index}].promiscuous"
    if vm.role == "analyzer":
        found.add(path, "an analyzer is receive-only and gets copies from sessions, not from its port group")
        return
    others = sorted({o.name for o, _ in topo.port_group(vm, nic) if o.tenant != vm.tenant})
    if others:
        found.add(
            path,
            f"the port group ({topo.vlan_name(nic.vlan) or 'untagged'} on {vm.host}.{nic.vswitch}) has "
            f"{', '.join(others)} of another tenant than {vm.name} ({tenant_name(vm)}): "
            "never mirror into another tenant",
        )


def _capacity(found: Found, topo: Topology) -> None:
    """Sessions per lab (ids 1..MAX_MIRRORS-1, one id per session on every host) and per port."""
    per_port: Counter[tuple[str, int]] = Counter()
    for session in topo.mirrors:
        per_port.update({(vm.name, nic.index) for s in session.sources for vm, nic in topo.mirror_nics(s)})
    promiscuous = 0
    for vm in topo.vms:
        for nic in vm.nics:
            if nic.promiscuous:
                promiscuous += 1
                per_port.update({(o.name, n.index) for o, n in topo.port_group(vm, nic)})
    for (vm, index), count in sorted(per_port.items()):
        if count > MIRROR_PER_PORT:
            found.add(
                f"vms.{vm}.nics[{index}]",
                f"is the source of {count} mirror sessions (promiscuous NICs included); "
                f"a port holds at most {MIRROR_PER_PORT}",
            )
    total = len(topo.mirrors) + promiscuous
    if total > MAX_MIRRORS - 1:
        found.add(
            "mirrors", f"{total} sessions (promiscuous NICs included); a lab holds at most {MAX_MIRRORS - 1}"
        )
