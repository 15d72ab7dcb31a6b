"""The stateful NIC firewall of the reference lab under real traffic (NIST 4.3, VM-FW-R2..R4).

    hv2 [prod]                                     tor2                          hv3 [ops]
     app1  eth0 app .21 --+                                                 +-- app2  eth1 db .22
           eth1 db  .21 --+-- app1-1 --[fw]--+                    +--[fw]-- app2-1
     db1   eth0 db  .31 --+-- db1-0  --[fw]--+== eth1 ==== eth1 ==+-- desk1-0 -- desk1 (no rules)
     desk2 desktop  .12 --+-- desk2-0 (no rules)

    groups: app = app1, app2    db = db1    policy: app -> db tcp 5432 (rules 21 and 30), icmp
    echo everywhere (90, 91), default deny both ways for every member, port security everywhere.
    [fw] = port_from_vm (TC ingress of the port: the VM's packets) and port_to_vm (TC egress).

Each test sends real packets between the lab's own namespaces: sockets for what a VM's kernel
would send, raw frames from app1's own NIC (its MAC, its address) for what it must not. Verdicts
are read from the sockets, from taps in the victim, and from the per-port drop counters of
`nlab status --json` (`ingress` = from the VM, `egress` = towards it). Changes under test go
through `nlab fw`; scaffolding rules (ids 61..70) are added and removed around the tests that
need them. The quota tests run on a copy of the reference lab with `connections: {quota: 5}`
and a connection sweeper every second.
"""

from __future__ import annotations

import os
import random
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dataplane.switch import SwitchDataplane
from netns_lab.features.firewall import plan as firewall
from netns_lab.kernel.netlink import Netlink
from netns_lab.kernel.netns import pids_in as netns_pids
from netns_lab.lab.state import pin_dir
from netns_lab.observe import probe
from netns_lab.topology import loader, names
from tests.lab import fw_attacks as fa
from tests.lab import vlan_attacks as va
from tests.lab.conftest import REFERENCE, Lab, cmdline, leftovers, nlab, reference_variant, unique_name

MARKER = b"nlab-fw-test-" + secrets.token_hex(6).encode()
DB1, APP1_DB, APP2_DB, DESK1 = "10.40.0.31", "10.40.0.21", "10.40.0.22", "10.50.0.11"
PG = 5432
RULE_30 = fa.rule(30, "db", "in", "group:app", "tcp", PG)  # as in the reference lab
# The app side lets every TCP port out to db: then db1's own rules alone decide a TCP flow.
APP_OUT_ANY_TCP = fa.rule(61, "app", "out", "group:db", "tcp", "0-65535")
UDP_9999 = (
    fa.rule(62, "app", "out", "group:db", "udp", 9999),
    fa.rule(63, "db", "in", "group:app", "udp", 9999),
)
DENY_APP2 = fa.rule(65, "db", "in", "vm:app2", "tcp", PG, action="deny", priority=50)
FLIPPER = fa.rule(70, "db", "in", "group:mgmt", "tcp", 9000)  # unrelated to every stream
FLIPS = 20  # live changes: rule 70 added, deleted, added...
QUOTA = 5


@pytest.fixture(scope="module")
def nics(reference_lab: Lab) -> dict[str, va.Nic]:
    doc = fa.status_doc(reference_lab.name)
    return {
        "app1": va.nic(doc, "app1", "eth1"),
        "app2": va.nic(doc, "app2", "eth1"),
        "db1": va.nic(doc, "db1"),
    }


def _missing_programs(lab: Lab) -> tuple[int, dict[str, tuple[list[str], list[str]]]]:
    """How many VM ports the lab has, and those without exactly port_from_vm / port_to_vm."""
    doc = fa.status_doc(lab.name)
    ports = {n["port"]: vm["host"] for vm in doc["vms"] for n in vm["nics"]}
    found = {
        p: (fa.tc_programs(lab.ns(h), p, "ingress"), fa.tc_programs(lab.ns(h), p, "egress"))
        for p, h in ports.items()
    }
    return len(ports), {p: progs for p, progs in found.items() if progs != (["port_from_vm"], ["port_to_vm"])}


