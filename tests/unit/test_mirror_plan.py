"""Mirror planning: topology sessions -> what each host's dataplane holds, in port names (no root).

Also the session ids kept across live changes, the tap bits of direction x tap point, the
mirror VLAN in derived uplink trunks, the encapsulation's decoder, and `taps` on a lab that is
not running.
"""

from __future__ import annotations

import ctypes
import secrets
from pathlib import Path

import pytest

from dataplane import abi
from netns_lab.features.mirror import live as mirror_live
from netns_lab.features.mirror import plan as mirror
from netns_lab.lab import running
from netns_lab.topology.loader import load, load_text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOOD = HERE / "good" / "mirrors.yaml"
REFERENCE = ROOT / "labs" / "nist-800-125b.yaml"


def by_name(plan: mirror.HostPlan) -> dict[str, mirror.Planned]:
    return {s.name: s for s in plan.sessions}


def test_sessions_of_every_source_kind_resolve_to_ports() -> None:
    topo = load(GOOD)
    plans = mirror.plan(topo)
    assert set(plans) == {"hv1"}
    hv1 = plans["hv1"]
    assert hv1.analyzers == ("ids-0",)
    s = by_name(hv1)
    assert s["web1-ids"].sources == ("web1-0",) and s["web1-ids"].dest_port == "ids-0"
    assert s["web1-ids"].taps == abi.TAP_OUT_BEFORE | abi.TAP_IN_BEFORE  # both, before (defaults)
    assert s["webs"].sources == ("web1-0", "web2-0") and s["webs"].taps == abi.TAP_OUT_AFTER
    assert s["webs"].snaplen == 128
    assert s["app-group"].sources == ("app1-0", "sniff-0") and s["app-group"].taps == abi.TAP_IN_BEFORE
    assert s["app-group"].sample == 10
    assert s["web-group"].sources == ("web1-0", "web2-0")
    assert not any(p.encap or p.rx for p in hv1.sessions)


def test_a_promiscuous_nic_is_a_session_over_its_port_group_only() -> None:
    topo = load(GOOD)
    promisc = by_name(mirror.plan(topo)["hv1"])["promiscuous:sniff.eth0"]
    assert promisc.sources == ("app1-0",)  # app on vs1 without sniff: not web1, web2 (web), nor ids
    assert promisc.dest_port == "sniff-0"
    assert promisc.taps == abi.TAP_OUT_AFTER | abi.TAP_IN_AFTER
    assert promisc.promisc_mac == topo.vm("sniff").nics[0].mac


def test_ports_list_every_session_of_a_source_port() -> None:
    plan = mirror.plan(load(GOOD))["hv1"]
    ids = mirror.assign_ids((s.name for s in plan.sessions), {})
    ports = plan.ports(ids)
    assert sorted(sid for sid, _ in ports["web1-0"]) == sorted(
        ids[n] for n in ("web1-ids", "webs", "web-group")
    )
    assert "ids-0" not in ports


def test_uplink_session_encapsulates_on_the_source_host() -> None:
    topo = load(REFERENCE)
    plans = mirror.plan(topo)
    wire = by_name(plans["hv2"])["app1-wire"]
    assert wire.encap and not wire.rx
    assert wire.sources == ("app1-0",) and wire.dest_port == "eth1"
    assert wire.vlan == 900
    assert wire.outer_src == mirror.endpoint_mac("nist", "hv2")
    assert wire.outer_dst == mirror.endpoint_mac("nist", "monitor")
    vm_macs = {nic.mac for vm in topo.vms for nic in vm.nics}
    assert not {wire.outer_src, wire.outer_dst} & vm_macs
    assert "app1-wire" not in by_name(plans["hv1"]) and "app1-wire" not in by_name(plans["hv3"])
    assert 900 in topo.uplink_profile("hv2", "prod").trunk  # derived: the uplink carries it
    assert 900 not in topo.uplink_profile("hv3", "ops").trunk


