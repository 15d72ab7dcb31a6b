"""`nlab teams`: the NIC teams of a topology file or a running lab (NIST 3) and their VM-MP-R1..R3
checks; on a running lab also each team's active member, its members' states and the faults
injected on their cables."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from netns_lab.cli.base import EXIT_NONCOMPLIANT, emit, json_option, lab_option
from netns_lab.cli.render import out
from netns_lab.cli.source import target
from netns_lab.topology import names
from netns_lab.topology.model import Topology

STATUS_COLOURS = {"met": "green", "not met": "red", "not applicable": "dim"}


def document(topo: Topology, running: bool) -> dict[str, Any]:
    """The teams and the VM-MP checks; compliant unless a check is not met."""
    from netns_lab.features.team import checks, plan

    faults = _faults(topo.lab) if running else None
    teams = [_team(topo, p, faults) for p in plan.teams(topo)]
    results = checks.check(topo)
    return {
        "lab": topo.lab,
        "running": running,
        "teams": teams,
        "recommendations": results,
        "compliant": not any(r["status"] == checks.NOT_MET for r in results),
    }


def _faults(lab: str) -> list[dict[str, Any]]:
    from netns_lab.features.team import faults

    return faults.active(lab)


def _team(topo: Topology, p: Any, faults: list[dict[str, Any]] | None) -> dict[str, Any]:
    host = topo.host(p.host)
    pnics = {n.name: n for n in host.pnics}
    t = p.team
    entry: dict[str, Any] = {
        "team": p.name,
        "host": p.host,
        "vswitch": p.vswitch,
        "members": [
            {
                "name": m,
                "order": i + 1,
                "driver": pnics[m].driver,
                "pci_bus": pnics[m].pci_bus,
                "switch": pnics[m].switch,
            }
            for i, m in enumerate(p.members)
        ],
        "policy": t.policy,
        "failback": t.failback,
        "detection": list(t.detection),
        "beacon_interval": f"{t.beacon_interval_ms}ms",
        "beacon_miss": t.beacon_miss,
        "arp_target": None if t.arp_target is None else str(t.arp_target),
        "announce": t.announce,
    }
    if faults is not None:
        entry.update(_live(topo, p, faults))
    return entry


def _live(topo: Topology, p: Any, faults: list[dict[str, Any]]) -> dict[str, Any]:
    """What the lab does now: the active member from the dataplane's team map, each member's
    state from its monitor, the faults on the members' cables, the latest move."""
    from netns_lab.features.team import events
    from netns_lab.features.team import faults as team_faults

    shown = next(t for t in team_faults.teams_doc(topo, p.host) if t["vswitch"] == p.vswitch)
    states = events.member_states(topo.lab, p.host, p.name)
    pnics = {n.name: n for n in topo.host(p.host).pnics}
    cables = {(pnics[m].switch, names.switch_port(p.host, m)): m for m in p.members}
    on_members = [
        {**f, "member": cables[(f["switch"], f["port"])]}
        for f in faults
        if (f["switch"], f["port"]) in cables
    ]

    def state(m: str) -> str:
        said = states.get(m, "unknown")
        if said == "ok":
            return "active" if m == shown["active"] else "standby"
        return said

    return {
        "active": shown["active"],
        "states": {m: state(m) for m in p.members},
        "faults": [
            {k: f[k] for k in ("member", "link", "mode", "p", "hz", "since") if k in f} for f in on_members
        ],
        "last_failover": shown["last_failover"],
    }


def cmd_teams(args: argparse.Namespace) -> int:
    """Exit 0 when every VM-MP check is met or not applicable, 3 when one is not met."""
    topo, running = target(args)
    doc = document(topo, running)
    emit(args, doc, render)
    return 0 if doc["compliant"] else EXIT_NONCOMPLIANT


def render(doc: dict[str, Any]) -> None:
    from netns_lab.features.team.events import describe

    verdict = "[green]compliant[/]" if doc["compliant"] else "[red]NOT compliant[/]"
    where = "running" if doc["running"] else "topology"
    out.print(f"[bold]VM-MP-R1..R3[/] lab {doc['lab']} ({where}): {verdict}")
    if not doc["teams"]:
        out.print("no vSwitch has a NIC team")
    for t in doc["teams"]:
        interval = (
            f", beacons every {t['beacon_interval']} x{t['beacon_miss']}"
            if "beacon" in t["detection"]
            else ""
        )
        arp = f", ARP target {t['arp_target']}" if t["arp_target"] else ""
        title = (
            f"{t['team']}: {t['policy']}, failback {'on' if t['failback'] else 'off'}, "
            f"detection {'+'.join(t['detection'])}{interval}{arp}"
        )
        columns = ["#", "member", "driver", "PCI", "switch"] + (["state"] if doc["running"] else [])
        out.print(f"[bold]{t['team']}[/]{escape(title[len(t['team']) :])}")
        table = Table(*columns)
        for m in t["members"]:
            row = [str(m["order"]), m["name"], m["driver"], m["pci_bus"], m["switch"]]
            if doc["running"]:
                state = t["states"][m["name"]]
                colour = "green" if state == "active" else "red" if state.startswith("failed") else "default"
                row.append(f"[{colour}]{escape(state)}[/]")
            table.add_row(*row)
        out.print(table)
        for f in t.get("faults", []):
            extra = f" p={f['p']}" if "p" in f else f" {f['hz']} Hz" if "hz" in f else ""
            out.print(f" [yellow]fault[/] {f['link']} ({f['member']}): {f['mode']}{extra}")
        if t.get("last_failover"):
            out.print(f" last failover: {escape(describe(t['last_failover']))}")
    checks = Table("recommendation", "status", "reason", title="checks", title_justify="left")
    for r in doc["recommendations"]:
        colour = STATUS_COLOURS.get(r["status"], "default")
        checks.add_row(r["id"], f"[{colour}]{r['status']}[/]", escape(r["reason"]))
    out.print(checks)


def register(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog="exit status 3 when a VM-MP recommendation is not met, 2 on bad input",
    )
    p.set_defaults(fn=cmd_teams)
    json_option(p)
    p.add_argument("target", nargs="?", help="a topology file, or a lab (the same as --lab)")
    lab_option(p)