# -- 7b. every VM port has its programs right after up --------------------------------------------
def test_every_vm_port_has_both_programs_right_after_up(reference_lab: Lab) -> None:
    count, missing = _missing_programs(reference_lab)
    assert count >= 19 and not missing, f"of {count} VM ports, without ingress/egress programs: {missing}"


# -- 1. default deny, unfiltered VMs, port-range edges with a live rule --------------------------
def test_default_deny_and_live_port_range_edges(reference_lab: Lab) -> None:
    lab, name = reference_lab, reference_lab.name
    edges, desk_ports = (6999, 7000, 7010, 7011), (22, 80, PG, 31337)
    db_ports = (22, 80, PG, 8080, *edges)
    with (
        probe.listening(lab.ns("db1"), [(DB1, p) for p in db_ports]),
        probe.listening(lab.ns("desk1"), [(DESK1, p) for p in desk_ports]),
    ):
        desk = fa.tcp_probes(name, [("desk2", DESK1, p) for p in desk_ports])
        before = fa.status_doc(name)
        with fa.live_rules(name, APP_OUT_ANY_TCP):
            only_pg = fa.tcp_probes(name, [("app1", DB1, p) for p in db_ports])
            counted = fa.grown(name, before, "db1-0", "egress", {"policy": len(db_ports) - 1})
            fa.fw(name, *fa.add_args(fa.rule(60, "db", "in", "group:app", "tcp", "7000-7010")))
            try:
                ranged = fa.tcp_probes(name, [("app1", DB1, p) for p in edges])
            finally:
                fa.fw(name, "del", "60")
            gone = fa.tcp_probes(name, [("app1", DB1, p) for p in edges])
    closed = fa.mismatches(desk, dict.fromkeys(desk, "open"))
    assert not closed, f"desk1 has no rule and must not be filtered (desk2 -> desk1): {closed}"
    want = {("app1", DB1, p): "open" if p == PG else "timeout" for p in db_ports}
    assert not fa.mismatches(only_pg, want), (
        f"db1 accepts only tcp/{PG} from app: {fa.mismatches(only_pg, want)}"
    )
    assert counted.get("policy", 0) >= len(db_ports) - 1, (
        f"db1-0 (towards db1) must refuse them itself: {counted}"
    )
    want = {("app1", DB1, p): "open" if p in (7000, 7010) else "timeout" for p in edges}
    assert not fa.mismatches(ranged, want), f"rule 60 (7000-7010) edges: {fa.mismatches(ranged, want)}"
    assert set(gone.values()) == {"timeout"}, f"after `nlab fw del 60` the range must close again: {gone}"


# -- 2. stateful: replies pass, flag abuse creates nothing ---------------------------------------
def _flag_attack(lab: Lab, nics: dict[str, va.Nic], port: str, direction: str, sport: int) -> dict[str, Any]:
    frames = fa.tcp_flag_frames(nics["app1"], nics["db1"], PG, sport)
    before = fa.status_doc(lab.name)
    with va.taps([(lab.ns("db1"), "eth0")]) as taps:
        va.inject(lab.ns("app1"), "eth1", frames.values())
        counted = fa.grown(lab.name, before, port, direction, {"ct-invalid": len(frames)})
        # the same NIC's ARP, after the attack and along its path, shows the tap sees what comes
        sender = va.Barrier(lab.ns("app1"), "eth1", nics["app1"].mac, nics["app1"].ip or "")
        got = va.barriers(taps, {(lab.ns("db1"), "eth0"): sender})[lab.ns("db1"), "eth0"]
        reached = [str(f) for f in got if f.data in frames.values()]
    tracked = [c for c in fa.fw(lab.name, "connections")["connections"] if sport <= c["sport"] < sport + 5]
    # The lab's VMs solicit IPv6 routers for minutes after the build (backing off): those of other
    # VLANs are flooded to the port and dropped there as vlan-mismatch, at moments of their own.
    counted = {reason: n for reason, n in counted.items() if reason != "vlan-mismatch"}
    return {"sent": list(frames), "counted": counted, "reached db1": reached, "tracked": tracked}


