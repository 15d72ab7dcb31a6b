"""The status document of a lab: the model it was built from, checked against the kernel.

Every `present`, `up`, `kernel_mac`, `programs` and `pins` field is read from the kernel
(namespaces, links, TC filters, bpffs), never copied from the model; `healthy` is true only when
all of them are as the model says, and `problems` names each one that is not. Field names here are a contract
(DESIGN.md): other tools read `nlab status --json`.
"""

from __future__ import annotations

from typing import Any

from dataplane import tc
from dataplane.abi import Direction, Reason
from dataplane.switch import MAPS, PROGRAMS, SWITCH_MAPS, SWITCH_PROGRAMS, PortVlans, SwitchDataplane
from dataplane.syscalls import BpfError
from netns_lab import encoding
from netns_lab.features.mirror import live as mirror_live
from netns_lab.features.team import faults as team_faults
from netns_lab.features.vlan import plan as ports
from netns_lab.kernel import netns
from netns_lab.kernel.netlink import Link, Netlink
from netns_lab.lab import running
from netns_lab.lab.state import LabState, pin_dir
from netns_lab.topology import names
from netns_lab.topology.model import Appliance, Host, Network, Router, Switch, Topology, Vm
from netns_lab.topology.names import MIRROR_PORT


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


def _attached(ns: str, links: dict[str, Link], names: list[str]) -> dict[str, dict[str, list[str]]]:
    """Interface -> {ingress|egress: names of the TC programs on that hook}, for those present."""
    found: dict[str, dict[str, list[str]]] = {}
    if not links:
        return found
    with Netlink(ns) as nl:
        sock = nl.tc_socket()
        for name in names:
            if name in links:
                index = links[name].index
                found[name] = {hook: tc.attached(sock, index, hook) for hook in ("ingress", "egress")}
    return found


def expected_programs(role: str) -> dict[str, list[str]]:
    """The programs a port of this role carries on each hook (see SwitchDataplane.attach and
    attach_mirror_port)."""
    if role == "mirror":
        return {"ingress": ["mirror_port_rx"], "egress": []}
    if role == "vm":
        return {"ingress": ["port_from_vm"], "egress": ["port_to_vm"]}
    return {"ingress": ["vlan_from_port"], "egress": ["vlan_to_port"]}


def _pins(topo: Topology, node: str, vm_ports: bool) -> dict[str, Any]:
    """The node's pinned programs and maps that bpffs no longer has."""
    where = pin_dir(topo.lab) / node
    names = [f"prog_{p}" for p in (PROGRAMS if vm_ports else SWITCH_PROGRAMS)]
    names += list(MAPS if vm_ports else SWITCH_MAPS)
    return {"dir": str(where), "missing": [n for n in names if not (where / n).exists()]}


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
    """Each switch port of a node: its VLAN policy, link state, attached programs and counters
    from the live maps."""
    ns = names.namespace(topo.lab, node)
    links = _kernel_links(ns)
    attached = _attached(ns, links, [p.name for p in switch_ports])
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
                    "up": link is not None and link.up,
                    "programs": attached.get(p.name, {"ingress": [], "egress": []}),
                    "dataplane": dp is not None,
                    "counters": _counters_doc(counts),
                    "drops": _drops_doc(counts),
                }
            )
    finally:
        if dp is not None:
            dp.close()
    return result


def _mirror_port(ns: str, links: dict[str, Link]) -> dict[str, Any]:
    """Both ends of the host's mirror port; copies to truncate enter at the far end's program."""
    far = MIRROR_PORT[1]
    return {
        "ends": [
            {"name": end, "present": end in links, "up": end in links and links[end].up}
            for end in MIRROR_PORT
        ],
        "programs": _attached(ns, links, [far]).get(far, {"ingress": [], "egress": []}),
    }


def _host(topo: Topology, host: Host) -> dict[str, Any]:
    ns = names.namespace(topo.lab, host.name)
    kernel = _kernel_links(ns)
    links = {name: link.up for name, link in kernel.items()}
    vtep = topo.vtep_ip(host.name)
    return {
        "name": host.name,
        "namespace": ns,
        "present": netns.exists(ns),
        "vtep": str(vtep) if vtep is not None else None,
        "vswitches": [
            {
                "name": vs.name,
                "uplinks": list(vs.uplinks),
                "internal_only": vs.internal_only,
                "segment": vs.segment,
                "up": links.get(vs.name, False),
            }
            for vs in host.vswitches
        ],
        "pnics": [
            {
                "name": p.name,
                "switch": p.switch,
                "switch_port": names.switch_port(host.name, p.name),
                "driver": p.driver,
                "pci_bus": p.pci_bus,
                "up": links.get(p.name, False),
            }
            for p in host.pnics
        ],
        "ports": dataplane_ports(topo, host.name, ports.host_ports(topo, host.name)),
        "pins": _pins(topo, host.name, vm_ports=True),
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
        "mirror_port": _mirror_port(ns, kernel),
        "teams": team_faults.teams_doc(topo, host.name),
    }


