"""Human output of the CLI (rich): progress on stderr, tables and summaries on stdout."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from netns_lab.builder import Progress as ProgressFn

# Piped output (less, a file, a CI log) gets full rows instead of ellipses at 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False)


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