def test_replies_pass_and_unsolicited_segments_do_not(reference_lab: Lab, nics: dict[str, va.Nic]) -> None:
    lab = reference_lab
    with fa.serving(lab.ns("db1"), DB1, PG) as server, fa.connect(lab.ns("app1"), DB1, PG) as sock:
        echoed = fa.exchange(sock, MARKER * 100)
    assert echoed == MARKER * 100, (
        f"app1 -> db1:{PG} must carry data both ways (db1 has no out rule: its replies pass as state): "
        f"sent {len(MARKER) * 100} bytes, db1 read {server.received}, app1 got {len(echoed)} back"
    )
    # app1 as it is: the first firewall the segments meet is app1's own (app1-1, from the VM)
    run = _flag_attack(lab, nics, "app1-1", "ingress", sport=41000)
    assert run["counted"] == {"ct-invalid": 5} and not run["reached db1"] and not run["tracked"], run
    # app1's db NIC in no group: only port security on its side, db1's port must stop them
    fa.set_members(lab.name, "app", ["app1.eth0", "app2"])
    try:
        run = _flag_attack(lab, nics, "db1-0", "egress", sport=42000)
    finally:
        fa.set_members(lab.name, "app", ["app1", "app2"])
    assert run["counted"] == {"ct-invalid": 5}, (
        f"from an unfiltered app1.eth1, db1-0 (towards db1) counted: {run}"
    )
    assert not run["reached db1"], f"segments reached db1's stack: {run}"
    assert not run["tracked"], f"segments that open nothing created connection entries: {run}"


# -- 3. fragments --------------------------------------------------------------------------------
def _fragments_from(frames: list[va.Frame], mac: str) -> int:
    """IPv4 frames from `mac` that are fragments (MF set or an offset)."""
    return sum(
        f.src == mac and f.data[12:14] == b"\x08\x00" and bool(int.from_bytes(f.data[20:22]) & 0x3FFF)
        for f in frames
    )


def test_fragmented_udp_arrives_whole_and_fragment_attacks_never_complete(
    reference_lab: Lab, nics: dict[str, va.Nic]
) -> None:
    lab, name, tap = reference_lab, reference_lab.name, (reference_lab.ns("db1"), "eth0")
    payload = random.randbytes(4000)  # > the 1500-byte MTU: app1's kernel sends 3 fragments
    attacks = fa.fragment_attacks(
        nics["app1"], nics["db1"], 9999, PG, random.sample(range(1 << 15, 1 << 16), 4)
    )
    with fa.live_rules(name, *UDP_9999), fa.udp_receiver(lab.ns("db1"), DB1, 9999) as rx:
        with va.taps([tap]) as taps:
            fa.udp_send(lab.ns("app1"), DB1, 9999, payload)
            got = fa.datagrams(rx, 1.0)
            seen = _fragments_from(taps[tap].frames(), nics["app1"].mac)
        before = fa.status_doc(name)
        with va.taps([tap]) as taps:
            for a in attacks:
                va.inject(lab.ns("app1"), "eth1", a.frames)
            counted = fa.grown(name, before, "app1-1", "ingress", fa.expected(attacks))
            completed = fa.datagrams(rx, 1.0)
            arrived = [f.data for f in taps[tap].frames()]
    assert got == [payload], f"4000-byte UDP app1 -> db1:9999 arrived as {[len(d) for d in got]} bytes"
    assert seen >= 3, f"db1 saw {seen} fragments of it: the datagram was not fragmented, this proves nothing"
    sent = [(a.name, a.expect) for a in attacks]
    assert counted == fa.expected(attacks), f"app1-1 (attacker's port) counted {counted} for {sent}"
    leaked = [a.name for a in attacks for d in a.dropped if d in arrived]
    assert not leaked, f"attack fragments reached db1: {leaked}"
    blind = [a.name for a in attacks for d in a.frames if d not in a.dropped and d not in arrived]
    assert not blind, f"the legitimate first fragments of {blind} never reached db1's tap: the tap is blind"
    assert not completed, f"an attack datagram completed on db1:9999: {completed}"


