"""A Graphviz drawing of a topology: hosts as clusters with their vSwitches, pNICs and VMs,
physical switches and external networks outside them. Pure text generation; `render` runs dot.
"""

from __future__ import annotations

import shutil
import subprocess

from netns_lab.model import Host, Topology, Vm

ROLE_STYLE = {
    "none": 'shape=box, style="rounded,filled", fillcolor="#e8f0fe"',
    "firewall": 'shape=box, style="rounded,filled", fillcolor="#fde2e1"',
    "router": 'shape=box, style="rounded,filled", fillcolor="#fff4cc"',
    "analyzer": 'shape=box, style="rounded,filled", fillcolor="#e2f5e4"',
}


def _q(*parts: str) -> str:
    return '"' + "/".join(parts).replace('"', r"\"") + '"'


def _vm_label(vm: Vm) -> str:
    ips = [str(nic.ip) for nic in vm.nics if nic.ip]
    role = "" if vm.role == "none" else f"\\n[{vm.role}]"
    return vm.name + role + ("\\n" + "\\n".join(ips) if ips else "")


def _host(topo: Topology, host: Host) -> list[str]:
    lines = [f"  subgraph {_q('cluster', host.name)} {{", f'    label="{host.name}"; style=rounded;']
    for vs in host.vswitches:
        extra = "\\n(internal only)" if vs.internal_only else ""
        lines.append(f'    {_q(host.name, vs.name)} [label="{vs.name}{extra}", shape=hexagon];')
    for pnic in host.pnics:
        lines.append(f'    {_q(host.name, pnic.name)} [label="{pnic.name}\\n{pnic.driver}", shape=cds];')
    for vm in (v for v in topo.vms if v.host == host.name):
        lines.append(f'    {_q(vm.name)} [label="{_vm_label(vm)}", {ROLE_STYLE[vm.role]}];')
    lines.append("  }")
    for vs in host.vswitches:
        lines += [f"  {_q(host.name, vs.name)} -- {_q(host.name, up)};" for up in vs.uplinks]
    lines += [f"  {_q(host.name, p.name)} -- {_q('switch', p.switch)};" for p in host.pnics]
    return lines


def dot(topo: Topology) -> str:
    lines = [
        f"graph {_q(topo.lab)} {{",
        "  rankdir=TB; fontname=Helvetica;",
        '  node [fontname=Helvetica, fontsize=10]; edge [color="#555555"];',
        f'  label="{topo.lab}: {topo.description or topo.source}"; labelloc=t;',
    ]
    for sw in topo.switches:
        lines.append(f'  {_q("switch", sw.name)} [label="{sw.name}", shape=box3d];')
    for net in topo.networks:
        ip = f"\\n{net.ip}" if net.ip else ""
        lines.append(f'  {_q("net", net.name)} [label="{net.name}{ip}", shape=ellipse, style=dashed];')
        lines.append(f"  {_q('net', net.name)} -- {_q('switch', net.switch)};")
    for host in topo.hosts:
        lines += _host(topo, host)
    for vm in topo.vms:
        for nic in vm.nics:
            label = f' [label="{nic.name}"]' if len(vm.nics) > 1 else ""
            lines.append(f"  {_q(vm.name)} -- {_q(vm.host, nic.vswitch)}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


class GraphvizMissing(Exception):
    pass


def render(source: str, out: str) -> None:
    """Write `out` in the format its suffix names (svg, png, pdf) with Graphviz's dot."""
    if shutil.which("dot") is None:
        raise GraphvizMissing("Graphviz's `dot` is not installed (make setup installs it)")
    fmt = out.rsplit(".", 1)[-1] if "." in out else "svg"
    subprocess.run(["dot", f"-T{fmt}", "-o", out], input=source, text=True, check=True)
