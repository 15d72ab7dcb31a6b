"""`nlab`: the command line. Parses arguments, calls the library, prints results.

Exit codes: 0 success; 1 a failure of the system (rolled back); 2 bad input (topology file,
argument, a refusal such as a lab that is already up); 3 a check ran and found a problem: the
design non-compliant (`nlab vlans`), the lab not healthy (`nlab status`), a traced packet that
does not arrive (`nlab trace`). With --json, stdout
carries exactly one JSON document; progress and messages go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from netns_lab import (
    builder,
    cli_fw,
    cli_mirror,
    cli_watch,
    display,
    encoding,
    fwlive,
    graph,
    loader,
    state,
    status,
    teardown,
    vlancheck,
)
from netns_lab.clibase import (
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_NONCOMPLIANT,
    EXIT_USAGE,
    ArgumentError,
    Parser,
    UsageError,
    error_document,
    write_output,
)
from netns_lab.clibase import emit_json as _emit_json
from netns_lab.errors import TopologyError
from netns_lab.kernel import netns
from netns_lab.model import Topology, namespace

DEFAULT_TOPOLOGY = "labs/nist-800-125b.yaml"
__all__ = ["UsageError", "main"]  # UsageError: the verb modules import it from here


def _default_topology() -> str:
    """labs/nist-800-125b.yaml of the checkout, wherever nlab is called from."""
    here = Path(DEFAULT_TOPOLOGY)
    if here.exists():
        return str(here)
    return str(Path(__file__).resolve().parent.parent / DEFAULT_TOPOLOGY)


def _load(path: str, name: str | None = None) -> tuple[Topology, str]:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise UsageError(f"{path}: cannot read the topology file: {err.strerror}") from None
    return loader.load_text(text, path, lab=name), text


def _resolve_lab(given: str | None, *, required: bool = True) -> str | None:
    """The lab named, or the only lab up; several up and none named is a usage error."""
    if given:
        return given
    up = state.labs()
    if len(up) == 1:
        return up[0]
    if not up:
        if required:
            raise UsageError("no lab is up (start one with `nlab up`)")
        return None
    raise UsageError(f"several labs are up ({', '.join(up)}): name one")


def _running(lab: str) -> tuple[Topology, state.LabState]:
    st = state.LabState.read(lab)
    text = st.topology_text() if st else None
    if st is None or text is None:
        raise UsageError(f"lab {lab!r} is not up (labs up: {', '.join(state.labs()) or 'none'})")
    return loader.load_text(text, st.source or "topology.yaml", lab=lab), st


# -- commands ------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    topo, text = _load(args.topology or _default_topology(), args.name)
    if state.LabState.read(topo.lab) is not None:
        if not args.replace:
            raise UsageError(
                f"lab {topo.lab!r} is already up: `nlab down {topo.lab}` first, or `nlab up --replace`"
            )
        teardown.down(topo.lab)
    started = time.perf_counter()
    with display.progress(enabled=not args.json and sys.stderr.isatty()) as report:
        builder.up(topo, text, report)
    seconds = time.perf_counter() - started
    summary = {
        "lab": topo.lab,
        "source": topo.source,
        "seconds": round(seconds, 3),
        "namespaces": len(topo.node_names()),
        "hosts": len(topo.hosts),
        "switches": len(topo.switches),
        "networks": len(topo.networks),
        "vms": len(topo.vms),
    }
    if args.json:
        _emit_json(summary)
    else:
        display.up_summary(summary)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    lab = _resolve_lab(args.lab, required=False)
    result = None if lab is None else teardown.down(lab)
    doc = {
        "lab": lab,
        "removed": bool(result and result.anything),
        "namespaces": result.namespaces if result else [],
        "processes": result.processes if result else [],
    }
    if args.json:
        _emit_json(doc)
    else:
        display.down_summary(doc)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lab = _resolve_lab(args.lab)
    assert lab is not None
    topo, st = _running(lab)
    doc = status.document(topo, st)
    if args.json:
        _emit_json(doc)
    else:
        display.status(doc)
    return 0 if doc["healthy"] else EXIT_NONCOMPLIANT


def cmd_exec(args: argparse.Namespace) -> int:
    lab = _resolve_lab(args.lab)
    assert lab is not None
    topo, _ = _running(lab)
    if args.node not in topo.node_names():
        raise UsageError(
            f"node: no node {args.node!r} in lab {lab!r} (nodes: {', '.join(topo.node_names())})"
        )
    command = args.command or _shell(lab, args.node)
    netns.enter(namespace(lab, args.node))
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        raise UsageError(f"exec: command not found: {command[0]}") from None


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
    topo, _ = _load(args.topology)
    doc = {
        "valid": True,
        "lab": topo.lab,
        "hosts": len(topo.hosts),
        "switches": len(topo.switches),
        "networks": len(topo.networks),
        "vms": len(topo.vms),
    }
    if args.json:
        _emit_json(doc)
    else:
        print(
            f"{args.topology}: ok: lab {topo.lab}, {doc['hosts']} hosts, {doc['switches']} switches, "
            f"{doc['networks']} networks, {doc['vms']} VMs"
        )
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    target = args.target
    if target and (target.endswith((".yaml", ".yml")) or Path(target).is_file()):
        topo, _ = _load(target)
    else:
        lab = _resolve_lab(target, required=False)
        topo = _running(lab)[0] if lab else _load(_default_topology())[0]
    source = graph.dot(topo)
    if args.out:
        fmt = Path(args.out).suffix.removeprefix(".") or "svg"
        try:
            drawing = graph.render(source, fmt)
        except ValueError as err:
            raise UsageError(f"--out {args.out}: {err}") from None
        write_output(args.out, "--out", drawing)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(source)
    return 0


def _target(target: str | None) -> tuple[Topology, bool]:
    """A topology file, or a lab (named, or the only one up); True when it is a running lab."""
    if target and (target.endswith((".yaml", ".yml")) or Path(target).is_file()):
        return _load(target)[0], False
    lab = _resolve_lab(target, required=False)
    if lab:
        return _running(lab)[0], True
    return _load(_default_topology())[0], False


def cmd_vlans(args: argparse.Namespace) -> int:
    """VM-VN-R1: host trunk profiles against their switch ports; with --probe, real pings."""
    topo, running = _target(args.target)
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
                "host_side": encoding.profile_text(topo, t.host_side),
                "switch_side": encoding.profile_text(topo, t.switch_side),
            }
            for t in vlancheck.trunks(topo)
        ],
        "findings": [f.__dict__ for f in findings],
        "probes": [p.__dict__ for p in probes],
    }
    doc["compliant"] = not any(f.severity == "error" for f in findings)
    if args.json:
        _emit_json(doc)
    else:
        display.vlans(doc)
    return 0 if doc["compliant"] else EXIT_NONCOMPLIANT


def cmd_fw(args: argparse.Namespace) -> int:
    lab = _resolve_lab(args.lab)
    assert lab is not None
    try:
        doc = args.fw_fn(args, lab)
    except fwlive.NotRunning:
        raise UsageError(f"lab {lab!r} is not up (labs up: {', '.join(state.labs()) or 'none'})") from None
    except ValueError as err:
        if isinstance(err, TopologyError):
            raise
        raise UsageError(str(err)) from None
    if doc is None:  # a stream (events) printed as it went
        return 0
    if args.json:
        _emit_json(doc)
    else:
        display.fw(args.fw_cmd, doc)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    """Exit 0 when the packet is delivered, exit 3 when it is not (dropped, unreachable)."""
    lab = _resolve_lab(args.lab)
    assert lab is not None
    topo, _ = _running(lab)
    from netns_lab import trace  # scapy takes a quarter second to import: only for this command

    try:
        doc = trace.trace(topo, args.vm, args.to, args.proto, args.dport)
    except (trace.TraceError, ValueError) as err:
        raise UsageError(f"trace: {err}") from None
    if args.json:
        _emit_json(doc)
    else:
        display.trace(doc)
    return 0 if doc["delivered"] else EXIT_NONCOMPLIANT


# -- parser --------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="nlab", description="netns-lab: a virtual data center in namespaces")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help_: str, json_: bool = True, epilog: str = ""
    ):
        sp = sub.add_parser(name, help=help_, description=help_, epilog=epilog or None)
        sp.set_defaults(fn=fn)
        if json_:
            sp.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        return sp

    up = add("up", cmd_up, "build a lab from a topology file")
    up.add_argument("topology", nargs="?", help=f"topology file (default {DEFAULT_TOPOLOGY})")
    up.add_argument("--name", help="run the file under another lab name (prefix)")
    up.add_argument("--replace", action="store_true", help="tear down a lab of that name first")
    add("down", cmd_down, "remove a lab and everything it owns").add_argument("lab", nargs="?")
    st = add(
        "status",
        cmd_status,
        "show a lab and check it against the kernel",
        epilog="exit status 3 when the lab is not healthy (each problem is listed)",
    )
    st.add_argument("lab", nargs="?")
    ex = add("exec", cmd_exec, "run a command (none: a shell) in a node's namespace", json_=False)
    ex.add_argument("node")
    ex.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...] (none: a shell)")
    ex.add_argument("--lab", help="the lab (default: the only one up)")
    add("validate", cmd_validate, "check a topology file without building it").add_argument("topology")
    gr = add("graph", cmd_graph, "draw a lab or a topology file (Graphviz)", json_=False)
    gr.add_argument("target", nargs="?", help="a lab name or a topology file")
    gr.add_argument("--out", help="write FILE.svg / .png / .pdf instead of DOT on stdout")
    tr = add("trace", cmd_trace, "run a crafted packet through the real programs of every port it crosses")
    tr.add_argument("vm", help="the VM that sends it")
    tr.add_argument("--to", required=True, help="destination address")
    tr.add_argument("--proto", default="tcp", choices=("tcp", "udp", "icmp"))
    tr.add_argument("--dport", type=int, default=80)
    tr.add_argument("--lab", help="the lab (default: the only one up)")
    cli_fw.register(sub)
    sub.choices["fw"].set_defaults(fn=cmd_fw)
    cli_mirror.register(sub)
    cli_watch.register(sub)
    vl = add("vlans", cmd_vlans, "check VLAN trunks against switch ports (NIST VM-VN-R1)")
    vl.add_argument("target", nargs="?", help="a lab name or a topology file")
    vl.add_argument(
        "--probe", action="store_true", help="also probe every VLAN across every trunk (ARP; lab up)"
    )
    return p


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # lets the builder's undo stack run on `kill`


def _wants_json(argv: list[str]) -> bool:
    """--json among the options (not in the command `exec` runs after `--`)."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


