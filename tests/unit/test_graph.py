"""The Graphviz drawing of the reference lab (pure text; rendering is tested in the lab tests)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from netns_lab.observe import graph
from netns_lab.topology import loader

REFERENCE = Path(__file__).resolve().parents[2] / "labs" / "nist-800-125b.yaml"


def test_dot_has_every_node_and_link() -> None:
    topo = loader.load(REFERENCE)
    source = graph.dot(topo)
    for host in topo.hosts:
        assert f'subgraph "cluster/{host.name}"' in source
        for pnic in host.pnics:
            assert f'"{host.name}/{pnic.name}" -- "switch/{pnic.switch}"' in source
    for vm in topo.vms:
        for nic in vm.nics:
            assert f'"{vm.name}" -- "{vm.host}/{nic.vswitch}"' in source
    assert '"net/internet" -- "switch/tor1";' in source
    assert "[firewall]" in source and "(internal only)" in source


def test_dot_shows_vlans_trunks_groups_and_mirror_sessions() -> None:
    source = graph.dot(loader.load(REFERENCE))
    assert '"web1" -- "hv1/vs2" [label="vlan web", fontsize=8];' in source
    assert '"app1" -- "hv2/prod" [label="eth1 vlan db", fontsize=8];' in source
    assert (
        '"hv1/eth1" -- "switch/tor2" [label="trunk management,migration,logging,app", fontsize=8];' in source
    )
    assert '"hv1/eth0" -- "switch/tor1" [label="plain (untagged)", fontsize=8];' in source
    assert "web1\\n10.20.0.11/24\\ngroups: web" in source
    assert '"web1" -- "analyzer" [label="web1-ids"' in source
    assert '"app1" -- "net/monitor" [label="app1-wire"' in source


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_dot_is_valid_graphviz() -> None:
    source = graph.dot(loader.load(REFERENCE))
    proc = subprocess.run(["dot", "-Tsvg"], input=source, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "<svg" in proc.stdout
