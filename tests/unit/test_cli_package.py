"""The shape of the code: no import cycles among the project's modules; the CLI package imports a
command's group only when it runs; every command on a running lab takes --lab, which the base
resolves (--lab, then $NLAB_LAB, then the only lab up) the same way for all of them."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from netns_lab import cli
from netns_lab.cli import base
from netns_lab.lab import state

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("netns_lab", "dataplane")


# -- import cycles ---------------------------------------------------------------------------------
def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def _imported(name: str, path: Path, tree: ast.AST) -> list[str]:
    """Every module named by an import statement of the module, anywhere in it (at call time too)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".")
                base_ = parts if path.name == "__init__.py" else parts[:-1]
                target = ".".join(
                    base_[: len(base_) - node.level + 1] + ([node.module] if node.module else [])
                )
            else:
                target = node.module or ""
            names += [target] + [f"{target}.{a.name}" for a in node.names]
    return names


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name resolved to the longest module it is in)."""
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target in _imported(name, path, ast.parse(path.read_text())):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges[name].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_cycles_among_the_projects_modules() -> None:
    edges = _graph()
    assert len(edges) > 40 and "netns_lab.cli.base" in edges
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """Its positive control: a cycle added to the real graph is found, with all its members."""
    edges = _graph()
    edges["netns_lab.lab.state"].add("netns_lab.cli.base")  # base imports state
    assert ["netns_lab.cli.base", "netns_lab.lab.state"] in _cycles(edges)


def test_no_cli_group_imports_the_package_init() -> None:
    """Groups import the base (and each other's modules), never `netns_lab.cli` itself, so the
    package can import them lazily from its table without a cycle."""
    offenders = []
    for name, path in _modules().items():
        if not name.startswith("netns_lab.cli."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name == "netns_lab.cli" for a in node.names):
                offenders.append(name)
            elif isinstance(node, ast.ImportFrom) and (node.module, node.level) in (
                ("netns_lab.cli", 0),
                (None, 1),
            ):
                submodules = {f"netns_lab.cli.{a.name}" for a in node.names}
                if not submodules <= set(_modules()):
                    offenders.append(name)
    assert offenders == []


def test_every_command_of_the_table_has_a_group_that_registers_it() -> None:
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(cli.COMMANDS)
    listed = {a.dest: a.help for a in sub._choices_actions}
    assert listed == {name: command.summary for name, command in cli.COMMANDS.items()}


# -- imported only when run -------------------------------------------------------------------------
def _modules_after(*argv: str) -> set[str]:
    code = (
        "import sys\nfrom netns_lab.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO, check=False
    )
    return set(proc.stderr.splitlines()[-1].split())


def test_help_lists_every_command_without_importing_any_group() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "netns_lab", "--help"], capture_output=True, text=True, cwd=REPO, check=True
    )
    for name, command in cli.COMMANDS.items():
        assert f"    {name} " in proc.stdout and command.summary.split()[0] in proc.stdout, name
    loaded = _modules_after("--help")
    groups = {f"netns_lab.cli.{c.module}" for c in cli.COMMANDS.values()}
    assert not loaded & (groups | {"bcc", "dataplane", "pyroute2", "rich", "scapy"})
    assert "netns_lab.cli.base" in loaded  # the control: the listing did run in that process


def test_validate_does_not_load_the_kernel_side() -> None:
    """bcc, pyroute2 and dataplane (and with it libbpf) stay out: the topology package is pure."""
    loaded = _modules_after("validate", str(REPO / "labs" / "nist-800-125b.yaml"))
    assert "netns_lab.cli.lab" in loaded and "netns_lab.topology.loader" in loaded
    assert not loaded & {"bcc", "pyroute2", "scapy", "dataplane", "netns_lab.lab.builder", "netns_lab.cli.fw"}


def test_a_command_imports_its_group_only() -> None:
    loaded = _modules_after("fw", "show", "--help")
    assert "netns_lab.cli.fw" in loaded
    assert not loaded & {"netns_lab.cli.lab", "netns_lab.cli.mirror", "netns_lab.cli.watch"}


# -- choosing a lab ---------------------------------------------------------------------------------
def _leaves(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {words: parser}
    found = {}
    for name, sub in subs[0].choices.items():
        found |= _leaves(sub, (*words, name))
    return found


ON_A_LAB = {
    "down",
    "status",
    "exec",
    "graph",
    "trace",
    "fw",
    "mirror",
    "watch",
    "vlans",
    "audit",
    "overlay",
    "fail",
    "heal",
    "verify",
    "report",
    "migrate",
    "teams",
    "placement",
}


def test_every_command_on_a_running_lab_shows_lab_in_its_help() -> None:
    leaves = _leaves(cli._parser())
    on_a_lab = [words for words in leaves if words[0] in ON_A_LAB]
    assert len(on_a_lab) == len(leaves) - 2  # up and validate name no running lab
    for words in on_a_lab:
        text = leaves[words].format_help()
        assert "-l NAME, --lab NAME" in text and "$NLAB_LAB" in text, words


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--lab", "A"],
        ["status", "-l", "A", "--json"],
        ["status", "A"],
        ["fw", "--lab", "A", "show"],
        ["fw", "show", "--lab", "A"],
        ["fw", "show", "--json", "-l", "A", "web1"],
        ["mirror", "list", "--lab", "A"],
        ["exec", "--lab", "A", "web1", "--", "ip", "-l", "a"],
        ["watch", "web1", "--lab", "A"],
        ["trace", "web1", "--to", "10.0.0.1", "-l", "A"],
        ["vlans", "--probe", "--lab", "A"],
        ["graph", "--lab", "A"],
        ["report", "--out", "r", "-l", "A"],
    ],
)
def test_lab_anywhere_after_the_command_words(argv: list[str]) -> None:
    args = cli._parser().parse_args(argv)
    assert base.chosen_lab(args, getattr(args, "lab_arg", None)) == "A"


def test_resolution_order_and_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "labs", lambda: ["alpha", "beta"])
    monkeypatch.delenv("NLAB_LAB", raising=False)
    with pytest.raises(base.UsageError, match=r"several labs are up \(alpha, beta\): name one with --lab"):
        base.resolve_lab(None)
    monkeypatch.setenv("NLAB_LAB", "beta")
    assert base.resolve_lab(None) == "beta"
    assert base.resolve_lab("alpha") == "alpha"
    monkeypatch.setattr(state, "labs", lambda: ["alpha"])
    monkeypatch.delenv("NLAB_LAB")
    assert base.resolve_lab(None) == "alpha"


def test_the_flag_and_the_positional_form_must_agree() -> None:
    args = cli._parser().parse_args(["status", "A", "--lab", "B"])
    with pytest.raises(base.UsageError, match="--lab B and the positional LAB A"):
        base.chosen_lab(args, args.lab_arg)


# -- one name for one meaning ---------------------------------------------------------------------
@pytest.mark.parametrize("words", [("fw", "events"), ("watch",)])
def test_streams_stop_by_count_and_duration_and_timeout_is_an_alias(words: tuple[str, ...]) -> None:
    parser = cli._parser()
    args = parser.parse_args([*words, "--count", "3", "--duration", "1.5"])
    assert (base.positive(args, "count", int), base.positive(args, "duration", float)) == (3, 1.5)
    assert base.positive(parser.parse_args([*words, "--timeout", "2"]), "duration", float) == 2
    with pytest.raises(base.UsageError, match=r"^timeout: '0' is not a number of seconds above 0$"):
        base.positive(parser.parse_args([*words, "--timeout", "0"]), "duration", float)
    with pytest.raises(base.UsageError, match=r"^duration: 'x' is not a number of seconds above 0$"):
        base.positive(parser.parse_args([*words, "--duration", "x"]), "duration", float)