def _vm(topo: Topology, vm: Vm) -> dict[str, Any]:
    ns = names.namespace(topo.lab, vm.name)
    links = _kernel_links(ns)
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
                "port": names.vm_port(vm.name, nic.index),
                "vlan": nic.vlan,
                "vni": nic.vni,
                "segment": nic.segment,
                "tenant": topo.nic_tenant(nic),
                "present": nic.name in links,
                "up": nic.name in links and links[nic.name].up,
                "kernel_mac": links[nic.name].mac if nic.name in links else None,
            }
            for nic in vm.nics
        ],
    }


def segments_doc(topo: Topology) -> list[dict[str, Any]]:
    """The overlay's segments as the model has them, with the hosts each one spans."""
    return [
        {
            "name": s.name,
            "vni": s.vni,
            "tenant": s.tenant,
            "mode": s.mode,
            "bridge": s.bridge,
            "vxlan": names.vxlan_dev(s.vni),
            "hosts": topo.segment_hosts(s.name),
        }
        for s in topo.segments
    ]


def _switch(topo: Topology, switch: Switch) -> dict[str, Any]:
    ns = names.namespace(topo.lab, switch.name)
    links = _links(ns)
    own = dataplane_ports(topo, switch.name, ports.switch_ports(topo, switch.name))
    return {
        "name": switch.name,
        "namespace": ns,
        "present": netns.exists(ns),
        "bridge": {"name": names.SWITCH_BRIDGE, "up": links.get(names.SWITCH_BRIDGE, False)},
        "ports": own,
        "links": _switch_links(topo, switch.name, own),
        "pins": _pins(topo, switch.name, vm_ports=False),
    }


def _switch_links(topo: Topology, switch: str, own: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The switch's inter-switch links, as its ports there read them from the kernel."""
    by_name = {p["name"]: p for p in own}
    found = []
    for port, link in topo.links_of(switch):
        seen = by_name.get(port, {})
        found.append(
            {
                "name": link.name,
                "peer": link.b if link.a == switch else link.a,
                "port": port,
                **_vlans_doc(topo, ports.link_vlans(link)),
                "present": seen.get("present", False),
                "up": seen.get("up", False),
            }
        )
    return found


def _network(topo: Topology, net: Network) -> dict[str, Any]:
    ns = names.namespace(topo.lab, net.name)
    return {
        "name": net.name,
        "namespace": ns,
        "present": netns.exists(ns),
        "switch": net.switch,
        "ip": str(net.ip) if net.ip else None,
        "up": _links(ns).get(names.NETWORK_IFNAME, False),
    }


def _router(topo: Topology, router: Router) -> dict[str, Any]:
    ns = names.namespace(topo.lab, router.name)
    links = _links(ns)
    nics = [
        {"name": n.name, "switch": n.switch, "link": n.link, "ip": str(n.ip), "up": links.get(n.name, False)}
        for n in router.nics
    ]
    return {"name": router.name, "namespace": ns, "present": netns.exists(ns), "nics": nics}


def _appliance(topo: Topology, appliance: Appliance) -> dict[str, Any]:
    ns = names.namespace(topo.lab, appliance.name)
    links = _links(ns)
    nics = [
        {
            "name": n.name,
            "port": names.appliance_port(appliance.name, n.name),
            "vlan": n.vlan,
            "ip": str(n.ip) if n.ip else None,
            "up": links.get(n.name, False),
        }
        for n in appliance.nics
    ]
    return {
        "name": appliance.name,
        "switch": appliance.switch,
        "namespace": ns,
        "present": netns.exists(ns),
        "nics": nics,
    }


def document(topo: Topology, state: LabState) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "lab": topo.lab,
        "machine": topo.machine,  # one machine's part of a lab (nlab up --machine), else None
        "source": state.source,
        "phase": state.phase,
        "vlans": [{"name": v.name, "id": v.id} for v in topo.vlans],
        "segments": segments_doc(topo),
        "hosts": [_host(topo, h) for h in topo.hosts],
        "switches": [_switch(topo, s) for s in topo.switches],
        "networks": [_network(topo, n) for n in topo.networks],
        "routers": [_router(topo, r) for r in topo.routers],
        "appliances": [_appliance(topo, a) for a in topo.appliances],
        "vms": [_vm(topo, v) for v in topo.vms],
    }
    where = topo.placements()
    for vm in doc["vms"]:
        vm["placement"] = where[vm["name"]]  # who enforces its rules (Topology.placement_of)
    nodes = [
        *doc["hosts"],
        *doc["switches"],
        *doc["networks"],
        *doc["routers"],
        *doc["appliances"],
        *doc["vms"],
    ]
    doc["missing"] = [n["namespace"] for n in nodes if not n["present"]]
    doc["faults"] = team_faults.active(topo.lab)
    doc["problems"] = problems(doc)
    doc["healthy"] = not doc["problems"]
    doc["mirrors"] = _mirrors(topo.lab) if doc["healthy"] else []
    return doc


