"""The lab's life: `nlab up`, `down`, `status`, `exec`, `validate`, `graph`.

The builder, teardown, status and netns modules are imported by the handler that needs them, so
that `nlab validate` and `nlab graph FILE` do not load the kernel side of the lab.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netns_lab.cli import render
from netns_lab.cli.base import (
    EXIT_NONCOMPLIANT,
    Refused,
    UsageError,
    chosen_lab,
    emit,
    json_option,
    lab_option,
    resolve_lab,
    write_output,
)
from netns_lab.cli.source import DEFAULT_TOPOLOGY, default_topology, load, running, target
from netns_lab.lab import state
from netns_lab.topology import machines
from netns_lab.topology.model import Topology
from netns_lab.topology.names import namespace


def cmd_up(args: argparse.Namespace) -> int:
    from netns_lab.lab import builder, teardown

    topo, text = load(args.topology or default_topology(), args.name)
    wires = _links(args.link)
    if args.machine is not None:
        topo = machines.part(topo, args.machine, wires)
    elif wires:
        raise UsageError("--link: plugs a machine's part into a link: give --machine too")
    if state.LabState.read(topo.lab) is not None:
        if not args.replace:
            raise UsageError(
                f"lab {topo.lab!r} is already up: `nlab down {topo.lab}` first, or `nlab up --replace`"
            )
        teardown.down(topo.lab)
    started = time.perf_counter()
    with render.progress(enabled=not args.json and sys.stderr.isatty()) as report:
        try:
            builder.up(topo, text, report, _recorder(topo, wires))
        except builder.BuildError as err:
            raise Refused(str(err)) from err
    summary = {
        "lab": topo.lab,
        "machine": topo.machine,
        "source": topo.source,
        "seconds": round(time.perf_counter() - started, 3),
        "namespaces": len(topo.node_names()),
        "hosts": len(topo.hosts),
        "switches": len(topo.switches),
        "networks": len(topo.networks),
        "vms": len(topo.vms),
    }
    emit(args, summary, render.up_summary)
    return 0


def _recorder(topo: Topology, wires: dict[str, str]) -> Callable[[state.LabState], None] | None:
    """A machine's part records which machine it is, so that every later command (and the
    lab's own processes) sees the part, not the whole lab."""
    machine = topo.machine
    return None if machine is None else lambda st: st.record_part(machine, wires)


def _links(given: list[str] | None) -> dict[str, str]:
    """`--link NAME=NETNS` options: link name -> namespace."""
    wires: dict[str, str] = {}
    for item in given or []:
        name, eq, ns = item.partition("=")
        if not (name and eq and ns):
            raise UsageError(f"--link {item}: expected NAME=NETNS")
        if "/" in ns or ns.startswith("."):  # a name under /run/netns, never a path
            raise UsageError(f"--link {item}: {ns!r} is not a namespace name")
        if name in wires:
            raise UsageError(f"--link {name}: given twice")
        wires[name] = ns
    return wires


def cmd_down(args: argparse.Namespace) -> int:
    from netns_lab.lab import teardown

    lab = resolve_lab(chosen_lab(args, args.lab_arg), required=False)
    result = None if lab is None else teardown.down(lab)
    doc = {
        "lab": lab,
        "removed": bool(result and result.anything),
        "namespaces": result.namespaces if result else [],
        "processes": result.processes if result else [],
    }
    emit(args, doc, render.down_summary)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from netns_lab.lab import status

    lab = resolve_lab(chosen_lab(args, args.lab_arg))
    assert lab is not None
    topo, st = running(lab)
    doc = status.document(topo, st)
    emit(args, doc, render.status)
    return 0 if doc["healthy"] else EXIT_NONCOMPLIANT


def cmd_exec(args: argparse.Namespace) -> int:
    from netns_lab.kernel import netns

    command = _lab_from_command(args)
    lab = resolve_lab(chosen_lab(args))
    assert lab is not None
    topo, _ = running(lab)
    if args.node not in topo.node_names():
        raise UsageError(
            f"node: no node {args.node!r} in lab {lab!r} (nodes: {', '.join(topo.node_names())})"
        )
    command = command or _shell(lab, args.node)
    netns.enter(namespace(lab, args.node))
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        raise UsageError(f"exec: command not found: {command[0]}") from None


