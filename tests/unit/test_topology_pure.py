"""The topology package is pure: reading, converting and checking a lab file never loads the
kernel side (bcc, pyroute2, the ``dataplane`` package and so libbpf through ctypes)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from dataplane import abi
from dataplane import mirror as dp_mirror
from netns_lab.topology import limits, names

REPO = Path(__file__).resolve().parents[2]
LAB = str(REPO / "labs" / "nist-800-125b.yaml")
KERNEL_SIDE = {"bcc", "pyroute2", "scapy", "dataplane", "dataplane.syscalls", "dataplane.events"}

# Prints the modules the child ended with and whether libbpf is mapped into it.
_REPORT = (
    "import sys\n"
    "maps = open('/proc/self/maps').read()\n"
    "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    "print('libbpf' in maps, file=sys.stderr)\n"
)


def _child(code: str, *argv: str) -> tuple[set[str], bool]:
    proc = subprocess.run(
        [sys.executable, "-c", code + _REPORT, *argv], capture_output=True, text=True, cwd=REPO, check=False
    )
    *_, modules, libbpf = proc.stderr.splitlines()
    return set(modules.split()), libbpf == "True"


def _cli(*argv: str) -> str:
    return (
        "import sys\nfrom netns_lab.cli import main\n"
        f"try:\n    main({list(argv)!r})\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
    )


def test_the_child_report_sees_the_kernel_side_when_it_is_loaded() -> None:
    """The control for the tests below: importing dataplane does show up, libbpf included."""
    loaded, libbpf = _child("import dataplane.syscalls\n")
    assert {"dataplane", "dataplane.syscalls"} <= loaded and libbpf


def test_loading_and_validating_the_reference_lab_leaves_the_kernel_side_out() -> None:
    loaded, libbpf = _child(f"from netns_lab.topology import loader\nloader.load({LAB!r})\n")
    assert {"netns_lab.topology.loader", "netns_lab.topology.validate"} <= loaded
    assert not loaded & KERNEL_SIDE and not libbpf


@pytest.mark.parametrize("verb", ["validate", "graph"])
def test_file_commands_leave_the_kernel_side_out(verb: str) -> None:
    loaded, libbpf = _child(_cli(verb, LAB))
    assert {"netns_lab.topology.loader", "netns_lab.topology.validate"} <= loaded
    assert not loaded & KERNEL_SIDE and not libbpf


def test_no_topology_module_imports_outside_the_package() -> None:
    """Lazy imports inside functions count too: the package has no door to the kernel at all."""
    for path in (REPO / "netns_lab" / "topology").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue
            for target in targets:
                top = target.split(".")[0]
                assert top not in {"dataplane", "bcc", "pyroute2", "scapy", "ctypes"}, (path.name, target)
                assert top != "netns_lab" or target.startswith("netns_lab.topology"), (path.name, target)


def test_limits_and_names_match_the_dataplane() -> None:
    """The topology repeats what it checks against; the dataplane is the truth."""
    assert (limits.CT_SIZE, limits.MAX_MIRRORS, limits.MIRROR_PER_PORT) == (
        abi.CT_SIZE,
        abi.MAX_MIRRORS,
        abi.MIRROR_PER_PORT,
    )
    assert names.MIRROR_PORT == dp_mirror.MIRROR_PORT
