"""The status document of a lab: the model it was built from, checked against the kernel.

Field names here are a contract (DESIGN.md): other tools read `nlab status --json`.
"""

from __future__ import annotations

from typing import Any

from netns_lab import model
from netns_lab.kernel import netns
from netns_lab.kernel.netlink import Netlink
from netns_lab.model import Host, Network, Switch, Topology, Vm
from netns_lab.state import LabState


def _links(ns: str) -> dict[str, bool]:
    """Interface name -> administratively up, or {} when the namespace is gone."""
    if not netns.exists(ns):
        return {}
    with Netlink(ns) as nl:
        return {link.name: link.up for link in nl.links()}


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
    ports = [
        model.switch_port(h.name, p.name) for h in topo.hosts for p in h.pnics if p.switch == switch.name
    ]
    ports += [model.network_port(n.name) for n in topo.networks if n.switch == switch.name]
    links = _links(ns)
    return {
        "name": switch.name,
        "namespace": ns,
        "present": netns.exists(ns),
        "ports": [{"name": p, "up": links.get(p, False)} for p in ports],
    }


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
        "hosts": [_host(topo, h) for h in topo.hosts],
        "switches": [_switch(topo, s) for s in topo.switches],
        "networks": [_network(topo, n) for n in topo.networks],
        "vms": [_vm(topo, v) for v in topo.vms],
    }
    nodes = [*doc["hosts"], *doc["switches"], *doc["networks"], *doc["vms"]]
    missing = [n["namespace"] for n in nodes if not n["present"]]
    doc["healthy"] = state.phase == "up" and not missing
    doc["missing"] = missing
    return doc
