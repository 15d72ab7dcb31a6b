"""`nlab trace`: a crafted packet through the real programs of every port it crosses."""

from __future__ import annotations

import argparse
from typing import Any

from netns_lab import encoding
from netns_lab.cli.base import (
    EXIT_NONCOMPLIANT,
    UsageError,
    chosen_lab,
    emit,
    json_option,
    lab_option,
    resolve_lab,
)
from netns_lab.cli.render import out
from netns_lab.cli.source import running


def cmd_trace(args: argparse.Namespace) -> int:
    """Exit 0 when the packet is delivered, exit 3 when it is not (dropped, unreachable)."""
    lab = resolve_lab(chosen_lab(args))
    assert lab is not None
    topo, _ = running(lab)
    from netns_lab.observe import trace  # scapy takes a quarter second to import: only for this command

    try:
        doc = trace.trace(topo, args.vm, args.to, args.proto, args.dport)
    except (trace.TraceError, ValueError) as err:
        raise UsageError(f"trace: {err}") from None
    emit(args, doc, render)
    return 0 if doc["delivered"] else EXIT_NONCOMPLIANT


def render(doc: dict[str, Any]) -> None:
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


def register(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name, help=summary, description=summary, epilog="exit status 3 when the packet is not delivered"
    )
    p.set_defaults(fn=cmd_trace)
    json_option(p)
    p.add_argument("vm", help="the VM that sends it")
    p.add_argument("--to", required=True, help="destination address")
    p.add_argument("--proto", default="tcp", choices=("tcp", "udp", "icmp"))
    p.add_argument("--dport", type=int, default=80)
    lab_option(p)
