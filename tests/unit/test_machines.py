"""Which nodes one machine's part builds (`nlab up --machine`), and what cannot be split.

Every refusal is one edit of tests/lab/two_machines.yaml, which splits cleanly as it is: that
is the positive control of every row.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netns_lab.topology import machines
from netns_lab.topology.errors import TopologyError
from netns_lab.topology.loader import load_text

ROOT = Path(__file__).resolve().parents[2]
TWO = ROOT / "tests" / "lab" / "two_machines.yaml"
OVERLAY = ROOT / "labs" / "overlay.yaml"
WIRES = {"wan": "wire"}
HV3 = """  hv3:
    pnics:
      eth0: {switch: tor2, driver: ixgbe, pci_bus: "0000:03:00.0"}
"""


def topology(edits: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    text = TWO.read_text()
    for old, new in (edits or {}).items():
        assert text.count(old) == 1, f"{TWO}: `{old}` not there exactly once: update the test"
        text = text.replace(old, new)
    return load_text(text, "two.yaml")


def refusals(err: pytest.ExceptionInfo[TopologyError]) -> dict[str, str]:
    return {i.path: i.reason for i in err.value.errors}


def test_every_node_is_on_the_machine_its_cables_reach() -> None:
    assert machines.placement(topology()) == {
        "hv1": "m1", "tor1": "m1", "r1": "m1", "blue1": "m1", "red1": "m1",
        "hv2": "m2", "tor2": "m2", "r2": "m2", "blue2": "m2", "red2": "m2",
    }  # fmt: skip


def test_a_part_is_its_own_nodes_and_knows_the_whole_lab() -> None:
    topo = topology()
    part = machines.part(topo, "m2", WIRES)
    assert part.node_names() == ["tor2", "r2", "hv2", "blue2", "red2"]
    assert part.machine == "m2" and part.lab_wide is topo and topo.lab_wide is topo
    wan = next(n for n in part.routers[0].nics if n.name == "wan")
    assert (wan.link, wan.wire, wan.switch) == ("wan", "wire", "")
    # the lab's segments stay declared in the part; their VTEPs elsewhere are the whole's
    assert [s.name for s in part.segments] == ["blue-web", "red-web"]
    assert part.lab_wide.segment_hosts("blue-web") == ["hv1", "hv2"]


@pytest.mark.parametrize(
    ("machine", "wires", "edits", "path", "words"),
    [
        ("m3", WIRES, {}, "--machine", "no machine 'm3' in the topology (machines: m1, m2)"),
        ("m1", {}, {}, "--link", "give --link wan=NETNS"),
        ("m1", {**WIRES, "lan": "x"}, {}, "--link", "machine 'm1' has no link 'lan'"),
        ("m1", WIRES, {"tenant: blue}": "tenant: blue, mode: flood}"}, "segments.blue-web.mode",
         "'flood' across machines (m1, m2): only 'evpn'"),
        ("m1", WIRES, {"\nvms:\n": HV3 + "\nvms:\n"}, "hosts.hv3.machine", "every host names its machine"),
        ("m1", WIRES, {"eth0: {switch: tor2, driver": "eth0: {switch: tor1, driver"}, "switches.tor1",
         "cabled to hosts of machines m1, m2"),
        ("m1", WIRES, {"eth0: {switch: tor2, driver": "eth0: {switch: tor1, driver"}, "switches.tor2",
         "cabled to no host"),
        ("m1", WIRES, {"wan: {link: wan, ip: 192.0.2.2/30}": "wan: {link: wan2, ip: 192.0.2.2/30}"},
         "routers.r1.nics.wan.link", "link 'wan' needs one end on each of two machines"),
    ],
)  # fmt: skip
def test_what_cannot_be_split_is_refused_by_field(
    machine: str, wires: dict[str, str], edits: dict[str, str], path: str, words: str
) -> None:
    topo = topology(edits)
    with pytest.raises(machines.MachineError) as err:
        machines.part(topo, machine, wires)
    found = refusals(err)
    assert path in found, found
    assert words in found[path]


def test_a_lab_without_machines_has_no_parts() -> None:
    topo = load_text(OVERLAY.read_text(), "overlay.yaml")
    with pytest.raises(machines.MachineError) as err:
        machines.part(topo, "m1")
    assert list(refusals(err)) == ["--machine"]


def test_a_router_nic_has_a_switch_or_a_link() -> None:
    with pytest.raises(TopologyError) as err:
        topology({"wan: {link: wan, ip: 192.0.2.1/30}": "wan: {link: wan, switch: tor1, ip: 192.0.2.1/30}"})
    assert any(i.path.startswith("routers.r1.nics.wan") for i in err.value.errors)


def nlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netns_lab", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_cli_refuses_before_building() -> None:
    unknown = nlab("up", str(TWO), "--machine", "m9", "--name", "zz", "--json")
    assert unknown.returncode == 2 and "--machine" in unknown.stdout and "machines: m1, m2" in unknown.stdout
    none = nlab("up", str(OVERLAY), "--machine", "m1", "--name", "zz")
    assert none.returncode == 2 and "--machine" in none.stderr
    linked = nlab("up", str(TWO), "--link", "wan=x", "--name", "zz")
    assert linked.returncode == 2 and "--link" in linked.stderr
    path = nlab("up", str(TWO), "--machine", "m1", "--link", "wan=../x", "--name", "zz")
    assert path.returncode == 2 and "not a namespace name" in path.stderr