def _lab_from_command(args: argparse.Namespace) -> list[str]:
    """The command to run, after ``--lab NAME`` / ``-l NAME`` given between NODE and ``--``
    (argparse hands everything after NODE to the command) is moved to ``args.lab``."""
    words = list(args.command)
    while words and (words[0] in ("-l", "--lab") or words[0].startswith("--lab=")):
        flag = words.pop(0)
        if "=" in flag:
            args.lab = flag.partition("=")[2]
        elif not words:
            raise UsageError(f"{flag}: expected a lab name")
        else:
            args.lab = words.pop(0)
    return words[1:] if words[:1] == ["--"] else words


def _shell(lab: str, node: str) -> list[str]:
    """An interactive shell in the node (like `docker exec -it`), its prompt naming the node."""
    if not sys.stdin.isatty():
        raise UsageError(
            "no command, and stdin is not a terminal for a shell: give one after `--`, "
            f"e.g. `nlab exec {node} -- ip addr`"
        )
    os.environ["PS1"] = f"[{lab}:{node}] \\w# "
    os.environ["NLAB_NODE"] = node
    return ["bash", "--norc", "-i"] if shutil.which("bash") else ["sh", "-i"]


def cmd_validate(args: argparse.Namespace) -> int:
    topo, _ = load(args.topology)
    doc = {
        "valid": True,
        "lab": topo.lab,
        "hosts": len(topo.hosts),
        "switches": len(topo.switches),
        "networks": len(topo.networks),
        "vms": len(topo.vms),
        "routers": len(topo.routers),
        "segments": len(topo.segments),
    }
    emit(args, doc, lambda d: render.validated(args.topology, d))
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from netns_lab.observe import graph

    topo, _ = target(args)
    source = graph.dot(topo)
    if not args.out:
        sys.stdout.write(source)
        return 0
    fmt = Path(args.out).suffix.removeprefix(".") or "svg"
    try:
        drawing = graph.render(source, fmt)
    except graph.GraphvizMissing as err:
        raise Refused(str(err)) from err
    except ValueError as err:
        raise UsageError(f"--out {args.out}: {err}") from None
    write_output(args.out, "--out", drawing)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


# -- parsers -------------------------------------------------------------------------------------
def _up(p: argparse.ArgumentParser) -> None:
    json_option(p)
    p.add_argument("topology", nargs="?", help=f"topology file (default {DEFAULT_TOPOLOGY})")
    p.add_argument("--name", help="run the file under another lab name (prefix)")
    p.add_argument("--replace", action="store_true", help="tear down a lab of that name first")
    p.add_argument("--machine", help="build only this machine's part of a lab that spans machines")
    p.add_argument(
        "--link",
        action="append",
        metavar="NAME=NETNS",
        help="plug this part's end of link NAME into the bridge of namespace NETNS (repeatable)",
    )


def _down(p: argparse.ArgumentParser) -> None:
    json_option(p)
    lab_option(p)
    p.add_argument("lab_arg", nargs="?", metavar="LAB", help="the same as --lab")


def _status(p: argparse.ArgumentParser) -> None:
    _down(p)
    p.epilog = "exit status 3 when the lab is not healthy (each problem is listed)"


def _exec(p: argparse.ArgumentParser) -> None:
    p.add_argument("node")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...] (none: a shell)")
    lab_option(p)


def _validate(p: argparse.ArgumentParser) -> None:
    json_option(p)
    p.add_argument("topology")


def _graph(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", help="a topology file, or a lab (the same as --lab)")
    p.add_argument("--out", help="write FILE.svg / .png / .pdf instead of DOT on stdout")
    lab_option(p)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[Any], None]]] = {
    "up": (cmd_up, _up),
    "down": (cmd_down, _down),
    "status": (cmd_status, _status),
    "exec": (cmd_exec, _exec),
    "validate": (cmd_validate, _validate),
    "graph": (cmd_graph, _graph),
}


def register(sub: Any, name: str, summary: str) -> None:
    fn, arguments = COMMANDS[name]
    p = sub.add_parser(name, help=summary, description=summary)
    p.set_defaults(fn=fn)
    arguments(p)