def _name(args: argparse.Namespace) -> str:
    """``nlab fw add``: the command and its verb, as typed."""
    verb = getattr(args, "fw_cmd", None) or getattr(args, "mirror_cmd", None)
    return " ".join(w for w in ("nlab", args.cmd, verb) if w)


def _streams(args: argparse.Namespace) -> bool:
    """Commands that print as they go, stopped by Ctrl-C as a matter of course."""
    return args.cmd == "watch" or getattr(args, "fw_cmd", None) == "events"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parser().parse_args(argv)
    except ArgumentError as err:
        sys.stderr.write(err.usage)
        print(f"{err.prog}: error: {err}", file=sys.stderr)
        if _wants_json(argv):
            _emit_json(error_document(EXIT_USAGE, err))
        return EXIT_USAGE
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, _sigterm)
    code, failure = _run(args)
    if failure is not None and getattr(args, "json", False):
        _emit_json(error_document(code, failure))
    return code


def _run(args: argparse.Namespace) -> tuple[int, BaseException | None]:
    """The command's exit code, and what made it fail (its message is on stderr already)."""
    try:
        return args.fn(args), None
    except TopologyError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE, err
    except (UsageError, builder.BuildError, graph.GraphvizMissing) as err:
        print(f"{_name(args)}: {err}" if isinstance(err, UsageError) else str(err), file=sys.stderr)
        return EXIT_USAGE, err
    except KeyboardInterrupt:
        if _streams(args):
            return EXIT_INTERRUPTED, None
        message = "interrupted; nothing was left half-built"
        print(f"{_name(args)}: {message}", file=sys.stderr)
        return EXIT_INTERRUPTED, KeyboardInterrupt(message)
    except OSError as err:
        print(f"{_name(args)}: {err}", file=sys.stderr)
        return EXIT_FAIL, err
    except Exception as err:
        if getattr(args, "json", False):  # the traceback follows on stderr, the document on stdout
            _emit_json(error_document(EXIT_FAIL, f"{type(err).__name__}: {err}"))
        raise