# -- 4. spoofing from a VM -----------------------------------------------------------------------
def test_spoofed_frames_are_dropped_counted_and_poison_nothing(
    reference_lab: Lab, nics: dict[str, va.Nic]
) -> None:
    lab, name, db1 = reference_lab, reference_lab.name, reference_lab.ns("db1")
    assert probe.ping(db1, APP2_DB), "db1 -> app2 ping (rules 90/91) failed: cannot prime db1's ARP table"
    assert fa.neighbour(db1, APP2_DB) == nics["app2"].mac, "db1 did not learn app2's MAC"
    attacks = fa.spoof_attacks(nics["app1"], nics["db1"], nics["app2"])
    control = fa.arp_request(nics["app1"], nics["db1"])
    before = fa.status_doc(name)
    with va.taps([(db1, "eth0")]) as taps:
        for a in attacks:
            va.inject(lab.ns("app1"), "eth1", a.frames)
        va.inject(lab.ns("app1"), "eth1", [control])
        counted = fa.grown(name, before, "app1-1", "ingress", fa.expected(attacks))
        time.sleep(0.5)  # whatever got in has been processed: ARP, SLAAC from the RA
        arrived = [f.data for f in taps[db1, "eth0"].frames()]
    sent = [(a.name, a.expect) for a in attacks]
    assert counted == fa.expected(attacks), f"app1-1 (attacker's port) counted {counted} for {sent}"
    leaked = [a.name for a in attacks for d in a.dropped if d in arrived]
    assert not leaked, f"spoofed frames reached db1: {leaked}"
    assert control in arrived, "app1's honest ARP request never reached db1's tap: the tap is blind"
    now = fa.neighbour(db1, APP2_DB)
    assert now == nics["app2"].mac, (
        f"db1's ARP entry for app2 ({APP2_DB}) is {now}, app1 is {nics['app1'].mac}"
    )
    rogue = [a for a in fa.addresses(db1) if a.startswith(fa.ROGUE_PREFIX[:-1])]
    assert not rogue, f"db1 configured addresses from app1's rogue router advertisement: {rogue}"


# -- 8. same verdicts on one host and across hosts -----------------------------------------------
def test_same_verdicts_whether_or_not_vms_share_a_host(reference_lab: Lab) -> None:
    """app1 shares hv2 with db1 (one bridge), app2 is on hv3 (through tor2): same answers."""
    lab, name = reference_lab, reference_lab.name
    cases = [(vm, DB1, p) for vm in ("app1", "app2") for p in (PG, 22)]
    want = {c: "open" if c[2] == PG else "timeout" for c in cases}
    with probe.listening(lab.ns("db1"), [(DB1, PG), (DB1, 22)]):
        by_senders = fa.tcp_probes(name, cases)  # :22 refused by each sender's own out rules
        before = fa.status_doc(name)
        with fa.live_rules(name, APP_OUT_ANY_TCP):
            by_db1 = fa.tcp_probes(name, cases)  # :22 refused by db1's in rules
            counted = fa.grown(name, before, "db1-0", "egress", {"policy": 2})
    pings = {vm: probe.ping(lab.ns(vm), DB1) for vm in ("app1", "app2")}
    assert not fa.mismatches(by_senders, want), f"reference policy: {fa.mismatches(by_senders, want)}"
    assert not fa.mismatches(by_db1, want), f"with db1 deciding: {fa.mismatches(by_db1, want)}"
    assert counted.get("policy", 0) >= 2, f"db1-0 should have refused both :22 SYNs itself: {counted}"
    assert all(pings.values()), f"echo (rules 90/91) from the same and the other host: {pings}"


# -- 9. verdict events ---------------------------------------------------------------------------
EVENT_FIELDS = {
    "time": float, "vm": str, "nic": str, "port": str, "direction": str, "verdict": str, "reason": str,
    "rule": (int, str, type(None)), "proto": str, "src": str, "dst": str, "sport": int, "dport": int,
}  # fmt: skip


