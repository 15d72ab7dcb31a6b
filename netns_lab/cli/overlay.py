"""`nlab overlay ...`: the VXLAN overlay of a running lab (NIST 2.5): its segments and VTEPs, every
VTEP's FDB and neighbour entries with who programmed them, and the kernel tables against the model."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from netns_lab.cli.base import EXIT_NONCOMPLIANT, emit, running_lab, verb_group
from netns_lab.cli.render import out
from netns_lab.cli.source import running, target
from netns_lab.lab.state import NotRunning
from netns_lab.topology.model import Topology


def _overview(topo: Topology) -> dict[str, Any]:
    from netns_lab.features.overlay import install

    spans = topo.segment_spans()
    return {
        "lab": topo.lab,
        "controller": install.controller_pid(topo.lab),
        "segments": [
            {
                "segment": s.name,
                "vni": s.vni,
                "tenant": s.tenant,
                "mode": s.mode,
                "bridge": s.bridge,
                "hosts": spans.get(s.name, []),
            }
            for s in sorted(topo.segments, key=lambda s: s.vni)
        ],
        "vteps": {h.name: str(ip) for h in topo.hosts if (ip := topo.vtep_ip(h.name)) is not None},
    }


def cmd_show(args: argparse.Namespace, lab: str) -> dict[str, Any]:
    from netns_lab.features.overlay import controller, install

    topo, _ = running(lab)
    doc = _overview(topo)
    doc["hosts"] = controller.show(lab, install.hosted(topo))
    doc["guard"] = install.guard_counts(lab, topo)
    return doc


def check_document(lab: str) -> dict[str, Any]:
    """The kernel tables of every VTEP against the plan: every entry of controller segments, the
    replication entries of flood and evpn segments (their MACs are learned, or BGP's as traffic
    makes them known)."""
    from netns_lab.features.overlay import controller, install

    topo, _ = running(lab)
    doc = _overview(topo)
    drift = controller.check(lab, install.plan_of(topo)) + controller.check(lab, install.evpn_plan(topo))
    doc["checked"] = sorted(s.name for s in topo.segments)
    doc["drift"] = [c.as_dict() for c in drift]
    doc["clean"] = not drift
    return doc


def run_check(args: argparse.Namespace) -> int:
    """Exit 0 when every VTEP's tables are as planned, 3 on drift."""
    lab = running_lab(args)
    try:
        doc = check_document(lab)
    except NotRunning:
        from netns_lab.cli.base import not_up

        raise not_up(lab) from None
    emit(args, doc, lambda d: render("check", d))
    return 0 if doc["clean"] else EXIT_NONCOMPLIANT


_OVERLAY_IDS = ("VM-VN-R2", "VM-VN-R3")  # VM-VN-R1 is `nlab vlans`'s (and `nlab audit`'s)


def compliance_document(topo: Topology) -> dict[str, Any]:
    """The features' static checks of the virtual-network recommendations (VM-VN-R2 and VM-VN-R3
    come from the overlay; other areas' checks are other commands'); compliant unless one is not met."""
    from netns_lab.features.registry import FEATURES

    results = [r for feature in FEATURES for r in feature.checks(topo) if r["id"] in _OVERLAY_IDS]
    return {
        "lab": topo.lab,
        "recommendations": results,
        "compliant": not any(r["status"] == "not met" for r in results),
    }


def run_compliance(args: argparse.Namespace) -> int:
    """Exit 0 when every recommendation is met or does not apply, 3 when one is not met."""
    topo, _ = target(args)
    doc = compliance_document(topo)
    emit(args, doc, lambda d: render("compliance", d))
    return 0 if doc["compliant"] else EXIT_NONCOMPLIANT


def _compliance(doc: dict[str, Any]) -> None:
    verdict = "[green]compliant[/]" if doc["compliant"] else "[red]NOT compliant[/]"
    ids = ", ".join(r["id"] for r in doc["recommendations"]) or "no recommendation"
    out.print(f"[bold]{ids}[/] lab {doc['lab']}: {verdict}")
    colour = {"met": "green", "not met": "red", "not applicable": "yellow"}
    for r in doc["recommendations"]:
        out.print(f"[{colour[r['status']]}]{r['status']}[/] {r['id']}: {r['reason']}")
        for obj in r["objects"]:
            out.print(f"  {obj}")


def _segments(doc: dict[str, Any]) -> None:
    controller = doc["controller"]
    out.print(
        f"[bold]overlay[/] of lab {doc['lab']}: controller {f'pid {controller}' if controller else '-'}"
    )
    table = Table("segment", "VNI", "tenant", "mode", "hosts", title="segments", title_justify="left")
    for s in doc["segments"]:
        table.add_row(s["segment"], str(s["vni"]), s["tenant"], s["mode"], ", ".join(s["hosts"]) or "-")
    out.print(table)
    vteps = ", ".join(f"{h} {ip}" for h, ip in doc["vteps"].items()) or "-"
    out.print(f"VTEPs: {vteps}")


def render(verb: str, doc: dict[str, Any]) -> None:
    if verb == "compliance":
        _compliance(doc)
        return
    _segments(doc)
    if verb == "check":
        if doc["clean"]:
            out.print(f"[green]clean[/]: every VTEP holds the planned entries ({', '.join(doc['checked'])})")
            return
        table = Table("host", "segment", "table", "device", "entry", "drift", "have", "want", title="drift")
        for c in doc["drift"]:
            table.add_row(
                c["host"],
                c["segment"],
                c["table"],
                c["dev"],
                c["key"],
                c["action"],
                c["have"] or "-",
                c["want"] or "-",
            )
        out.print(table)
        n = len(doc["drift"])
        out.print(f"[red]{n} {'entry differs' if n == 1 else 'entries differ'} from the plan[/]")
        return
    table = Table(
        "host", "VNI", "table", "device", "MAC / IP", "to", "origin", title="tables", title_justify="left"
    )
    for host, segments in doc["hosts"].items():
        for s in segments:
            for e in s["fdb"]:
                table.add_row(
                    host, str(s["vni"]), e["table"], e["dev"], e["mac"], e["dst"] or "-", e["origin"]
                )
            for n in s["neighbours"]:
                table.add_row(host, str(s["vni"]), "neigh", n["dev"], n["ip"], n["mac"] or "-", n["origin"])
    out.print(table)
    guard = Table(
        "host", "pNIC", "decisions", "accepted per VNI", title="underlay guard", title_justify="left"
    )
    for host, g in doc["guard"].items():
        vnis = ", ".join(f"{vni} {c['packets']}" for vni, c in g["vnis"].items()) or "-"
        for pnic, reasons in g["pnics"].items():
            decisions = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())) or "-"
            guard.add_row(host, pnic, decisions, vnis)
    out.print(guard)


def register(sub: Any, name: str, summary: str) -> None:
    description = "segments, VTEPs and every VTEP's FDB/neighbour entries; the tables against the model"
    verb = verb_group(sub, name, summary, description, NotRunning, render)
    verb("show", cmd_show, "segments, VNIs, VTEPs and each host's entries with their origin")
    check = verb(
        "check",
        lambda args, lab: check_document(lab),
        "the kernel tables against the model (exit 3 on drift)",
    )
    check.set_defaults(fn=run_check)
    compliance = verb(
        "compliance",
        lambda args, lab: compliance_document(running(lab)[0]),
        "VM-VN-R2 and VM-VN-R3 of a topology file or a running lab (exit 3 when one is not met)",
    )
    compliance.set_defaults(fn=run_compliance)
    compliance.add_argument("target", nargs="?", help="a topology file, or a lab (the same as --lab)")
