"""Human output of the CLI (rich): progress on stderr, tables and summaries on stdout."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from netns_lab.builder import Progress as ProgressFn

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


def _mark(ok: bool) -> str:
    return "[green]up[/]" if ok else "[red]DOWN[/]"


def status(doc: dict[str, Any]) -> None:
    health = "[green]healthy[/]" if doc["healthy"] else f"[red]{doc['phase']}, missing {doc['missing']}[/]"
    out.print(f"[bold]lab {doc['lab']}[/] ({doc['source']}): {health}")
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
    for host in doc["hosts"]:
        pnics = ", ".join(f"{p['name']}→{p['switch']} {_mark(p['up'])}" for p in host["pnics"])
        vsw = ", ".join(
            f"{v['name']}({'internal' if v['internal_only'] else '+'.join(v['uplinks'])})"
            for v in host["vswitches"]
        )
        infra.add_row(host["name"], "host", host["namespace"], f"{pnics}; vSwitches {vsw}")
    out.print(infra)
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
            ",".join(s["sources"]),
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


def _drops(port: dict[str, Any]) -> str:
    parts = []
    for direction in ("ingress", "egress"):
        for reason, c in port["counters"][direction]["drop"].items():
            parts.append(f"[red]{reason}[/] {'in' if direction == 'ingress' else 'out'} {c['packets']}")
    return ", ".join(parts) or "-"


def _ports(doc: dict[str, Any]) -> None:
    """Switch ports with their VLAN policy and counters (in: from the device, out: to it)."""
    table = Table(
        "node",
        "port",
        "peer",
        "policy",
        "in pass",
        "out pass",
        "drops",
        title="switch ports",
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
                _drops(port),
            )
    out.print(table)


def profile_text(topo: Any, profile: Any) -> str:
    """A PortProfile in words: 'access app', 'trunk app,db +untagged', 'plain (untagged)'."""
    if profile.access is not None:
        return f"access {topo.vlan_name(profile.access)}"
    if not profile.trunk:
        return "plain (untagged)" if profile.untagged else "nothing"
    names = ",".join(topo.vlan_name(v) for v in sorted(profile.trunk))
    return f"trunk {names}" + (" +untagged" if profile.untagged else "")


def vlans(doc: dict[str, Any]) -> None:
    verdict = "[green]compliant[/]" if doc["compliant"] else "[red]NOT compliant[/]"
    out.print(f"[bold]{doc['recommendation']}[/] lab {doc['lab']}: {verdict}")
    trunks = Table("trunk", "host side", "switch side", title="trunks", title_justify="left")
    for t in doc["trunks"]:
        trunks.add_row(t["trunk"], t["host_side"], t["switch_side"])
    out.print(trunks)
    for f in doc["findings"]:
        colour = "red" if f["severity"] == "error" else "yellow"
        out.print(f"[{colour}]{f['severity']}[/] {f['trunk']}: VLAN {f['vlan']}: {f['reason']}")
    if doc["probes"]:
        probes = Table("trunk", "VLAN", "result", "from", "to", title="live probes", title_justify="left")
        for p in doc["probes"]:
            ok = p["outcome"] == "delivered" or (p["outcome"] == "lost" and not p["expected"])
            mark = "green" if ok else ("yellow" if p["outcome"] == "no-endpoints" else "red")
            probes.add_row(
                p["trunk"], p["vlan"], f"[{mark}]{p['outcome']}[/]", p["src"] or "-", p["dst"] or "-"
            )
        out.print(probes)


def fw_event_line(ev: dict[str, Any]) -> str:
    verdict = "DENY " if ev["verdict"] == "deny" else "allow"
    ports = f":{ev['sport']} -> " if ev["proto"] in ("tcp", "udp") else " -> "
    dport = f":{ev['dport']}" if ev["proto"] in ("tcp", "udp") else ""
    rule = f"rule {ev['rule']}" if ev["rule"] else "default"
    clock = time.strftime("%H:%M:%S", time.localtime(ev["time"]))
    return (
        f"{clock} {verdict} {ev['vm']:<10} {ev['direction']:<3} {ev['proto']:<6} "
        f"{ev['src'] or '-'}{ports}{ev['dst'] or '-'}{dport}  {ev['reason']} ({rule})"
        + (f" x{ev['count']}" if ev.get("count", 1) > 1 else "")
    )


def fw(verb: str, doc: dict[str, Any]) -> None:
    if verb == "show":
        table = Table(
            "id",
            "apply",
            "dir",
            "peer",
            "proto",
            "ports",
            "action",
            "prio",
            "hits",
            "description",
            title=f"firewall rules of lab {doc['lab']}" + (f", VM {doc['vm']}" if doc["vm"] else ""),
            title_justify="left",
        )
        for r in doc["rules"]:
            table.add_row(
                str(r["id"]),
                ",".join(r["apply"]),
                r["direction"],
                ",".join(r["peer"]),
                r["proto"],
                ",".join(r["ports"]) or "all",
                r["action"],
                str(r["priority"]),
                str(r["hits"]["packets"]),
                r["description"],
            )
        out.print(table)
        for name, members in doc["groups"].items():
            out.print(f"group {name}: {', '.join(members) or '(empty)'}")
        out.print(f"defaults: {doc['defaults']['policy']} ({doc['defaults']['hits']['packets']} packets)")
    elif verb == "connections":
        table = Table("host", "vnic", "proto", "src", "dst", "state", "origin", "rule", "idle s")
        for c in doc["connections"]:
            icmp = c["proto"] in ("icmp", "icmpv6")  # its "ports": the identifier and the request type
            table.add_row(
                c["host"],
                c["vnic"],
                c["proto"],
                c["src"] if icmp else f"{c['src']}:{c['sport']}",
                f"{c['dst']} (id {c['sport']}, type {c['dport']})" if icmp else f"{c['dst']}:{c['dport']}",
                c["state"],
                c["origin"],
                str(c["rule"]),
                str(c["idle_s"]),
            )
        out.print(table)
    else:
        out.print_json(data=doc)


def trace(doc: dict[str, Any]) -> None:
    out.print(
        f"[bold]trace[/] {doc['from']} -> {doc['to']} {doc['proto']}/{doc['dport']} in lab {doc['lab']}"
    )
    for i, st in enumerate(doc["stages"], 1):
        colour = "green" if st["verdict"] == "pass" else "red"
        why = f" ({st['reason']})" if st["reason"] else ""
        rule = f" rule {st['rule']}" if st["rule"] else ""
        where = f"{st['node']:<6} {st['port']:<12} {st['program']:<15}"
        out.print(f" {i}. {where} [{colour}]{st['verdict']}[/]{why}{rule}")
    if doc["routed"]:
        r = doc["routed"]
        out.print(f" -> reaches {r['via']} ({r['role']}), which routes it: {r['note']}")
    else:
        out.print(" delivered" if doc["delivered"] else " [red]not delivered[/]")
