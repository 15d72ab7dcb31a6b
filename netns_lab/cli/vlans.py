"""`nlab vlans`: VLAN trunks of a topology file or a running lab against their switch ports
(NIST VM-VN-R1); with --probe, real ARP probes across every trunk of a running lab."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from netns_lab.cli.base import EXIT_NONCOMPLIANT, UsageError, emit, json_option, lab_option
from netns_lab.cli.render import out
from netns_lab.cli.source import target
from netns_lab.features.vlan import checks as vlancheck
from netns_lab.topology import describe


def cmd_vlans(args: argparse.Namespace) -> int:
    """Exit 0 when the design is compliant, exit 3 when a trunk misses a VLAN its port carries."""
    topo, running = target(args)
    if args.probe and not running:
        raise UsageError("vlans --probe needs a lab that is up (name it, or `nlab up` first)")
    probes = vlancheck.probe_vlans(topo) if args.probe else []
    findings = vlancheck.check(topo) + vlancheck.probe_findings(probes)
    doc = {
        "lab": topo.lab,
        "recommendation": vlancheck.RECOMMENDATION,
        "trunks": [
            {
                "trunk": t.name,
                "host": t.host,
                "pnic": t.pnic,
                "vswitch": t.vswitch,
                "switch": t.switch,
                "port": t.port,
                "host_side": describe.profile_text(topo, t.host_side),
                "switch_side": describe.profile_text(topo, t.switch_side),
            }
            for t in vlancheck.trunks(topo)
        ],
        "findings": [f.__dict__ for f in findings],
        "probes": [p.__dict__ for p in probes],
    }
    doc["compliant"] = not any(f.severity == "error" for f in findings)
    emit(args, doc, render)
    return 0 if doc["compliant"] else EXIT_NONCOMPLIANT


def render(doc: dict[str, Any]) -> None:
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


def register(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog="exit status 3 when a trunk does not carry what its switch port does",
    )
    p.set_defaults(fn=cmd_vlans)
    json_option(p)
    p.add_argument("target", nargs="?", help="a topology file, or a lab (the same as --lab)")
    p.add_argument(
        "--probe", action="store_true", help="also probe every VLAN across every trunk (ARP; lab up)"
    )
    lab_option(p)
