"""Overlay table planning and the plan-vs-kernel difference, on plain data (no root).

hv1 10.255.1.11        hv2 10.255.1.12        hv3 10.255.1.13
blue-web 10010: a1     blue-web: a2           -
red-web  10020: b1     red-web:  b2           red-web: b3        (same IPs as blue: 10.0.0.x)
green 10030 (flood):   c1                     green: c3
evpn 10040:            e1                     evpn: e3           (BGP's: never planned)
"""

from __future__ import annotations

import json
from ipaddress import ip_interface
from types import SimpleNamespace

import pytest

from netns_lab.features.overlay import plan as p
from netns_lab.features.overlay.reconcile import Change, diff_segment
from netns_lab.kernel import fdb
from netns_lab.kernel.fdb import Fdb, Neigh

VTEPS = (("hv1", "10.255.1.11"), ("hv2", "10.255.1.12"), ("hv3", "10.255.1.13"))
SEGMENTS = (
    p.SegmentSpec("blue-web", 10010, "blue", "controller"),
    p.SegmentSpec("red-web", 10020, "red", "controller"),
    p.SegmentSpec("green", 10030, "green", "flood"),
    p.SegmentSpec("evpn", 10040, "green", "evpn"),
)


def mac(n: int) -> str:
    return f"02:00:00:00:00:{n:02x}"


MEMBERS = (
    p.Member("hv1", "a1", 0, "blue-web", mac(0xA1), ("10.0.0.1", "fd00::1")),
    p.Member("hv2", "a2", 0, "blue-web", mac(0xA2), ("10.0.0.2",)),
    p.Member("hv1", "b1", 0, "red-web", mac(0xB1), ("10.0.0.1",)),
    p.Member("hv2", "b2", 0, "red-web", "02:00:00:00:00:B2", ("10.0.0.2",)),
    p.Member("hv3", "b3", 0, "red-web", mac(0xB3), ("10.0.0.3",)),
    p.Member("hv1", "c1", 0, "green", mac(0xC1), ("10.0.0.1",)),
    p.Member("hv3", "c3", 0, "green", mac(0xC3), ("10.0.0.3",)),
    p.Member("hv1", "e1", 0, "evpn", mac(0xE1), ("10.0.0.1",)),
    p.Member("hv3", "e3", 0, "evpn", mac(0xE3), ("10.0.0.3",)),
)
DATA = p.OverlayData(VTEPS, SEGMENTS, MEMBERS)


def seg(plan: p.Plan, host: str, name: str) -> p.SegmentTables:
    return next(s for s in plan.host(host).segments if s.segment == name)


def test_each_host_gets_only_the_segments_it_hosts_and_evpn_is_left_to_bgp() -> None:
    plan = p.plan(DATA)
    assert [h.host for h in plan.hosts] == ["hv1", "hv2", "hv3"]
    assert [s.segment for s in plan.host("hv1").segments] == ["blue-web", "red-web", "green"]
    assert [s.segment for s in plan.host("hv2").segments] == ["blue-web", "red-web"]
    assert [s.segment for s in plan.host("hv3").segments] == ["red-web", "green"]
    assert (
        seg(plan, "hv3", "red-web").vxlan == "vx-10020" and seg(plan, "hv3", "red-web").bridge == "sg-10020"
    )


def test_controller_mode_plans_replication_remote_macs_and_every_members_neighbours() -> None:
    red = seg(p.plan(DATA), "hv1", "red-web")
    assert red.flood == ("10.255.1.12", "10.255.1.13")  # only the hosts with red members
    assert red.macs == (p.RemoteMac(mac(0xB2), "10.255.1.12"), p.RemoteMac(mac(0xB3), "10.255.1.13"))
    # local member too (keeps ARP for it off the underlay); MACs lower-cased
    assert red.neighbours == (
        p.Neighbour("10.0.0.1", mac(0xB1)),
        p.Neighbour("10.0.0.2", mac(0xB2)),
        p.Neighbour("10.0.0.3", mac(0xB3)),
    )
    blue = seg(p.plan(DATA), "hv2", "blue-web")
    assert blue.flood == ("10.255.1.11",) and blue.macs == (p.RemoteMac(mac(0xA1), "10.255.1.11"),)
    assert p.Neighbour("fd00::1", mac(0xA1)) in blue.neighbours  # IPv6: answered by ND suppression
    # tenants with the same addresses never share an entry
    assert p.Neighbour("10.0.0.1", mac(0xA1)) not in red.neighbours


def test_flood_mode_plans_only_head_end_replication() -> None:
    green = seg(p.plan(DATA), "hv3", "green")
    assert (green.flood, green.macs, green.neighbours) == (("10.255.1.11",), (), ())