def _event(nic: str, direction: str, rule: int | str | None, reason: str, **fields: Any) -> dict[str, Any]:
    return {"nic": nic, "direction": direction, "rule": rule, "reason": reason, **fields}


EXPECTED_EVENTS = {
    "app1 -> db1:22, default deny out": _event(
        "app1.eth1", "out", "default", "policy", src=APP1_DB, dport=22
    ),
    "app2 -> db1:5432, rule 65 in": _event("db1.eth0", "in", 65, "policy", src=APP2_DB, dport=PG),
    "lone ACK from app1": _event("app1.eth1", "out", None, "ct-invalid", sport=43000, dport=PG),
}


def test_events_report_denials_with_rule_and_reason(reference_lab: Lab, nics: dict[str, va.Nic]) -> None:
    lab, name = reference_lab, reference_lab.name
    start = time.time()

    def missing(events: list[dict[str, Any]]) -> list[str]:
        recent = [e for e in events if e["time"] >= start - 0.1]
        return [w for w, f in EXPECTED_EVENTS.items() if not any(f.items() <= e.items() for e in recent)]

    def following(events: list[dict[str, Any]]) -> bool:
        probe.tcp(lab.ns("app1"), DB1, 7777, 0.2)  # denied on an unused port until one shows
        return any(e["dport"] == 7777 for e in events)

    follower = fa.Follower(name, 30)
    try:
        with fa.live_rules(name, DENY_APP2), probe.listening(lab.ns("db1"), [(DB1, PG), (DB1, 22)]):
            follower.wait_for(following, 8)
            start = time.time()
            denied = fa.tcp_probes(name, [("app1", DB1, 22), ("app2", DB1, PG)], timeout=0.5)
            va.inject(
                lab.ns("app1"), "eth1", [fa.tcp_flag_frames(nics["app1"], nics["db1"], PG, 43000)["ACK"]]
            )
            events = follower.wait_for(lambda ev: not missing(ev), 5)
    finally:
        follower.stop()
    bad = [(e, f) for e in events for f, t in EVENT_FIELDS.items() if not isinstance(e.get(f), t)]
    assert not bad, f"events without a contract field of the right type: {bad[:3]}"
    assert {e["verdict"] for e in events} == {"deny"}, "--denied printed allowed flows"
    assert set(denied.values()) == {"timeout"}, f"the denied connections went through: {denied}"


# -- 5. updates while streams run ----------------------------------------------------------------
def test_deleting_a_rule_cuts_a_running_stream_within_2s(reference_lab: Lab) -> None:
    lab, name = reference_lab, reference_lab.name
    with fa.serving(lab.ns("db1"), DB1, PG, echo=False) as server:
        try:
            with fa.connect(lab.ns("app1"), DB1, PG) as sock, fa.streaming(sock):
                time.sleep(0.5)
                assert server.received > 0, "the stream app1 -> db1:5432 never started"
                before, start = fa.status_doc(name), time.monotonic()
                fa.fw(name, "del", "30")
                done = time.monotonic()
                time.sleep(2.5)
                counted = fa.grown(name, before, "db1-0", "egress", {"policy": 1})
                cut, readded = server.last_rx - done, time.monotonic()
                fa.fw(name, *fa.add_args(RULE_30))
                fresh = probe.tcp(lab.ns("app1"), DB1, PG)
                time.sleep(0.5)
        finally:
            if 30 not in {r["id"] for r in fa.fw(name, "show")["rules"]}:
                fa.change_rules(name, add=(RULE_30,))
    print(f"cut {cut:+.3f} s after `nlab fw del 30` returned ({done - start:.2f} s to run)", file=sys.stderr)
    assert server.last_rx > start, "the stream stopped before `nlab fw del 30` ran"
    assert cut < 2.0, f"db1 still received data {cut:.2f} s after `nlab fw del 30` returned"
    assert counted.get("policy", 0) >= 1, f"db1-0 should count the cut stream's packets as policy: {counted}"
    assert fresh == "open", f"after re-adding rule 30 a new app1 -> db1:5432 connection is {fresh}"
    assert server.last_rx < readded, (
        "the cut connection came back with rule 30: its state is gone, only a SYN reopens"
    )