def _down(node: str, kind: str, items: list[dict[str, Any]]) -> list[str]:
    return [f"{node}: {kind} {i['name']} is down" for i in items if not i["up"]]


def _link_problems(where: str, link: dict[str, Any]) -> list[str]:
    """A link of the model that is missing or down in the kernel."""
    if not link["present"]:
        return [f"{where} is missing"]
    return [] if link["up"] else [f"{where} is down"]


def _port_problems(node: dict[str, Any]) -> list[str]:
    found = []
    for port in node.get("ports", []):
        where = f"{node['name']}: port {port['name']}"
        found += _link_problems(where, port)
        if port["present"]:
            found += _program_problems(where, port["role"], port["programs"])
    if node["pins"]["missing"]:
        found.append(
            f"{node['name']}: not pinned in {node['pins']['dir']}: {', '.join(node['pins']['missing'])}"
        )
    return found


def _program_problems(where: str, role: str, programs: dict[str, list[str]]) -> list[str]:
    found = []
    for hook, want in expected_programs(role).items():
        if programs[hook] != want:
            have = ", ".join(programs[hook]) or "none"
            found.append(f"{where}: {hook} runs {have}, not {', '.join(want) or 'none'}")
    return found


def _mirror_port_problems(host: dict[str, Any]) -> list[str]:
    where = f"{host['name']}: mirror port"
    ends = host["mirror_port"]["ends"]
    found = [problem for end in ends for problem in _link_problems(f"{where} {end['name']}", end)]
    if ends[1]["present"]:
        found += _program_problems(f"{where} {ends[1]['name']}", "mirror", host["mirror_port"]["programs"])
    return found


def _nic_problems(vm: dict[str, Any]) -> list[str]:
    found = []
    for nic in vm["nics"]:
        where = f"{vm['name']}: NIC {nic['name']}"
        found += _link_problems(where, nic)
        if nic["present"] and nic["kernel_mac"] != nic["mac"]:
            found.append(f"{where} has MAC {nic['kernel_mac']}, not {nic['mac']}")
    return found


def problems(doc: dict[str, Any]) -> list[str]:
    """Each way the lab differs from its model in the kernel, in words; [] for a healthy lab."""
    found = [] if doc["phase"] == "up" else [f"lab: phase is {doc['phase']}, not up"]
    found += [f"{f['link']}: fault injected ({f['mode']})" for f in doc.get("faults", [])]
    found += [f"{ns}: namespace is missing" for ns in doc["missing"]]
    for node in (*doc["switches"], *doc["hosts"]):
        if not node["present"]:
            continue
        if "bridge" in node:
            found += _down(node["name"], "bridge", [node["bridge"]])
        found += _down(node["name"], "pNIC", node.get("pnics", []))
        found += _down(node["name"], "vSwitch", node.get("vswitches", []))
        found += _down(node["name"], "VMkernel NIC", node.get("vmknics", []))
        found += _port_problems(node)
        if "mirror_port" in node:
            found += _mirror_port_problems(node)
    for net in doc["networks"]:
        if net["present"] and not net["up"]:
            found.append(f"{net['name']}: interface {names.NETWORK_IFNAME} is down")
    for router in (*doc["routers"], *doc.get("appliances", [])):
        if router["present"]:
            found += _down(router["name"], "NIC", router["nics"])
    for vm in doc["vms"]:
        if vm["present"]:
            found += _nic_problems(vm)
    return found


def _mirrors(lab: str) -> list[dict[str, Any]]:
    """The lab's mirror sessions with their counters, as `nlab mirror list` shows them."""
    try:
        with running.opened(lab) as live:
            return mirror_live.documents(live)
    except (running.NotRunning, OSError):  # pins gone under a lab that looks up: status says so elsewhere
        return []
