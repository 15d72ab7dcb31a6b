"""`nlab fw ...`: the NIC firewall of a running lab, from one place for every host: rules,
security groups, counters, connections and the stream of verdict events."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.table import Table

from netns_lab import encoding
from netns_lab.cli.base import (
    at_flags,
    key_flags,
    positive,
    stop_options,
    verb_group,
)
from netns_lab.cli.render import out
from netns_lab.features.firewall import live as fwlive
from netns_lab.lab import fanout, running
from netns_lab.observe import subscription
from netns_lab.topology.errors import TopologyError, unknown
from netns_lab.topology.model import Topology

DEFAULTS = "deny in both directions for every NIC with a rule; allow for the others"


def _rule_doc(rule: Any, hits: dict[int, tuple[int, int]]) -> dict[str, Any]:
    def spec(s: Any) -> str:
        if s.kind == "any":
            return "any"
        if s.kind == "cidr":
            return str(s.value)
        nic = f".eth{s.nic}" if s.nic is not None else ""
        return f"{s.kind}:{s.value}{nic}"

    packets, nbytes = hits.get(rule.id, (0, 0))
    return {
        "id": rule.id,
        "apply": [spec(s) for s in rule.apply],
        "direction": rule.direction,
        "peer": [spec(s) for s in rule.peers],
        "proto": rule.proto,
        "ports": [f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in rule.ports],
        "action": rule.action,
        "priority": rule.priority,
        "description": rule.description,
        "hits": {"packets": packets, "bytes": nbytes},
    }


def _hits(live: running.RunningLab) -> dict[int, tuple[int, int]]:
    """Each rule's hits wherever it is enforced: the NIC firewall of every host, and the
    nftables of the firewall VMs and appliances its placement puts it on."""
    from netns_lab.features import placement

    total = dict(fwlive.rule_hits(live))
    for rule, (packets, nbytes) in placement.rule_hits(live.lab, live.topo).items():
        p, b = total.get(rule, (0, 0))
        total[rule] = (p + packets, b + nbytes)
    return total


def _applies_to(topo: Topology, rule: Any, vm: str) -> bool:
    return any(v.name == vm for spec in rule.apply for v, _ in topo.nics_of(spec))


def cmd_show(args: argparse.Namespace, lab: str) -> dict[str, Any]:
    with running.opened(lab) as live:
        topo, hits = live.topo, _hits(live)
        rules = [r for r in topo.firewall.rules if args.vm is None or _applies_to(topo, r, args.vm)]
        if args.vm is not None and args.vm not in {v.name for v in topo.vms}:
            raise ValueError(f"vm: no VM {args.vm!r} in lab {lab!r}")
        return {
            "lab": lab,
            "vm": args.vm,
            "groups": {
                g.name: [m if i is None else f"{m}.eth{i}" for m, i in g.members]
                for g in topo.security_groups
            },
            "rules": [_rule_doc(r, hits) for r in sorted(rules, key=lambda r: r.precedence)],
            "defaults": {
                "policy": "deny in both directions for every NIC with a rule; allow for the others",
                "hits": dict(zip(("packets", "bytes"), hits.get(0, (0, 0)), strict=True)),
            },
        }


def cmd_counters(args: argparse.Namespace, lab: str) -> dict[str, Any]:
    with running.opened(lab) as live:
        hits = _hits(live)
        ordered = [*sorted(k for k in hits if k), *(k for k in hits if not k)]  # the default last
        return {
            "lab": lab,
            "rules": [
                {"rule": encoding.rule_field(k), "packets": hits[k][0], "bytes": hits[k][1]} for k in ordered
            ],
            "events_lost": fwlive.events_lost(live),
            "connections": len(fwlive.connections(live)),
        }


def cmd_connections(args: argparse.Namespace, lab: str) -> dict[str, Any]:
    with running.opened(lab) as live:
        if args.gc:
            fwlive.gc(live)
        return {"lab": lab, "connections": fwlive.connections(live)}


def _rule_from_args(args: argparse.Namespace) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": args.id,
        "apply": args.apply,
        "direction": args.direction,
        "peer": args.peer,
        "proto": args.proto,
        "action": args.action,
    }
    if args.ports:
        rule["ports"] = [int(p) if p.isdigit() else p for p in args.ports.split(",")]
    if args.priority is not None:
        rule["priority"] = args.priority
    if args.description:
        rule["description"] = args.description
    return rule


RULE_FLAGS = ("id", "apply", "direction", "peer", "proto", "ports", "action", "priority", "description")


def cmd_add(args: argparse.Namespace, lab: str) -> dict[str, Any]:
    rule = _rule_from_args(args)
    index = 0

    def edit(data: dict[str, Any]) -> None:
        nonlocal index
        rules = data.setdefault("firewall", {}).setdefault("rules", [])
        index = len(rules)
        rules.append(rule)

    with running.opened(lab) as live:
        try:
            live.change(edit)
        except TopologyError as err:
            raise at_flags(err, "fw add", f"firewall.rules[{index}]", key_flags(RULE_FLAGS)) from None
        return {"lab": lab, "added": rule["id"], "hosts": [h.host for h in live.hosts]}


def cmd_del(args: argparse.Namespace, lab: str) -> dict[str, Any]:
    def edit(data: dict[str, Any]) -> None:
        rules = (data.get("firewall") or {}).get("rules") or []
        kept = [r for r in rules if r.get("id") != args.id]
        if len(kept) == len(rules):
            raise ValueError(f"id: no rule {args.id} (rules: {', '.join(str(r.get('id')) for r in rules)})")
        data["firewall"]["rules"] = kept

    with running.opened(lab) as live:
        live.change(edit)
        return {"lab": lab, "deleted": args.id, "hosts": [h.host for h in live.hosts]}


def cmd_group(args: argparse.Namespace, lab: str) -> dict[str, Any]:
    def edit(data: dict[str, Any]) -> None:
        groups = data.get("security_groups") or {}
        data["security_groups"] = groups
        if args.group not in groups and not (args.action == "add" and args.create):
            hint = "; `nlab fw group add --create GROUP VM` makes a new one" if args.action == "add" else ""
            known = unknown("security group", "security groups", args.group, groups)
            raise ValueError(f"group: {known}{hint}")
        members = list(groups.get(args.group) or [])
        if args.action == "add":
            if args.member in members:
                raise ValueError(f"member: {args.member!r} is already in group {args.group!r}")
            members.append(args.member)
        else:
            if args.member not in members:
                raise ValueError(
                    f"member: {args.member!r} is not in group {args.group!r} "
                    f"({', '.join(members) or 'it is empty'})"
                )
            members.remove(args.member)
        groups[args.group] = members

    with running.opened(lab) as live:
        created = args.action == "add" and args.group not in {g.name for g in live.topo.security_groups}
        try:
            live.change(edit)
        except TopologyError as err:
            where = f"security_groups.{args.group}"
            raise at_flags(err, f"fw group {args.action}", where, _member_arg) from None
        return {"lab": lab, "group": args.group, args.action: args.member, "created": created}


def _member_arg(rest: str) -> str | None:
    return "MEMBER" if rest.startswith("[") else None


def cmd_events(args: argparse.Namespace, lab: str) -> None:
    """Streams: one JSON object per line with --json, a readable line otherwise. This reader's
    losses go to stderr as they happen, and their total at the end."""
    count, duration = positive(args, "count", int), positive(args, "duration", float)
    deadline = time.monotonic() + duration if duration else None
    left = count
    with subscription.Subscription(lab, fanout.Filter(denied=args.denied)) as sub:
        try:
            while left is None or left > 0:
                wait = (
                    200 if deadline is None else max(0, min(200, int((deadline - time.monotonic()) * 1000)))
                )
                shown = _print_events(sub.read(wait), args.json, left)
                left = None if left is None else left - shown
                if deadline is not None and time.monotonic() >= deadline:
                    break
            _print_events(sub.sync(2.0), args.json, 0)  # losses up to now, not the events after the end
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:  # `nlab fw events | head`: the reader left
            sys.stderr.close()
            return
        if sub.lost:
            print(f"nlab fw events: {sub.lost} events were lost since this reader started", file=sys.stderr)


def _print_events(records: list[dict[str, Any]], as_json: bool, most: int | None) -> int:
    """Verdicts (at most `most`) on stdout in one write, losses on stderr; how many verdicts."""
    lines = []
    for record in records:
        if record["kind"] == "lost":
            what = f"{record['count']} events lost ({record['where']}), {record['total']} so far"
            print(f"nlab fw events: {what}", file=sys.stderr)
        elif most is None or len(lines) < most:
            ev = {k: v for k, v in record.items() if k != "kind"}
            lines.append((json.dumps(ev) if as_json else event_line(ev)) + "\n")
    if lines:
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
    return len(lines)


# -- human output --------------------------------------------------------------------------------
def event_line(ev: dict[str, Any]) -> str:
    verdict = "DENY " if ev["verdict"] == "deny" else "allow"
    clock = time.strftime("%H:%M:%S", time.localtime(ev["time"]))
    return (
        f"{clock} {verdict} {ev['nic']:<11} {ev['direction']:<3} {ev['proto']:<6} "
        f"{encoding.flow_text(ev)}  {ev['reason']} ({encoding.rule_text(ev['rule'])})"
        + (f" x{ev['count']}" if ev.get("count", 1) > 1 else "")
    )


def render(verb: str, doc: dict[str, Any]) -> None:
    if verb == "show":
        _rules(doc)
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


def _rules(doc: dict[str, Any]) -> None:
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


# -- parser --------------------------------------------------------------------------------------
def register(sub: Any, name: str, summary: str) -> None:
    description = "the stateful eBPF NIC firewall: rules, groups, counters, events"
    verb = verb_group(sub, name, summary, description, running.NotRunning, render)
    verb("show", cmd_show, "rules (with hits) and groups, optionally of one VM").add_argument("vm", nargs="?")
    verb("counters", cmd_counters, "hits per rule, events lost, tracked connections")
    verb("connections", cmd_connections, "the connection tables of every host").add_argument(
        "--gc", action="store_true", help="first remove expired entries"
    )
    add = verb("add", cmd_add, "add a rule on every host at once")
    add.add_argument("--id", type=int, required=True)
    add.add_argument("--apply", required=True, help="group, vm:NAME or vm:NAME.ethN")
    add.add_argument("--direction", required=True, choices=("in", "out"))
    add.add_argument("--peer", required=True, help="any, CIDR, group:NAME, vm:NAME")
    add.add_argument("--proto", default="any", choices=("tcp", "udp", "icmp", "icmpv6", "any"))
    add.add_argument("--ports", help="e.g. 80,443,8000-8080 (ICMP: types)")
    add.add_argument("--action", required=True, choices=("allow", "deny"))
    add.add_argument("--priority", type=int)
    add.add_argument("--description")
    verb("del", cmd_del, "delete a rule on every host at once").add_argument("id", type=int)
    grp = verb("group", cmd_group, "change a security group's members live")
    grp.add_argument("action", choices=("add", "del"))
    grp.add_argument("group", help="a declared security group")
    grp.add_argument("member", help="VM or VM.ethN")
    grp.add_argument("--create", action="store_true", help="add: make GROUP if it is not declared yet")
    ev = verb("events", cmd_events, "follow verdict events (denied packets, new allowed flows)")
    ev.add_argument("--denied", action="store_true", help="only denials")
    ev.set_defaults(streams=True)
    stop_options(ev, "events", timeout_alias=True)
