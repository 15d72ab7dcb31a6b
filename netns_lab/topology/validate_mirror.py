"""Semantic checks of port mirroring (NIST 5): sessions and promiscuous NICs.

A session's destination is an analyzer VM (role ``analyzer``, receive-only) or an uplink towards
an analyzer on the physical network; its sources stand for at least one NIC and never include
the analyzer; no port is the source of more sessions than the dataplane holds. Copies that
leave their host need a mirror VLAN that no NIC uses, a physical switch that joins the hosts
through vSwitch uplinks, and every switch port and declared trunk on that path carrying it.
Tenants: a copy never goes to a VM of another tenant than the VM it was taken from (a VM
without ``tenant`` belongs to no tenant, which is a tenant of its own here; an analyzer on the
physical network belongs to none), for sessions and for promiscuous NICs alike.
"""

from __future__ import annotations

from collections import Counter

from netns_lab.topology.convert import LeftOut
from netns_lab.topology.errors import Found, unknown
from netns_lab.topology.limits import MAX_MIRRORS, MIRROR_PER_PORT
from netns_lab.topology.model import MirrorSession, Nic, Topology, Vm
from netns_lab.topology.names import network_port, switch_port


def check(found: Found, topo: Topology, left_out: LeftOut) -> None:
    vms = {vm.name: vm for vm in topo.vms}
    for session in topo.mirrors:
        if not _reads_left_out(topo, left_out, session):
            _session(found, topo, vms, session)
    for vm in topo.vms:
        for nic in vm.nics:
            if nic.promiscuous:
                _promiscuous(found, topo, vm, nic)
    _capacity(found, topo)


def _reads_left_out(topo: Topology, left_out: LeftOut, session: MirrorSession) -> bool:
    """Does the session name a VM, group, host or network the model left out, or a port group
    that may have lost one of its VMs? Its checks would then report what is missing."""
    vms = [session.dest] if session.dest is not None else []
    hosts = [session.uplink.split(".", 1)[0]] if session.uplink and "." in session.uplink else []
    for source in session.sources:
        if source.kind == "vm":
            vms.append(source.name)
        elif source.kind == "group":
            if left_out.lacks("security_groups", source.name):
                return True
            vms += [vm for vm, _ in topo.group(source.name).members]
        elif not left_out.complete("vms"):
            return True
        hosts += [source.vswitch[0]] if source.vswitch is not None else []
    if any(left_out.lacks("vms", vm) for vm in vms):
        return True
    hosts += [vm.host for vm in topo.vms if vm.name in vms]
    network = [session.uplink] if session.uplink and "." not in session.uplink else []
    return any(left_out.lacks("hosts", h) for h in hosts) or any(
        left_out.lacks("networks", n) for n in network
    )


def tenant_name(vm: Vm) -> str:
    return f"tenant {vm.tenant}" if vm.tenant else "no tenant"


def _session(found: Found, topo: Topology, vms: dict[str, Vm], session: MirrorSession) -> None:
    path = f"mirrors.{session.name}"
    dest = vms.get(session.dest) if session.dest is not None else None
    if session.dest is not None and not _analyzer(found, f"{path}.dest", dest, session.dest, vms):
        return
    if session.uplink is not None and not _uplink(found, topo, f"{path}.dest.uplink", session.uplink):
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
    if dest is not None and any(vm.name == dest.name for vm, _ in nics):
        found.add(f"{path}.source", f"{dest.name} is the destination: an analyzer cannot mirror itself")
        return
    tenant = dest.tenant if dest is not None else None
    others = sorted({vm.name for vm, _ in nics if vm.tenant != tenant})
    if others:
        owner = f"{dest.name} ({tenant_name(dest)})" if dest else f"the physical network ({session.uplink})"
        found.add(
            f"{path}.dest",
            f"{owner} would receive copies of {', '.join(others)} "
            f"({tenant_name(vms[others[0]])}): never mirror into another tenant",
        )
        return
    _crossing(found, topo, path, session)


def _analyzer(found: Found, path: str, dest: Vm | None, name: str, vms: dict[str, Vm]) -> bool:
    if dest is None:
        found.add(path, unknown("VM", "VMs", name, vms))
        return False
    if dest.role != "analyzer":
        found.add(
            path,
            f"{dest.name} is not an analyzer (role {dest.role}): copies go only to a receive-only "
            "VM with role analyzer",
        )
        return False
    return True


def _uplink(found: Found, topo: Topology, path: str, uplink: str) -> bool:
    if "." not in uplink:
        if any(n.name == uplink for n in topo.networks):
            return True
        found.add(path, unknown("network", "networks", uplink, [n.name for n in topo.networks]))
        return False
    host, pnic = uplink.split(".", 1)
    h = next((h for h in topo.hosts if h.name == host), None)
    if h is None or not any(p.name == pnic for p in h.pnics):
        found.add(path, f"{uplink!r} is not a pNIC (write HOST.PNIC or a network's name)")
        return False
    if not any(pnic in vs.uplinks for vs in h.vswitches):
        found.add(path, f"{uplink} is no vSwitch's uplink: copies leave only through an uplink")
        return False
    return True


def _crossing(found: Found, topo: Topology, path: str, session: MirrorSession) -> None:
    """Copies that leave their host: a mirror VLAN, a path, and every port on it carrying the VLAN."""
    route = topo.mirror_path(session)
    if route is None:
        where = (
            f"network {session.uplink}" if session.uplink and "." not in session.uplink else "the analyzer"
        )
        if session.uplink and "." in session.uplink:
            found.add(
                f"{path}.source", f"copies leave through {session.uplink}: every source must be on its host"
            )
        else:
            found.add(
                f"{path}.dest",
                f"no physical switch joins the sources' hosts and {where} through vSwitch uplinks",
            )
        return
    if not route.out and route.network is None and session.uplink is None:
        return  # a local session
    if session.vlan is None:
        found.add(path, "copies leave their host: name the mirror VLAN that carries them ('vlan: NAME')")
        return
    label = f"mirror VLAN {topo.vlan_name(session.vlan)} ({session.vlan})"
    users = [f"{vm.name}.{n.name}" for vm in topo.vms for n in vm.nics if n.vlan == session.vlan]
    users += [f"{h.name}.{k.name}" for h in topo.hosts for k in h.vmknics if k.vlan == session.vlan]
    if users:
        found.add(f"{path}.vlan", f"{label} carries copies only, but it is the VLAN of {', '.join(users)}")
        return
    switch = next((s for s in topo.switches if s.name == route.switch), None)
    if switch is None:
        return  # left out for another error
    ports = [switch_port(h, p) for h, p in (*route.out, *((route.into,) if route.into else ()))]
    ports += [network_port(route.network)] if route.network else []
    for port in ports:
        if not switch.port_profile(port).carries(session.vlan):
            found.add(
                f"switches.{switch.name}.ports.{port}", f"does not carry {label} of session {session.name}"
            )
    for host, pnic in (*route.out, *((route.into,) if route.into else ())):
        vs = next(v for h in topo.hosts if h.name == host for v in h.vswitches if pnic in v.uplinks)
        if vs.trunk is not None and session.vlan not in vs.trunk:
            found.add(
                f"hosts.{host}.vswitches.{vs.name}.trunk", f"does not carry {label} of session {session.name}"
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
