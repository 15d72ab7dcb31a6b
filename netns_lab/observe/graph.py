"""A Graphviz drawing of a topology: hosts as clusters with their vSwitches, pNICs and VMs,
physical switches (with the links between them, bold), underlay routers and external networks
outside them; VM links carry their VLAN or VNI, host-to-switch and inter-switch links their
trunk (or a routed pNIC's address), VMs their security
groups, and mirror sessions are dashed arrows from what they copy to where. Pure text
generation; `render` runs dot.
"""

from __future__ import annotations

import shutil
import subprocess

from netns_lab.topology import describe
from netns_lab.topology.model import Host, MirrorSession, Topology, Vm

ROLE_STYLE = {
    "none": 'shape=box, style="rounded,filled", fillcolor="#e8f0fe"',
    "firewall": 'shape=box, style="rounded,filled", fillcolor="#fde2e1"',
    "router": 'shape=box, style="rounded,filled", fillcolor="#fff4cc"',
    "analyzer": 'shape=box, style="rounded,filled", fillcolor="#e2f5e4"',
}


def _q(*parts: str) -> str:
    return '"' + "/".join(parts).replace('"', r"\"") + '"'


MIRROR_STYLE = 'style=dashed, color="#0097a7", fontcolor="#0097a7", dir=forward, constraint=false'


def _vm_label(topo: Topology, vm: Vm) -> str:
    ips = [str(nic.ip) for nic in vm.nics if nic.ip]
    role = "" if vm.role == "none" else f"\\n[{vm.role}]"
    groups = list(dict.fromkeys(g for nic in vm.nics for g in topo.groups_of(vm.name, nic.index)))
    promiscuous = [nic.name for nic in vm.nics if nic.promiscuous]
    extra = [f"groups: {', '.join(groups)}"] if groups else []
    extra += [f"promiscuous {', '.join(promiscuous)}"] if promiscuous else []
    return vm.name + role + "".join(f"\\n{line}" for line in [*ips, *extra])


def _host(topo: Topology, host: Host) -> list[str]:
    lines = [f"  subgraph {_q('cluster', host.name)} {{", f'    label="{host.name}"; style=rounded;']
    for vs in host.vswitches:
        extra = "\\n(internal only)" if vs.internal_only else ""
        if vs.segment is not None:
            segment = topo.segment(vs.segment)
            extra = f"\\n(segment {segment.name}, VNI {segment.vni}, {segment.tenant})"
        lines.append(f'    {_q(host.name, vs.name)} [label="{vs.name}{extra}", shape=hexagon];')
    for pnic in host.pnics:
        lines.append(f'    {_q(host.name, pnic.name)} [label="{pnic.name}\\n{pnic.driver}", shape=cds];')
    for vm in (v for v in topo.vms if v.host == host.name):
        lines.append(f'    {_q(vm.name)} [label="{_vm_label(topo, vm)}", {ROLE_STYLE[vm.role]}];')
    lines.append("  }")
    for vs in host.vswitches:
        lines += [f"  {_q(host.name, vs.name)} -- {_q(host.name, up)};" for up in vs.uplinks]
    for pnic in host.pnics:
        vs = next((v for v in host.vswitches if pnic.name in v.uplinks), None)
        trunk = describe.profile_text(topo, topo.uplink_profile(host.name, vs.name)) if vs else ""
        trunk = f"{pnic.ip}{' VTEP' if pnic.name == host.vtep else ''}" if pnic.ip is not None else trunk
        label = f' [label="{trunk}", fontsize=8]' if trunk else ""
        lines.append(f"  {_q(host.name, pnic.name)} -- {_q('switch', pnic.switch)}{label};")
    return lines


def _mirror(topo: Topology, session: MirrorSession) -> list[str]:
    """One dashed arrow per mirrored VM to the analyzer, the network or the pNIC copies go to."""
    if session.dest is not None:
        dest = _q(session.dest)
    elif session.uplink and "." in session.uplink:
        dest = _q(*session.uplink.split(".", 1))
    else:
        dest = _q("net", str(session.uplink))
    vms = dict.fromkeys(vm.name for source in session.sources for vm, _ in topo.mirror_nics(source))
    return [f'  {_q(vm)} -- {dest} [label="{session.name}", fontsize=8, {MIRROR_STYLE}];' for vm in vms]


def dot(topo: Topology) -> str:
    lines = [
        f"graph {_q(topo.lab)} {{",
        "  rankdir=TB; fontname=Helvetica;",
        '  node [fontname=Helvetica, fontsize=10]; edge [color="#555555"];',
        f'  label="{topo.lab}: {topo.description or topo.source}"; labelloc=t;',
    ]
    for sw in topo.switches:
        lines.append(f'  {_q("switch", sw.name)} [label="{sw.name}", shape=box3d];')
    for link in topo.switch_links():
        text = describe.profile_text(topo, link.profile)
        label = f'label="{text}", fontsize=8, ' if text else ""
        lines.append(f"  {_q('switch', link.a)} -- {_q('switch', link.b)} [{label}penwidth=2];")
    for net in topo.networks:
        ip = f"\\n{net.ip}" if net.ip else ""
        lines.append(f'  {_q("net", net.name)} [label="{net.name}{ip}", shape=ellipse, style=dashed];')
        lines.append(f"  {_q('net', net.name)} -- {_q('switch', net.switch)};")
    for router in topo.routers:
        lines.append(f'  {_q("router", router.name)} [label="{router.name}\\n(router)", shape=octagon];')
        for nic in router.nics:
            label = f' [label="{nic.name} {nic.ip}", fontsize=8]'
            peer = _q("link", nic.link) if nic.link is not None else _q("switch", nic.switch)
            lines.append(f"  {_q('router', router.name)} -- {peer}{label};")
    for appliance in topo.appliances:
        node = _q("appliance", appliance.name)
        lines.append(f'  {node} [label="{appliance.name}\\n(firewall appliance)", shape=octagon];')
        for nic in appliance.nics:
            label = f' [label="{nic.name} {topo.vlan_name(nic.vlan)} {nic.ip}", fontsize=8]'
            lines.append(f"  {node} -- {_q('switch', appliance.switch)}{label};")
    for host in topo.hosts:
        lines += _host(topo, host)
    for vm in topo.vms:
        for nic in vm.nics:
            words = [nic.name] if len(vm.nics) > 1 else []
            words += [f"vlan {topo.vlan_name(nic.vlan)}"] if nic.vlan is not None else []
            words += [f"vni {nic.vni}"] if nic.segment is not None else []
            label = f' [label="{" ".join(words)}", fontsize=8]' if words else ""
            lines.append(f"  {_q(vm.name)} -- {_q(vm.host, nic.vswitch)}{label};")
    for session in topo.mirrors:
        lines += _mirror(topo, session)
    lines.append("}")
    return "\n".join(lines) + "\n"


class GraphvizMissing(Exception):
    pass


def render(source: str, fmt: str) -> bytes:
    """The drawing in format ``fmt`` (svg, png, pdf, ...), made by Graphviz's dot; ValueError
    naming the format when dot cannot make it."""
    if shutil.which("dot") is None:
        raise GraphvizMissing("Graphviz's `dot` is not installed (make setup installs it)")
    proc = subprocess.run(["dot", f"-T{fmt}"], input=source.encode(), capture_output=True, check=False)
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(f"Graphviz cannot make format {fmt!r}: {why[0] if why else 'dot failed'}")
    return proc.stdout