def test_a_segment_on_one_host_replicates_nowhere() -> None:
    data = p.OverlayData(VTEPS, SEGMENTS[:1], (MEMBERS[0],))
    only = seg(p.plan(data), "hv1", "blue-web")
    assert (only.flood, only.macs) == ((), ())


def test_hosted_lists_every_mode_for_show() -> None:
    assert p.hosted(DATA) == {
        "hv1": [10010, 10020, 10030, 10040],
        "hv2": [10010, 10020],
        "hv3": [10020, 10030, 10040],
    }


def test_the_plan_survives_json() -> None:
    plan = p.plan(DATA)
    assert p.Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (p.Member("hv1", "x", 0, "nope", mac(1)), "x.eth0: unknown segment 'nope'"),
        (
            p.Member("hv3", "x", 0, "blue-web", mac(1), ("10.0.0.2",)),
            "a2.eth0 and x.eth0: both have 10.0.0.2 on segment 'blue-web'",
        ),
        (
            p.Member("hv9", "x", 1, "blue-web", mac(1)),
            "x.eth1: host 'hv9' has no VTEP for segment 'blue-web'",
        ),
    ],
)
def test_bad_members_are_named(member: p.Member, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        p.plan(p.OverlayData(VTEPS, SEGMENTS, (*MEMBERS, member)))


def test_from_topology_reads_the_model_fields_of_the_contract() -> None:
    def nic(index: int, segment: str | None, ip: str | None) -> SimpleNamespace:
        return SimpleNamespace(
            index=index, segment=segment, mac=mac(index), ip=ip_interface(ip) if ip else None
        )

    vtep = {"hv1": "10.255.1.11", "hv2": None}
    topo = SimpleNamespace(
        hosts=(SimpleNamespace(name="hv1"), SimpleNamespace(name="hv2")),
        vtep_ip=lambda host: vtep[host],
        segments=(SimpleNamespace(name="blue-web", vni=10010, tenant="blue", mode="controller"),),
        vms=(
            SimpleNamespace(
                name="a1", host="hv1", nics=(nic(0, None, "192.0.2.1/24"), nic(1, "blue-web", "10.0.0.1/24"))
            ),
        ),
    )
    data = p.from_topology(topo)  # type: ignore[arg-type]
    assert data.vteps == (("hv1", "10.255.1.11"),)
    assert data.segments == (SEGMENTS[0],)
    assert data.members == (p.Member("hv1", "a1", 1, "blue-web", mac(1), ("10.0.0.1",)),)


# -- plan vs kernel ----------------------------------------------------------------------------
RED = seg(p.plan(DATA), "hv1", "red-web")
GREEN = seg(p.plan(DATA), "hv1", "green")
PERM, STATIC, REACHABLE = fdb.NUD_PERMANENT, fdb.NUD_NOARP, 0x2


def own(mac_: str, dst: str, flags: int = fdb.NTF_SELF | fdb.NTF_ROUTER, state: int = PERM) -> Fdb:
    return Fdb("vx-10020", mac_, dst, False, state, flags, fdb.fdb_origin(False, state, flags))


def pinned(mac_: str, flags: int = fdb.NTF_MASTER | fdb.NTF_STICKY, state: int = STATIC) -> Fdb:
    return Fdb("vx-10020", mac_, None, True, state, flags, fdb.fdb_origin(True, state, flags))


def neigh(ip: str, mac_: str, proto: int | None = fdb.RTPROT_NLAB) -> Neigh:
    return Neigh("sg-10020", ip, mac_, PERM, 0, proto, fdb.neigh_origin(PERM, 0, proto))


def in_kernel(s: p.SegmentTables) -> tuple[list[Fdb], list[Neigh]]:
    """What the controller leaves behind for `s`, plus the bridge's own entry for the port."""
    entries = [own(p.ZERO_MAC, v) for v in s.flood] + [own(m.mac, m.vtep) for m in s.macs]
    entries += [pinned(m.mac) for m in s.macs] + [pinned("02:aa:00:00:00:01", 0, PERM)]
    return entries, [neigh(n.ip, n.mac) for n in s.neighbours]


def brief(changes: list[Change]) -> list[tuple[str, str, str, str | None]]:
    return [(c.action, c.table, c.key, c.want) for c in changes]


def test_tables_that_match_need_nothing_and_the_bridges_own_entry_is_never_touched() -> None:
    assert diff_segment("hv1", RED, *in_kernel(RED)) == []


def test_empty_tables_get_every_entry() -> None:
    changes = brief(diff_segment("hv1", RED, [], []))
    assert ("add", "flood", "10.255.1.13", None) in changes
    assert ("add", "vxlan", mac(0xB3), "10.255.1.13") in changes
    assert ("add", "bridge", mac(0xB3), "controller") in changes
    assert ("add", "neigh", "10.0.0.3", mac(0xB3)) in changes
    assert len(changes) == 2 + 2 + 2 + 3


def test_a_moved_or_unmarked_entry_is_fixed_in_place_and_extra_destinations_go() -> None:
    entries, neighbours = in_kernel(RED)
    entries = [e for e in entries if e.mac not in (mac(0xB2), mac(0xB3)) or e.master]
    entries += [own(mac(0xB2), "10.255.1.99"), own(mac(0xB2), "10.255.1.98")]  # wrong, twice
    entries += [own(mac(0xB3), "10.255.1.13", flags=fdb.NTF_SELF), own(mac(0xB3), "10.255.1.97")]
    changes = diff_segment("hv1", RED, entries, neighbours)
    assert brief(changes) == [
        ("fix", "vxlan", mac(0xB2), "10.255.1.12"),  # rewrites the first destination (.99)
        ("remove", "vxlan", mac(0xB2), None),
        ("fix", "vxlan", mac(0xB3), "10.255.1.13"),  # right place, but a hand-made static entry
        ("remove", "vxlan", mac(0xB3), None),
    ]
    assert [c.entry.dst for c in changes if c.action == "remove"] == ["10.255.1.98", "10.255.1.97"]  # type: ignore[union-attr]
    assert changes[0].have == "10.255.1.99 controller, 10.255.1.98 controller"


def test_controller_mode_removes_what_nobody_planned_whoever_made_it() -> None:
    entries, neighbours = in_kernel(RED)
    entries += [
        own(p.ZERO_MAC, "10.255.1.66"),
        own(mac(0x66), "10.255.1.12", flags=fdb.NTF_SELF, state=REACHABLE),
    ]
    entries = [e for e in entries if not (e.master and e.mac == mac(0xB3))]
    entries += [pinned(mac(0x67), fdb.NTF_MASTER, REACHABLE), pinned(mac(0xB2), fdb.NTF_MASTER, STATIC)]
    entries += [pinned(mac(0xB3), fdb.NTF_MASTER, PERM)]  # made `local` by hand: swallows b3's frames
    neighbours += [neigh("10.0.0.66", mac(0x66), None)]
    neighbours = [n if n.ip != "10.0.0.3" else neigh("10.0.0.3", mac(0xA1)) for n in neighbours]
    assert sorted(brief(diff_segment("hv1", RED, entries, neighbours))) == [
        ("fix", "bridge", mac(0xB2), "controller"),  # static but not sticky: a hand-made entry
        ("fix", "bridge", mac(0xB3), "controller"),
        ("fix", "neigh", "10.0.0.3", mac(0xB3)),
        ("remove", "bridge", mac(0x67), None),
        ("remove", "flood", "10.255.1.66", None),
        ("remove", "neigh", "10.0.0.66", None),
        ("remove", "vxlan", mac(0x66), None),
    ]


def test_flood_mode_adds_missing_replication_and_leaves_learned_entries() -> None:
    learned = [
        own(mac(0xC3), "10.255.1.13", fdb.NTF_SELF, REACHABLE),
        pinned(mac(0xC3), fdb.NTF_MASTER, REACHABLE),
    ]
    assert brief(diff_segment("hv1", GREEN, learned, [])) == [("add", "flood", "10.255.1.13", None)]
    assert diff_segment("hv1", GREEN, [own(p.ZERO_MAC, "10.255.1.13"), *learned], []) == []


@pytest.mark.parametrize(
    ("master", "state", "flags", "origin"),
    [
        (False, PERM, fdb.NTF_SELF | fdb.NTF_ROUTER, "controller"),
        (False, PERM, fdb.NTF_SELF, "static"),
        (False, PERM, fdb.NTF_SELF | fdb.NTF_EXT_LEARNED, "bgp"),
        (False, REACHABLE, fdb.NTF_SELF, "learned"),
        (True, STATIC, fdb.NTF_STICKY, "controller"),
        (True, STATIC, 0, "static"),
        (True, PERM, 0, "local"),
        (True, REACHABLE, fdb.NTF_EXT_LEARNED, "bgp"),
        (True, REACHABLE, 0, "learned"),
    ],
)
def test_fdb_origin(master: bool, state: int, flags: int, origin: str) -> None:
    assert fdb.fdb_origin(master, state, flags) == origin


def test_neighbour_origin() -> None:
    assert fdb.neigh_origin(PERM, 0, fdb.RTPROT_NLAB) == "controller"
    assert fdb.neigh_origin(REACHABLE, fdb.NTF_EXT_LEARNED, None) == "bgp"
    assert fdb.neigh_origin(PERM, 0, None) == "static"
    assert fdb.neigh_origin(REACHABLE, 0, 4) == "learned"