def test_denied_streams_never_leak_while_rules_flip(reference_lab: Lab) -> None:
    """web1's SYNs die at web1's port, app1's :22 SYNs at db1's (rule 61); app2's :5432 must pass.

    Attempts are paced: a closed connection keeps its entry for tcp_open_timeout (60 s) on both
    endpoints, so thousands of back-to-back connections would meet db1's quota (4096) instead."""
    lab, name = reference_lab, reference_lab.name
    streams = {("web1", DB1, PG): "timeout", ("app1", DB1, 22): "timeout", ("app2", DB1, PG): "open"}
    outcomes: dict[tuple[str, str, int], Counter[str]] = {s: Counter() for s in streams}
    stop = threading.Event()

    def keep_trying(target: tuple[str, str, int]) -> None:
        while not stop.is_set():
            outcomes[target][probe.tcp(lab.ns(target[0]), target[1], target[2], 0.2)] += 1
            time.sleep(0.02)

    before = fa.status_doc(name)
    with (
        probe.listening(lab.ns("db1"), [(DB1, PG), (DB1, 22)]),
        fa.live_rules(name, APP_OUT_ANY_TCP),
        ThreadPoolExecutor(len(streams)) as ex,
    ):
        futures = [ex.submit(keep_trying, s) for s in streams]
        try:
            fa.flip_rule(name, FLIPPER, FLIPS)
        finally:
            stop.set()
        for f in futures:
            f.result()
    after = fa.status_doc(name)
    at_db1, at_app2 = fa.added(after, before, "db1-0", "egress"), fa.added(after, before, "app2-1", "ingress")
    wrong = {s: dict(c) for s, c in outcomes.items() if set(c) != {streams[s]}}
    assert not wrong, (
        f"outcomes while rule 70 flipped {FLIPS} times (expected {streams}): {wrong}; "
        f"drops towards db1 {at_db1}, from app2 {at_app2}"
    )
    assert all(sum(c.values()) >= 5 for c in outcomes.values()), f"too few attempts: {outcomes}"
    assert at_db1.get("policy", 0) >= 5, f"app1's :22 SYNs should have been refused at db1-0: {at_db1}"


# -- 7. group membership: a VM without rules is unfiltered; a port without policy denies ----------
def test_group_del_leaves_db1_unfiltered_and_back(reference_lab: Lab) -> None:
    """Documented behaviour: a NIC no rule applies to is not filtered (allow). db1 leaving `db`,
    its only group, is refused while rule 30 applies to `db` alone (it would apply to no NIC);
    with rule 30 gone, db1 leaves, keeps no rule and passes everything (port security stays)."""
    lab, name = reference_lab, reference_lab.name

    def both_ways() -> tuple[str, bool, dict[str, int]]:
        """app1 -> db1:22, db1 -> app1 udp (app1.eth1 unfiltered), db1-0's new drops from db1."""
        before = fa.status_doc(name)
        opened = probe.tcp(lab.ns("app1"), DB1, 22)
        with fa.udp_receiver(lab.ns("app1"), APP1_DB, 7777) as rx:
            fa.udp_send(lab.ns("db1"), APP1_DB, 7777, MARKER)
            received = fa.datagrams(rx, 0.5) == [MARKER]
        return opened, received, fa.added(fa.status_doc(name), before, "db1-0", "ingress")

    with probe.listening(lab.ns("db1"), [(DB1, 22)]):
        fa.set_members(name, "app", ["app1.eth0", "app2"])
        try:
            filtered = both_ways()
            refused = nlab("fw", "--lab", name, "group", "del", "db", "db1")
            kept = [r["id"] for r in fa.fw(name, "show", "db1")["rules"]]
            fa.change_rules(name, drop=(30,))
            try:
                fa.fw(name, "group", "del", "db", "db1")
                try:
                    rules, unfiltered = fa.fw(name, "show", "db1")["rules"], both_ways()
                finally:
                    fa.fw(name, "group", "add", "db", "db1")
            finally:
                fa.change_rules(name, add=(RULE_30,))
            restored = both_ways()
        finally:
            fa.set_members(name, "app", ["app1", "app2"])
    for when, got in (("in `db`", filtered), ("back in `db` with rule 30", restored)):
        assert got[:2] == ("timeout", False) and got[2].get("policy", 0) >= 1, (
            f"db1 {when} must refuse app1 -> :22 and its own udp out (at db1-0): {got}"
        )
    assert refused.returncode == 2 and "rule 30 applies to no NIC" in refused.stderr, (
        f"`group del db db1` while rule 30 applies to `db` alone: exit {refused.returncode}, {refused.stderr}"
    )
    assert kept == [30, 90, 91], f"the refused change must leave db1's rules as they were: {kept}"
    assert rules == [], f"db1 out of `db` should have no rule: {[r['id'] for r in rules]}"
    assert unfiltered == ("open", True, {}), (
        f"db1 without rules must pass app1 -> :22 and its udp out: {unfiltered}"
    )


