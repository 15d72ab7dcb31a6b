"""The status document of a lab: the model it was built from, checked against the kernel.

Field names here are a contract (DESIGN.md): other tools read `nlab status --json`.
"""

from __future__ import annotations

from typing import Any

from dataplane.abi import Direction, Reason
from dataplane.switch import PortVlans, SwitchDataplane
from dataplane.syscalls import BpfError
from netns_lab import encoding, fwlive, mirror, model, ports
from netns_lab.kernel import netns
from netns_lab.kernel.netlink import Link, Netlink
from netns_lab.model import Host, Network, Switch, Topology, Vm
from netns_lab.state import LabState, pin_dir


def _kernel_links(ns: str) -> dict[str, Link]:
    if not netns.exists(ns):
        return {}
    with Netlink(ns) as nl:
        return {link.name: link for link in nl.links()}


def _links(ns: str) -> dict[str, bool]:
    """Interface name -> administratively up, or {} when the namespace is gone."""
    return {name: link.up for name, link in _kernel_links(ns).items()}


def _vlans_doc(topo: Topology, vlans: PortVlans) -> dict[str, Any]:
    if vlans.access is not None:
        return {"mode": "access", "vlan": vlans.access, "vlan_name": topo.vlan_name(vlans.access)}
    mode = "trunk" if vlans.allowed else "plain"
    return {
        "mode": mode,
        "allowed": sorted(vlans.allowed),
        "allowed_names": [topo.vlan_name(v) for v in sorted(vlans.allowed)],
        "untagged": vlans.untagged,
    }


def _counters_doc(counts: dict) -> dict[str, Any]:
    """{ingress|egress: {pass: {packets, bytes}, drop: {reason: {packets, bytes}}}}"""
    doc: dict[str, Any] = {}
    for direction in Direction:
        side: dict[str, Any] = {"pass": {"packets": 0, "bytes": 0}, "drop": {}}
        for (d, reason), c in counts.items():
            if d != direction:
                continue
            entry = {"packets": c.packets, "bytes": c.bytes}
            if reason == Reason.PASS:
                side["pass"] = entry
            else:
                side["drop"][reason.label] = entry
        doc[direction.name.lower()] = side
    return doc


def _drops_doc(counts: dict) -> list[dict[str, Any]]:
    """Every drop reason of a port seen so far, in the CLI's encoding: ``direction`` seen from the
    port's peer, ``class`` expected filtering or a violation (netns_lab.encoding)."""
    found = []
    for (hook, reason), c in sorted(counts.items()):
        if reason == Reason.PASS or not c.packets:
            continue
        direction = encoding.direction_of_hook(hook.name.lower())
        found.append(
            {
                "reason": reason.label,
                "direction": direction,
                "class": encoding.drop_class(reason, direction),
                "packets": c.packets,
                "bytes": c.bytes,
            }
        )
    return found


def dataplane_ports(topo: Topology, node: str, switch_ports: list[ports.SwitchPort]) -> list[dict[str, Any]]:
    """Each switch port of a node: its VLAN policy, attached state and counters from the live maps."""
    ns = model.namespace(topo.lab, node)
    links = _kernel_links(ns)
    try:
        dp = SwitchDataplane.open(pin_dir(topo.lab) / node)
    except BpfError:
        dp = None  # built without a dataplane, or the pins are gone
    result = []
    try:
        for p in switch_ports:
            link = links.get(p.name)
            counts = dp.counters(link.index) if dp is not None and link is not None else {}
            result.append(
                {
                    "name": p.name,
                    "role": p.role,
                    "peer": p.owner,
                    **_vlans_doc(topo, p.vlans),
                    "guard": p.vlans.guard,
                    "present": link is not None,
                    "dataplane": dp is not None,
                    "counters": _counters_doc(counts),
                    "drops": _drops_doc(counts),
                }
            )
    finally:
        if dp is not None:
            dp.close()
    return result


def _host(topo: Topology, host: Host) -> dict[str, Any]:
    ns = model.namespace(topo.lab, host.name)
    links = _links(ns)
    return {
        "name": host.name,
        "namespace": ns,
        "present": netns.exists(ns),
        "vswitches": [
            {
                "name": vs.name,
                "uplinks": list(vs.uplinks),
                "internal_only": vs.internal_only,
                "up": links.get(vs.name, False),
            }
            for vs in host.vswitches
        ],
        "pnics": [
            {
                "name": p.name,
                "switch": p.switch,
                "switch_port": model.switch_port(host.name, p.name),
                "driver": p.driver,
                "pci_bus": p.pci_bus,
                "up": links.get(p.name, False),
            }
            for p in host.pnics
        ],
        "ports": dataplane_ports(topo, host.name, ports.host_ports(topo, host.name)),
        "vmknics": [
            {
                "name": k.name,
                "vswitch": k.vswitch,
                "mac": k.mac,
                "ip": str(k.ip) if k.ip else None,
                "vlan": k.vlan,
                "up": links.get(k.name, False),
            }
            for k in host.vmknics
        ],
    }


def _vm(topo: Topology, vm: Vm) -> dict[str, Any]:
    ns = model.namespace(topo.lab, vm.name)
    links = _links(ns)
    return {
        "name": vm.name,
        "host": vm.host,
        "role": vm.role,
        "namespace": ns,
        "present": netns.exists(ns),
        "nics": [
            {
                "name": nic.name,
                "mac": nic.mac,
                "ip": str(nic.ip) if nic.ip else None,
                "vswitch": nic.vswitch,
                "port": model.vm_port(vm.name, nic.index),
                "vlan": nic.vlan,
                "vni": nic.vni,
                "up": links.get(nic.name, False),
            }
            for nic in vm.nics
        ],
    }


def _switch(topo: Topology, switch: Switch) -> dict[str, Any]:
    ns = model.namespace(topo.lab, switch.name)
    links = _links(ns)
    port_docs = dataplane_ports(topo, switch.name, ports.switch_ports(topo, switch.name))
    for doc in port_docs:
        doc["up"] = links.get(doc["name"], False)
    return {"name": switch.name, "namespace": ns, "present": netns.exists(ns), "ports": port_docs}


def _network(topo: Topology, net: Network) -> dict[str, Any]:
    ns = model.namespace(topo.lab, net.name)
    return {
        "name": net.name,
        "namespace": ns,
        "present": netns.exists(ns),
        "switch": net.switch,
        "ip": str(net.ip) if net.ip else None,
    }


def document(topo: Topology, state: LabState) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "lab": topo.lab,
        "source": state.source,
        "phase": state.phase,
        "vlans": [{"name": v.name, "id": v.id} for v in topo.vlans],
        "hosts": [_host(topo, h) for h in topo.hosts],
        "switches": [_switch(topo, s) for s in topo.switches],
        "networks": [_network(topo, n) for n in topo.networks],
        "vms": [_vm(topo, v) for v in topo.vms],
    }
    nodes = [*doc["hosts"], *doc["switches"], *doc["networks"], *doc["vms"]]
    missing = [n["namespace"] for n in nodes if not n["present"]]
    doc["healthy"] = state.phase == "up" and not missing
    doc["missing"] = missing
    doc["mirrors"] = _mirrors(topo.lab) if doc["healthy"] else []
    return doc


def _mirrors(lab: str) -> list[dict[str, Any]]:
    """The lab's mirror sessions with their counters, as `nlab mirror list` shows them."""
    try:
        return mirror.documents(lab)
    except (fwlive.NotRunning, OSError):  # pins gone under a lab that looks up: status says so elsewhere
        return []
