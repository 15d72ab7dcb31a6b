"""The migration planner (pure): where a VM's NICs land, what is refused and why, what a VM
leaves behind (a subnet-level firewall), the topology edit, the event records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netns_lab.features.migration import conntrack, events
from netns_lab.features.migration.plan import plan
from netns_lab.topology import loader
from netns_lab.topology.errors import TopologyError

REPO = Path(__file__).resolve().parents[2]
MIGRATION = loader.load(REPO / "tests" / "lab" / "migration.yaml")
OVERLAY = loader.load(REPO / "labs" / "overlay.yaml")


def refusal(topo, vm: str, host: str) -> tuple[str, str]:
    with pytest.raises(TopologyError) as err:
        plan(topo, vm, host)
    issue = err.value.errors[0]
    assert issue.source == "nlab migrate"
    return issue.path, issue.reason


def test_a_vm_lands_on_the_vswitch_of_the_same_name_with_its_kernel_rules() -> None:
    p = plan(MIGRATION, "srv", "hv2")
    assert (p.source, p.target) == ("hv1", "hv2")
    (nic,) = p.nics
    assert (nic.port, nic.vswitch_from, nic.vswitch_to, nic.vlan) == ("srv-0", "vs1", "vs1", 20)
    assert nic.endpoint != 0 and p.endpoints == {nic.endpoint}
    assert p.kernel_rules == (10,) and p.warnings == ()


def test_else_a_vlan_nic_lands_on_a_vswitch_carrying_its_vlan_and_may_lose_its_firewall_vm() -> None:
    p = plan(MIGRATION, "p1", "hv2")
    assert (p.nics[0].vswitch_from, p.nics[0].vswitch_to) == ("vsin", "vs1")
    assert p.nics[0].endpoint == 0 and p.kernel_rules == ()
    (warning,) = p.warnings
    assert "loses subnet-level firewall fw" in warning and "internal-only vSwitch vsin" in warning


def test_the_edit_moves_the_vm_and_renames_only_changed_vswitches() -> None:
    data = {"vms": {"p1": {"host": "hv1", "nics": [{"vswitch": "vsin", "vlan": "dmz"}]}}}
    plan(MIGRATION, "p1", "hv2").edit(data)
    assert data == {"vms": {"p1": {"host": "hv2", "nics": [{"vswitch": "vs1", "vlan": "dmz"}]}}}
    data = {"vms": {"srv": {"host": "hv1", "nics": [{"vswitch": "vs1"}]}}}
    plan(MIGRATION, "srv", "hv2").edit(data)
    assert data == {"vms": {"srv": {"host": "hv2", "nics": [{"vswitch": "vs1"}]}}}


@pytest.mark.parametrize(
    ("vm", "host", "path", "reason"),
    [
        (
            "far",
            "hv2",
            "vms.far.nics[0]",
            "hv2's vSwitch vs1 does not carry VLAN other to its physical switch",
        ),
        ("fw", "hv2", "VM", "fw is a firewall VM"),
        ("sv", "hv2", "VM", "unknown VM 'sv' (did you mean 'srv'?"),
        ("srv", "hv22", "HOST", "unknown host 'hv22' (did you mean 'hv2'?"),
        ("srv", "hv1", "HOST", "srv already runs on hv1"),
    ],
)
def test_refusals_name_the_place_and_the_reason(vm: str, host: str, path: str, reason: str) -> None:
    where, why = refusal(MIGRATION, vm, host)
    assert where == path and why.startswith(reason), why


def test_segments_a_vm_keeps_on_hosts_that_keep_them() -> None:
    p = plan(OVERLAY, "bweb2", "hv1")  # hv1 hosts blue-web already, hv2 keeps bgw on it
    assert p.nics[0].segment == "blue-web" and p.nics[0].vswitch_to == "sg-10010"
    path, reason = refusal(OVERLAY, "rweb1", "hv2")
    assert path == "vms.rweb1.nics[0]" and reason.startswith("hv2 does not carry segment red-web")
    path, reason = refusal(OVERLAY, "bweb1", "hv3")
    assert reason.startswith("bweb1 is the last VM of segment blue-web on hv1")
    path, reason = refusal(OVERLAY, "leg1", "hv3")
    assert reason.startswith("hv3 has no vSwitch vs1 and none carrying VLAN legacy")


def test_an_event_has_the_shape_of_the_contract(tmp_path: Path) -> None:
    rec = events.record("mig", "srv", "hv1", "hv2", "conntrack", 1.23456)
    assert set(rec) == {"kind", "lab", "vm", "from", "to", "phase", "ms", "time"}
    assert rec["kind"] == "migration" and rec["ms"] == 1.235
    follower = events.Follower("no-such-lab")
    follower.path = tmp_path / events.FILE
    assert follower.read() == []  # no migration yet: no file
    follower.path.write_text(json.dumps(rec) + "\n" + '{"kind": "migr')
    assert follower.read() == [rec]  # the half-written line waits for its end
    with open(follower.path, "a") as f:
        f.write('ation"}\n')
    assert follower.read() == [{"kind": "migration"}]


def test_the_peer_bucket_hashes_the_source_address_like_the_datapath() -> None:
    from dataplane import abi

    key = abi.CtKey(endpoint=3)
    key.saddr[:4] = [10, 0, 0, 1]
    bucket = conntrack.peer_bucket(key)
    assert 3 * abi.PEER_BUCKETS <= bucket < 4 * abi.PEER_BUCKETS
    other = abi.CtKey(endpoint=3)
    other.saddr[:4] = [10, 0, 0, 2]
    assert conntrack.peer_bucket(other) != bucket  # neighbours land apart (fixed hash)


def test_a_change_the_topology_refuses_is_bad_input_before_anything_is_touched() -> None:
    """app1's mirror session needs its VLAN rspan on the target's uplink: the changed topology
    does not validate, the check phase raises the loader's error (exit 2), no event, no undo."""
    from netns_lab.features.base import HostPlane
    from netns_lab.features.migration.live import Migration
    from netns_lab.lab.running import RunningLab

    text = (REPO / "labs" / "nist-800-125b.yaml").read_text()

    class Stub:  # what Migration reads of a RunningLab before the first kernel step
        lab, topo = "ref", loader.load_text(text, "nist-800-125b.yaml", lab="ref")

        def __init__(self) -> None:
            self.text = text
            self.hosts = [HostPlane("hv2", None, {"app1-0": 7, "app1-1": 8}), HostPlane("hv3", None, {})]  # type: ignore[arg-type]

        prepare = RunningLab.prepare

    m = Migration(Stub(), plan(Stub.topo, "app1", "hv3"))  # type: ignore[arg-type]
    with pytest.raises(TopologyError) as err:
        m.run()
    assert [i.path for i in err.value.errors] == ["switches.tor2.ports.hv3-eth1"]
    assert "mirror VLAN rspan" in err.value.errors[0].reason
    assert m.phases == [] and m.undo == []


def test_a_vm_stays_on_its_machine() -> None:
    topo = loader.load(REPO / "tests" / "lab" / "two_machines.yaml")
    path, reason = refusal(topo, "blue1", "hv2")
    assert path == "HOST" and reason.startswith("hv2 is built by machine m2, hv1 by m1")