def test_a_firewalled_port_without_policy_denies(reference_lab: Lab) -> None:
    """Fail closed: desk1's port with the firewall flag but an endpoint no policy was written for."""
    lab, name = reference_lab, reference_lab.name
    topo = loader.load(REFERENCE, lab=name)
    vm = next(v for v in topo.vms if v.name == "desk1")
    nic, own = vm.nics[0], firewall.vnic_settings(topo, vm, vm.nics[0])
    with Netlink(lab.ns("hv3")) as nl:
        ifindex = nl.index(names.vm_port("desk1", 0))
    dp = SwitchDataplane.open(pin_dir(name) / "hv3")
    with probe.listening(lab.ns("desk1"), [(DESK1, 22)]):
        try:
            before = fa.status_doc(name)
            dp.firewall.set_vnic(ifindex, nic.mac, 4095, True, False, True, own.addresses)
            closed = probe.tcp(lab.ns("desk2"), DESK1, 22)
            counted = fa.grown(name, before, "desk1-0", "egress", {"policy": 1})
        finally:
            dp.firewall.set_vnic(
                ifindex, nic.mac, own.endpoint, own.port_security, own.any_source, False, own.addresses
            )
            dp.close()
        reopened = probe.tcp(lab.ns("desk2"), DESK1, 22)
    assert own.endpoint == 0 and closed == "timeout" and counted.get("policy", 0) >= 1, (
        f"a firewalled port whose endpoint has no policy must deny: desk2 -> desk1:22 {closed}, {counted}"
    )
    assert reopened == "open", f"desk1's own settings restored, desk2 -> desk1:22 is {reopened}"


# -- 6. connection quota; attach order during up ---------------------------------------------------
@pytest.fixture(scope="module")
def quota_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, fa.AttachWatch]]:
    """A copy of the reference lab with `quota: 5`, closed connections forgotten after 1 s and
    swept every second, built while a poller watches every VM port."""
    swept = "tcp_close_timeout: 1, sweep_interval: 1,"
    edits = {"connections: {quota: 4096,": f"connections: {{quota: {QUOTA}, {swept}"}
    path = reference_variant(tmp_path_factory.mktemp("fw"), "nist-quota.yaml", edits)
    lab = Lab(unique_name(), path)
    topo = loader.load(path, lab=lab.name)
    ports = {names.vm_port(vm.name, n.index) for vm in topo.vms for n in vm.nics}
    try:
        with fa.watching_attach(lab.name, [h.name for h in topo.hosts], ports) as watch:
            proc = lab.up()
        assert proc.returncode == 0, proc.stderr
        yield lab, watch
    finally:
        lab.down()
    assert not leftovers(lab.name, lab.inodes)


