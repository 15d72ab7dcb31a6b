"""The Graphviz drawing of the reference lab (pure text; rendering is tested in the lab tests)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from netns_lab import graph, loader

REFERENCE = Path(__file__).resolve().parents[2] / "labs" / "nist-800-125b.yaml"


def test_dot_has_every_node_and_link() -> None:
    topo = loader.load(REFERENCE)
    source = graph.dot(topo)
    for host in topo.hosts:
        assert f'subgraph "cluster/{host.name}"' in source
        for pnic in host.pnics:
            assert f'"{host.name}/{pnic.name}" -- "switch/{pnic.switch}";' in source
    for vm in topo.vms:
        for nic in vm.nics:
            assert f'"{vm.name}" -- "{vm.host}/{nic.vswitch}"' in source
    assert '"net/internet" -- "switch/tor1";' in source
    assert "[firewall]" in source and "(internal only)" in source


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_dot_is_valid_graphviz() -> None:
    source = graph.dot(loader.load(REFERENCE))
    proc = subprocess.run(["dot", "-Tsvg"], input=source, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "<svg" in proc.stdout
