"""`nlab placement compare`: the same workload through each firewall placement of a running lab
(NIST 4.1-4.3): RTT, TCP request/response rate and throughput, with ratios to no firewall."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from netns_lab.cli.base import UsageError, emit, json_option, lab_option, running_lab
from netns_lab.cli.render import out
from netns_lab.cli.source import running


def cmd_compare(args: argparse.Namespace) -> int:
    from netns_lab.features.placement import compare

    topo, _ = running(running_lab(args))
    if len(compare.pairs(topo)) < 2:
        raise UsageError(
            "placement compare: the lab needs a VM no rule applies to and, on its host, VMs of other "
            "placements (see labs/placements.yaml)"
        )
    emit(args, compare.measure(topo, rounds=args.rounds), render)
    return 0


def render(doc: dict[str, Any]) -> None:
    table = Table(
        "placement",
        "pair",
        "RTT µs",
        "req/resp /s",
        "Gbit/s",
        "RTT ×",
        "rate ×",
        "Gbit/s ×",
        title=f"lab {doc['lab']}: medians of {doc['rounds']} rounds, ratios to no firewall",
        title_justify="left",
    )
    for pair in doc["pairs"]:
        p = pair["placement"]
        f, r = doc["figures"][p], doc["ratios_to_none"].get(p, {})
        table.add_row(
            p,
            f"{pair['src']} -> {pair['dst']}:{pair['port']}",
            f"{f['rtt_us']:.0f}",
            f"{f['rr_per_s']:.0f}",
            f"{f['gbps']:.2f}",
            str(r.get("rtt_us", "-")),
            str(r.get("rr_per_s", "-")),
            str(r.get("gbps", "-")),
        )
    out.print(table)


def register(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(name, help=summary, description=summary)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    c = verbs.add_parser("compare", help="the same workload through each placement, side by side")
    c.set_defaults(fn=cmd_compare)
    c.add_argument("--rounds", type=int, default=3, help="alternated rounds (medians)")
    json_option(c)
    lab_option(c)
