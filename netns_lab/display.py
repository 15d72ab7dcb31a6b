"""Human output of the CLI (rich): progress on stderr, tables and summaries on stdout."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from netns_lab import encoding
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
    health = (
        "[green]healthy[/]" if doc["healthy"] else f"[red]NOT healthy[/] ({len(doc['problems'])} problems)"
    )
    out.print(f"[bold]lab {doc['lab']}[/] ({doc['source']}): {health}")
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


profile_text = encoding.profile_text  # callers from before it moved


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
    clock = time.strftime("%H:%M:%S", time.localtime(ev["time"]))
    return (
        f"{clock} {verdict} {ev['nic']:<11} {ev['direction']:<3} {ev['proto']:<6} "
        f"{encoding.flow_text(ev)}  {ev['reason']} ({encoding.rule_text(ev['rule'])})"
        + (f" x{ev['count']}" if ev.get("count", 1) > 1 else "")
    )


def fw(verb: str, doc: dict[str, Any]) -> None:
    if verb == "show":
        _fw_rules(doc)
    elif verb == "connections":
        table = Table("host", "nic", "proto", "flow", "state", "origin", "rule", "idle s")
        for c in doc["connections"]:
            table.add_row(
                c["host"],
                c["nic"],
                c["proto"],
                encoding.flow_text(c),
                c["state"],
                c["origin"],
                encoding.rule_text(c["rule"]),
                str(c["idle_s"]),
            )
        out.print(table)
    elif verb == "counters":
        table = Table(
            "rule", "packets", "bytes", title=f"firewall counters of lab {doc['lab']}", title_justify="left"
        )
        for r in doc["rules"]:
            table.add_row(encoding.rule_text(r["rule"]), str(r["packets"]), str(r["bytes"]))
        out.print(table)
        out.print(f"tracked connections: {doc['connections']}; events lost: {doc['events_lost']}")
    elif verb == "add":
        out.print(f"rule {doc['added']} added on every host of lab {doc['lab']} ({', '.join(doc['hosts'])})")
    elif verb == "del":
        out.print(
            f"rule {doc['deleted']} deleted on every host of lab {doc['lab']} ({', '.join(doc['hosts'])})"
        )
    elif verb == "group":
        if "add" in doc:
            made = " (a new group)" if doc["created"] else ""
            out.print(f"{doc['add']} added to group {doc['group']}{made} on every host of lab {doc['lab']}")
        else:
            out.print(f"{doc['del']} removed from group {doc['group']} on every host of lab {doc['lab']}")
    else:
        raise ValueError(f"no human output for fw {verb}")


def _fw_rules(doc: dict[str, Any]) -> None:
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


def trace(doc: dict[str, Any]) -> None:
    what = doc["proto"] if doc["dport"] is None else f"{doc['proto']}/{doc['dport']}"
    out.print(f"[bold]trace[/] {doc['from']} -> {doc['to']} {what} in lab {doc['lab']}")
    for i, st in enumerate(doc["stages"], 1):
        colour = "green" if st["verdict"] == "pass" else "red"
        why = f" ({st['reason']})" if st["reason"] else ""
        decided = f" {encoding.rule_text(st['rule'])}" if st["rule"] is not None else ""
        vlan = f"vlan {st['vlan']}" if st["vlan"] else ""
        where = f"{st['node']:<6} {st['port'] or '-':<14} {st['program']:<24} {vlan:<9}"
        out.print(f" {i:>2}. {where} [{colour}]{st['verdict']}[/]{why}{decided}")
        for m in st["mirrored"]:
            did = "would be copied" if m["copies"] else "would be sampled out"
            out.print(f"       {did} by mirror session {m['session']} (not sent)")
        for rule in st.get("matched", []):
            out.print(f"       nftables: {rule}")
    colour = "green" if doc["delivered"] else "red"
    out.print(f" [{colour}]{doc['why']}[/]")