def test_remote_session_encapsulates_at_the_source_and_receives_at_the_analyzer() -> None:
    text = REFERENCE.read_text()
    text = text.replace(
        "hv1-eth1: {trunk: [app, management, migration, logging]}",
        "hv1-eth1: {trunk: [app, management, migration, logging, rspan]}",
    )
    text = text.replace(
        "hv3-eth1: {trunk: [app, db, desktop, management, migration, logging, storage]}",
        "hv3-eth1: {trunk: [app, db, desktop, management, migration, logging, storage, rspan]}",
    )
    text = text.replace(
        "  web1-ids: {source: web1, dest: analyzer, direction: both}\n",
        "  web1-ids: {source: web1, dest: analyzer, direction: both}\n"
        "  far: {source: [web1, app1.eth0], dest: ids2, vlan: rspan}\n",
    )
    text = text.replace(
        "  app1:\n", "  ids2:\n    host: hv3\n    role: analyzer\n    nics: [{vswitch: ops}]\n  app1:\n"
    )
    topo = load_text(text, "ref.yaml")
    plans = mirror.plan(topo)
    hv1, hv2, hv3 = (by_name(plans[h])["far"] for h in ("hv1", "hv2", "hv3"))
    assert hv1.encap and hv1.sources == ("web1-0",) and hv1.dest_port == "eth1"
    assert hv2.encap and hv2.sources == ("app1-0",)
    assert hv1.outer_dst == hv2.outer_dst == mirror.endpoint_mac("nist", "hv3")
    assert hv3.rx and not hv3.encap and hv3.sources == () and hv3.dest_port == "ids2-0"
    assert hv3.outer_dst == mirror.endpoint_mac("nist", "hv3")
    assert "ids2-0" in plans["hv3"].analyzers


@pytest.mark.parametrize(
    ("direction", "tap", "bits"),
    [
        ("out", "before", abi.TAP_OUT_BEFORE),
        ("out", "after", abi.TAP_OUT_AFTER),
        ("in", "before", abi.TAP_IN_BEFORE),
        ("in", "after", abi.TAP_IN_AFTER),
        ("both", "after", abi.TAP_OUT_AFTER | abi.TAP_IN_AFTER),
    ],
)
def test_tap_bits(direction: str, tap: str, bits: int) -> None:
    assert mirror.taps_bits(direction, tap) == bits


def test_ids_are_kept_across_changes_and_freed_ids_reused() -> None:
    first = mirror.assign_ids(["a", "b", "c"], {})
    assert first == {"a": 1, "b": 2, "c": 3}
    second = mirror.assign_ids(["a", "c", "d"], first)  # b deleted, d added
    assert second == {"a": 1, "c": 3, "d": 2}


def _encapsulated(inner: bytes, session: int, direction: int) -> bytes:
    trailer = abi.MirrorTrailer(
        version=abi.MIRROR_VERSION,
        direction=direction,
        session=session,
        orig_len=len(inner),
        magic=abi.MIRROR_MAGIC,
    )
    ctypes.memmove(trailer.inner, inner[:14], 14)
    return bytes(12) + b"\x88\xb5" + inner[14:] + bytes(trailer)


def test_decapsulate_returns_the_copy_and_refuses_other_frames() -> None:
    inner = bytes.fromhex("020000000002020000000001 0800".replace(" ", "")) + b"payload" * 5
    frame = _encapsulated(inner, 9, abi.MIRROR_DIR_IN)
    assert mirror.decapsulate(frame) == (9, "in", inner)
    assert mirror.decapsulate(inner) is None
    assert mirror.decapsulate(frame[:-1] + b"X") is None  # bad magic
    assert mirror.decapsulate(b"\0" * 12 + b"\x88\xb5" + bytes(40)) is None  # 0x88B5, not ours


def test_taps_of_a_lab_that_is_not_running() -> None:
    with pytest.raises(running.NotRunning):
        mirror_live.taps("zz" + secrets.token_hex(3))
