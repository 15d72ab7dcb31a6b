"""Human output of the CLI, one way for every command: rich consoles (`out` for stdout, `err` for
stderr) that each group renders its documents on, and the lab's own renderings (progress of
`up`, summaries of `up`/`down`/`validate`, the tables of `status`). Lines of a stream (`watch`,
`fw events`) are written as they come instead."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ProgressFn = Callable[[int, int, str], None]  # the builder's progress callback (done, total, label)

# Piped output (less, a file, a CI log) gets full rows instead of ellipses at 80 columns.
out = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, emoji=False)


@contextlib.contextmanager
def progress(enabled: bool) -> Iterator[ProgressFn | None]:
    if not enabled:
        yield None
        return
    bar = Progress(
        TextColumn("[bold]building[/] {task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    with bar:
        task = bar.add_task("", total=None)

        def report(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        yield report


def up_summary(s: dict[str, Any]) -> None:
    lab = s["lab"]
    out.print(
        f"[bold green]lab {lab} is up[/] in {s['seconds']:.2f} s: {s['hosts']} hosts, "
        f"{s['switches']} switches, {s['networks']} networks, {s['vms']} VMs "
        f"({s['namespaces']} namespaces named {lab}-*)"
    )
    out.print("look at it:")
    for cmd in (
        f"nlab status {lab}",
        "nlab exec <vm> -- ip addr",
        f"nlab graph {lab} --out {lab}.svg",
        f"nlab down {lab}",
    ):
        out.print(f"  {cmd}")


def down_summary(d: dict[str, Any]) -> None:
    if not d["removed"]:
        out.print(f"nothing to remove{' for lab ' + d['lab'] if d['lab'] else ''}")
        return
    extra = f", stopped {len(d['processes'])} processes" if d["processes"] else ""
    out.print(f"lab {d['lab']} is down: removed {len(d['namespaces'])} namespaces{extra}")


def line(text: str) -> None:
    """One line of plain text (no markup), never wrapped: lines that scripts may cut apart."""
    out.print(escape(text), soft_wrap=True)


def _vswitch_way_out(v: dict[str, Any]) -> str:
    """Where a vSwitch's frames leave the host: its uplinks, its segment's VXLAN device, or nowhere."""
    if v.get("segment"):
        return f"segment {v['segment']}"
    return "internal" if v["internal_only"] else "+".join(v["uplinks"])


def validated(path: str, d: dict[str, Any]) -> None:
    overlay = "".join(f", {d[key]} {key}" for key in ("routers", "segments") if d[key])
    line(
        f"{path}: ok: lab {d['lab']}, {d['hosts']} hosts, {d['switches']} switches, "
        f"{d['networks']} networks, {d['vms']} VMs{overlay}"
    )


def _move_text(move: dict[str, Any]) -> str:
    from netns_lab.features.team.events import describe

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(move["time"]))
    return f"{when} {escape(describe(move))}"


def _mark(ok: bool) -> str:
    return "[green]up[/]" if ok else "[red]DOWN[/]"


def status(doc: dict[str, Any]) -> None:
    health = (
        "[green]healthy[/]" if doc["healthy"] else f"[red]NOT healthy[/] ({len(doc['problems'])} problems)"
    )
    part = f", machine {doc['machine']}'s part" if doc.get("machine") else ""
    out.print(f"[bold]lab {doc['lab']}[/] ({doc['source']}{part}): {health}")
    for problem in doc["problems"]:
        out.print(f" [red]problem[/] {escape(problem)}")
    infra = Table("node", "kind", "namespace", "ports / NICs", title="infrastructure", title_justify="left")
    for sw in doc["switches"]:
        infra.add_row(
            sw["name"],
            "switch",
            sw["namespace"],
            ", ".join(f"{p['name']} {_mark(p['up'])}" for p in sw["ports"]),
        )
    for net in doc["networks"]:
        infra.add_row(net["name"], "network", net["namespace"], f"{net['ip'] or '-'} on {net['switch']}")
    for router in doc.get("routers", []):
        nics = ", ".join(
            f"{n['name']} {n['ip']}→{n['switch'] or 'link ' + str(n.get('link'))} {_mark(n['up'])}"
            for n in router["nics"]
        )
        infra.add_row(router["name"], "router", router["namespace"], nics)
    for appliance in doc.get("appliances", []):
        nics = ", ".join(f"{n['name']} {n['ip']} {_mark(n['up'])}" for n in appliance["nics"])
        infra.add_row(
            appliance["name"],
            "firewall appliance",
            appliance["namespace"],
            f"{nics} on {appliance['switch']}",
        )
    for host in doc["hosts"]:
        pnics = ", ".join(f"{p['name']}→{p['switch']} {_mark(p['up'])}" for p in host["pnics"])
        vsw = ", ".join(f"{v['name']}({_vswitch_way_out(v)})" for v in host["vswitches"])
        infra.add_row(host["name"], "host", host["namespace"], f"{pnics}; vSwitches {vsw}")
    out.print(infra)
    for host in doc["hosts"]:
        for team in host.get("teams", []):
            members = ", ".join(f"[bold]{m}[/]" if m == team["active"] else m for m in team["members"])
            detection = "+".join(team["detection"])
            active = team["active"] or "?"
            out.print(f" team {host['name']}.{team['vswitch']}: {members} (active {active}; {detection})")
            if team.get("last_failover"):
                out.print(f"   last failover: {_move_text(team['last_failover'])}")
    for fault in doc.get("faults", []):
        extra = f" p={fault['p']}" if "p" in fault else f" {fault['hz']} Hz" if "hz" in fault else ""
        out.print(f" [yellow]fault[/] {fault['link']}: {fault['mode']}{extra}")
    vms = Table(
        "vm",
        "host",
        "role",
        "nic",
        "vswitch",
        "ip",
        "mac",
        "vlan",
        "state",
        title="VMs",
        title_justify="left",
    )
    for vm in doc["vms"]:
        for i, nic in enumerate(vm["nics"]):
            first = i == 0
            vms.add_row(
                vm["name"] if first else "",
                vm["host"] if first else "",
                vm["role"] if first and vm["role"] != "none" else "",
                nic["name"],
                nic["vswitch"],
                nic["ip"] or "-",
                nic["mac"],
                str(nic["vlan"] or "-"),
                _mark(nic["up"]),
            )
    out.print(vms)
    _ports(doc)
    _mirror_sessions(doc.get("mirrors", []))


def _mirror_sessions(sessions: list[dict[str, Any]]) -> None:
    if not sessions:
        return
    table = Table(
        "session",
        "sources",
        "dest",
        "dir",
        "tap",
        "copies",
        "dropped",
        title="mirror sessions",
        title_justify="left",
    )
    for s in sessions:
        c = s["counters"]
        table.add_row(
            s["name"],
            ", ".join(s["sources"]),
            s["dest"],
            s["direction"],
            s["tap"],
            str(c["packets"]),
            str(c["dropped"]),
        )
    out.print(table)


def _policy(port: dict[str, Any]) -> str:
    if port["mode"] == "access":
        return f"access {port['vlan_name']}"
    if port["mode"] == "plain":
        return "plain (untagged)"
    tagged = ",".join(port["allowed_names"])
    return f"trunk {tagged}" + (" +untagged" if port["untagged"] else "")


def _drops(port: dict[str, Any], cls: str) -> str:
    colour = "red" if cls == "violation" else "dim"
    parts = [
        f"[{colour}]{d['reason']}[/] {d['direction']} {d['packets']}"
        for d in port["drops"]
        if d["class"] == cls
    ]
    return ", ".join(parts) or "-"


def _ports(doc: dict[str, Any]) -> None:
    """Switch ports with their VLAN policy and counters; directions seen from the port's peer."""
    table = Table(
        "node",
        "port",
        "peer",
        "policy",
        "out pass",
        "in pass",
        "filtered (expected)",
        "violations",
        title="switch ports (out: sent by the peer, in: towards it)",
        title_justify="left",
    )
    for node in [*doc["hosts"], *doc["switches"]]:
        for i, port in enumerate(node.get("ports", [])):
            if "counters" not in port:
                continue
            c = port["counters"]
            table.add_row(
                node["name"] if i == 0 else "",
                port["name"],
                port["peer"],
                _policy(port),
                str(c["ingress"]["pass"]["packets"]),
                str(c["egress"]["pass"]["packets"]),
                _drops(port, "expected"),
                _drops(port, "violation"),
            )
    out.print(table)
    violations = sum(
        d["packets"]
        for node in [*doc["hosts"], *doc["switches"]]
        for p in node.get("ports", [])
        for d in p.get("drops", [])
        if d["class"] == "violation"
    )
    plural = "s" if violations != 1 else ""
    out.print(f"violations: {violations} packet{plural}" if violations else "violations: none")