def test_no_vm_port_carries_frames_before_its_programs(quota_lab: tuple[Lab, fa.AttachWatch]) -> None:
    lab, watch = quota_lab
    count, missing = _missing_programs(lab)
    assert not watch.violations, (
        f"VM ports with a carrier but not both programs during up: {watch.violations}"
    )
    assert watch.polls >= 10 and len(watch.verified) >= count // 2, (
        f"the poller saw too little of the build: {watch.polls} polls, {len(watch.verified)} of {count} ports"
    )
    assert not missing, f"VM ports without their programs after up: {missing}"


@pytest.fixture(scope="module")
def quota_run(quota_lab: tuple[Lab, fa.AttachWatch]) -> dict[str, Any]:
    """app1 holds QUOTA connections to db1 and tries one more; then app2 tries one."""
    lab, name = quota_lab[0], quota_lab[0].name
    run: dict[str, Any] = {}
    with fa.serving(lab.ns("db1"), DB1, PG):
        held = [fa.connect(lab.ns("app1"), DB1, PG) for _ in range(QUOTA)]
        try:
            before = fa.status_doc(name)
            run["sixth"] = probe.tcp(lab.ns("app1"), DB1, PG)
            run["app1-1"] = fa.grown(name, before, "app1-1", "ingress", {"ct-quota": 1})
            run["echoes"] = [fa.exchange(s, MARKER) == MARKER for s in held]
            run["app2"] = probe.tcp(lab.ns("app2"), DB1, PG)
            run["db1-0"] = fa.grown(name, before, "db1-0", "egress", {})
            run["app1 entries"] = [
                c for c in fa.fw(name, "connections")["connections"] if c["nic"] == "app1.eth1"
            ]
        finally:
            for s in held:
                s.close()
    return run


def test_quota_refuses_new_flows_and_keeps_established_ones(quota_run: dict[str, Any]) -> None:
    run = quota_run
    assert run["sixth"] == "timeout", f"app1's connection {QUOTA + 1} over quota {QUOTA}: {run}"
    assert run["app1-1"].get("ct-quota", 0) >= 1, f"app1-1 should count the refused SYN as ct-quota: {run}"
    assert all(run["echoes"]), f"the {QUOTA} established connections must still carry data: {run}"
    assert len(run["app1 entries"]) == QUOTA, f"app1.eth1 should hold exactly {QUOTA} entries: {run}"


def test_quota_of_one_vm_does_not_block_another(quota_run: dict[str, Any]) -> None:
    assert quota_run["app2"] == "open", (
        f"app2 -> db1:{PG} is {quota_run['app2']}: the quota is per VM, app1's {QUOTA} connections must "
        f"not block app2 (drops towards db1: {quota_run['db1-0']})"
    )


def test_sweeper_gives_closed_connections_quota_back(
    quota_lab: tuple[Lab, fa.AttachWatch], quota_run: dict
) -> None:
    """app1's QUOTA connections closed at the end of `quota_run`: no packet of theirs comes back
    to delete their entries, so only the hosts' sweepers (one per hypervisor namespace) can give
    app1 its quota back; with them, app1 opens QUOTA connections again within a few seconds."""
    lab, topo = quota_lab[0], loader.load(quota_lab[0].topology, lab=quota_lab[0].name)
    for host in topo.hosts:
        inode = os.stat(f"/run/netns/{lab.ns(host.name)}").st_ino
        commands = [cmdline(pid) for pid in netns_pids({inode})]
        assert any("netns_lab.lab.sweeper" in c for c in commands), f"no sweeper in {host.name}: {commands}"
    deadline, entries = time.monotonic() + 8.0, None
    while time.monotonic() < deadline:
        entries = [c for c in fa.fw(lab.name, "connections")["connections"] if c["nic"] == "app1.eth1"]
        if not entries:
            break
        time.sleep(0.25)
    assert not entries, f"closed connections still hold app1's quota: {entries}"
    with fa.serving(lab.ns("db1"), DB1, PG):
        again = [fa.connect(lab.ns("app1"), DB1, PG) for _ in range(QUOTA)]
        for sock in again:
            sock.close()
