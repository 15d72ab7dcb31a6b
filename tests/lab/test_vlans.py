"""VLAN segmentation of the reference lab under attack, proved with real frames (NIST 2.4, VM-VN-R1).

    hv2 [prod]                        tor2 (fabric)                        hv3 [ops]
     app1   app 120     --+                                               +-- app2   app 120      victim
     db1    db 130      --+-- eth1 ==== hv2-eth1      hv3-eth1 ==== eth1 -+-- desk1  desktop 140  attacker
     desk2  desktop 140 --+               hv1-eth1       ^ tap            +-- mgmt1, vmknic mgmt0 (10)
     vmknic mgmt0 (10)  --+                  ||    (allowed tags only,
                                             ||     never stacked?)
                          hv1 [vs3]: vmknic mgmt0 10.10.0.1, vm4 (app, management)

    attacks from desk1's eth0 (raw socket): double tag 140/120, foreign tag 120, 802.1ad 140 over
    802.1Q 120, DTP, CDP, STP BPDU, LLDP, a random-source-MAC flood; taps (promiscuous raw sockets)
    on the victims app2, app1 (other VLAN), desk2 (same VLAN, other host) and on tor2's hv3-eth1.
    Drops are read from `nlab status --json` (per port, direction and reason) before and after.

Shared test subnet: 192.0.2.0/24 (TEST-NET-1), added for one fixture's life on desk1, app2, app1,
desk2 so that VMs of different VLANs sit in one IP subnet: only the VLANs keep them apart.
The last tests build a copy of the reference lab whose tor2 trunk to hv3 lacks `desktop`.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from dataplane.switch import SwitchDataplane
from netns_lab.features.vlan import checks as vlancheck
from netns_lab.features.vlan import plan as ports
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.state import pin_dir
from netns_lab.observe import probe
from netns_lab.topology import loader
from netns_lab.topology.model import PortProfile, Topology
from tests.lab import vlan_attacks as va
from tests.lab.conftest import REFERENCE, Lab, nlab, reference_variant, running

# found in a capture = an attack frame got through
MARKER = b"nlab-vlan-test-" + secrets.token_hex(6).encode()
PER_TARGET = 3  # hopping frames per attack and target (broadcast, app2, app1)
CONTROL_COUNT = 9  # frames per switch-control protocol
FLOOD = 3000  # random source MACs
DESKTOP, APP = 140, 120
TRUNK = ("tor2", "hv3-eth1")  # the switch side of the attacker host's trunk

SHARED = {
    ("desk1", "eth0"): "192.0.2.1/24",  # desktop, hv3
    ("app2", "eth0"): "192.0.2.2/24",  # app, hv3 (desk1's vSwitch)
    ("app1", "eth0"): "192.0.2.3/24",  # app, hv2
    ("desk2", "eth0"): "192.0.2.4/24",  # desktop, hv2
}


# VLAN isolation must hold on its own, without port security (which would stop the shared-subnet
# addresses and the MAC flood at the VM port before any VLAN logic sees them): this module runs
# the reference lab with port security off on the four VMs it borrows.
NO_PORTSEC = {
    "{vswitch: ops, vlan: desktop, ip: 10.50.0.11/24}": "desk1",
    "{vswitch: prod, vlan: desktop, ip: 10.50.0.12/24}": "desk2",
    "{vswitch: prod, vlan: app, ip: 10.30.0.21/24}": "app1",
    "{vswitch: ops, vlan: app, ip: 10.30.0.22/24}": "app2",
}


@pytest.fixture(scope="module")
def reference_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    edits = {nic: nic[:-1] + ", port_security: false}" for nic in NO_PORTSEC}
    variant = reference_variant(tmp_path_factory.mktemp("vlans"), "nist-no-portsec.yaml", edits)
    with running(variant) as lab:
        yield lab


@pytest.fixture(scope="module")
def doc(reference_lab: Lab) -> dict[str, Any]:
    return reference_lab.status()


def _ip(nic: va.Nic) -> str:
    assert nic.ip, f"{nic.node}.{nic.nic} has no address in the reference lab"
    return nic.ip.split("/")[0]


def _pings(lab: Lab, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], bool]:
    """ping (count 2) from node to address, all pairs at once: a lost ping costs its full timeout."""
    with ThreadPoolExecutor(len(pairs)) as ex:
        futures = {pair: ex.submit(probe.ping, lab.ns(pair[0]), pair[1], 2, 1.0) for pair in pairs}
        return {pair: f.result() for pair, f in futures.items()}


def _barrier(lab: Lab, doc: dict[str, Any], node: str, iface: str = "eth0") -> va.Barrier:
    """A barrier from `node`'s `iface`, from its own MAC and address (see va.Barrier)."""
    n = va.nic(doc, node, iface)
    return va.Barrier(lab.ns(node), iface, n.mac, _ip(n))


def _after_barriers(
    lab: Lab,
    doc: dict[str, Any],
    taps: dict[tuple[str, str], va.Tap],
    senders: dict[tuple[str, str], tuple[str, str]],
) -> dict[str, list[va.Frame]]:
    """What each tapped (node, iface) received up to the barrier of its sender (node, iface) in the
    same VLAN, by "node.iface"."""
    got = va.barriers(
        taps, {(lab.ns(n), i): _barrier(lab, doc, *sender) for (n, i), sender in senders.items()}
    )
    return {f"{n}.{i}": got[lab.ns(n), i] for n, i in senders}


def _arp_targets(frames: list[va.Frame], src_mac: str) -> set[str]:
    """Addresses asked for by ARP requests from `src_mac` among `frames`."""
    return {
        socket.inet_ntoa(f.data[38:42])
        for f in frames
        if f.src == src_mac and f.data[12:14] == b"\x08\x06" and f.data[20:22] == b"\x00\x01"
    }


def _foreign(frames: list[va.Frame], owners: dict[str, va.Nic], vlan: int) -> list[str]:
    """Received frames whose sender is not a member of `vlan`, described with who sent them."""
    found = []
    for f in frames:
        if f.outgoing:
            continue
        owner = owners.get(f.src)
        if owner is None or owner.vlan != vlan:
            who = f"{owner.node}.{owner.nic} (VLAN {owner.vlan})" if owner else "an unknown MAC"
            found.append(f"{f} from {who}")
    return found


# -- 1. same VLAN reachable, different VLANs exchange nothing, broadcasts included ---------------
@pytest.fixture(scope="module")
def shared_subnet(reference_lab: Lab) -> Iterator[None]:
    with va.temporary_addresses(reference_lab.name, SHARED):
        yield


def test_same_vlan_reaches_across_hosts(reference_lab: Lab, shared_subnet: None) -> None:
    cases = {
        ("desk1", "10.50.0.12"): "desktop VLAN: desk1 (hv3) -> desk2 (hv2) through tor2",
        ("desk2", "10.50.0.11"): "desktop VLAN: desk2 (hv2) -> desk1 (hv3)",
        ("hv1", "10.10.0.3"): "management VLAN: vmknic mgmt0 of hv1 -> hv3, from the host namespace",
        ("hv3", "10.10.0.1"): "management VLAN: vmknic mgmt0 of hv3 -> hv1",
        ("desk1", "192.0.2.4"): "shared test subnet, desktop VLAN: desk1 (hv3) -> desk2 (hv2)",
        ("app2", "192.0.2.3"): "shared test subnet, app VLAN: app2 (hv3) -> app1 (hv2)",
    }
    results = _pings(reference_lab, list(cases))
    failed = [f"{why} ({src} -> {dst})" for (src, dst), why in cases.items() if not results[src, dst]]
    assert not failed, "same-VLAN pings failed: " + "; ".join(failed)


ISOLATED = {
    ("desk1", "192.0.2.2"): "desktop -> app on the same vSwitch (hv3 ops)",
    ("desk1", "192.0.2.3"): "desktop (hv3) -> app (hv2) across tor2",
    ("app2", "192.0.2.1"): "app -> desktop on the same vSwitch (hv3 ops)",
    ("app2", "192.0.2.4"): "app (hv3) -> desktop (hv2) across tor2",
}


def test_different_vlans_exchange_no_frame_not_even_broadcasts(
    reference_lab: Lab, shared_subnet: None, doc: dict[str, Any]
) -> None:
    """One IP subnet, two VLANs: pings fail, and no ARP broadcast crosses, while it floods its own VLAN."""
    lab = reference_lab
    nodes = ["desk1", "app2", "app1", "desk2"]
    mac = {n: va.nic(doc, n).mac for n in nodes}
    partner = {"desk1": "desk2", "desk2": "desk1", "app2": "app1", "app1": "app2"}  # same VLAN, other host
    with va.taps((lab.ns(n), "eth0") for n in nodes) as taps:
        results = _pings(lab, list(ISOLATED))
        got = _after_barriers(lab, doc, taps, {(n, "eth0"): (partner[n], "eth0") for n in nodes})
        seen = {n: got[f"{n}.eth0"] for n in nodes}
    crossed = [f"{why} ({src} -> {dst})" for (src, dst), why in ISOLATED.items() if results[src, dst]]
    assert not crossed, "pings between VLANs got an answer: " + "; ".join(crossed)
    for sender, others in (("desk1", ["app2", "app1"]), ("app2", ["desk1", "desk2"])):
        for other in others:
            leaked = [str(f) for f in seen[other] if f.src == mac[sender]]
            assert not leaked, (
                f"{other} (another VLAN) received {len(leaked)} frames of {sender}: {leaked[:5]}"
            )
    # The same broadcasts did flood their own VLAN: the taps would have caught a leak.
    assert {"192.0.2.2", "192.0.2.3"} <= _arp_targets(seen["desk2"], mac["desk1"]), (
        "desk2 (desktop VLAN) did not see desk1's ARP broadcasts: same-VLAN flooding or the tap is broken"
    )
    assert {"192.0.2.1", "192.0.2.4"} <= _arp_targets(seen["app1"], mac["app2"]), (
        "app1 (app VLAN) did not see app2's ARP broadcasts: same-VLAN flooding or the tap is broken"
    )


# -- 2, 3, 6. VLAN hopping and switch-control frames from a VM -----------------------------------
@dataclass
class AttackRun:
    attacks: list[va.Attack]
    before: dict[str, Any]
    after: dict[str, Any]
    captured: dict[str, list[va.Frame]]  # "node.iface" -> frames
    trunk: list[va.Frame]
    legit_ping: bool

    def __repr__(self) -> str:  # pytest prints it when an assertion fails: frames are noise there
        return f"AttackRun({[a.name for a in self.attacks]}, trunk frames: {len(self.trunk)})"

    def expected(self) -> dict[str, int]:
        """Drops per reason the attacks must add."""
        want: Counter[str] = Counter()
        for a in self.attacks:
            want[a.reason] += len(a.frames)
        return dict(sorted(want.items()))


VICTIM_NICS = [("app2", "eth0"), ("app2", "eth1"), ("app1", "eth0"), ("app1", "eth1"), ("desk2", "eth0")]
# who sends each victim's barrier: a NIC of the victim's VLAN on the other host, so that it crosses
# the trunks an attack frame would; desk2's comes from the attacker's own NIC, after its attacks
VICTIM_BARRIERS = {
    ("app2", "eth0"): ("app1", "eth0"),
    ("app2", "eth1"): ("app1", "eth1"),
    ("app1", "eth0"): ("app2", "eth0"),
    ("app1", "eth1"): ("app2", "eth1"),
    ("desk2", "eth0"): ("desk1", "eth0"),
    TRUNK: ("desk1", "eth0"),
}


def _wait_for_drops(lab: Lab, node: str, port: str, before: dict[str, Any], want: dict[str, int]) -> dict:
    """The status once `port` counted at least `want` more ingress drops (softirq may lag), or at 3 s."""
    deadline = time.monotonic() + 3.0
    while True:
        after = lab.status()
        got = va.delta(va.port_drops(after, node, port), va.port_drops(before, node, port))
        if all(got.get(r, 0) >= n for r, n in want.items()) or time.monotonic() > deadline:
            return after
        time.sleep(0.1)


@pytest.fixture(scope="module")
def attack_run(reference_lab: Lab, doc: dict[str, Any]) -> AttackRun:
    """desk1 sends every attack once; taps and counters record what each test then checks."""
    lab = reference_lab
    attacker, app2, app1 = va.nic(doc, "desk1"), va.nic(doc, "app2"), va.nic(doc, "app1")
    targets = [
        va.Target(va.BROADCAST, "10.30.0.255"),
        va.Target(app2.mac, _ip(app2)),
        va.Target(app1.mac, _ip(app1)),
    ]
    attacks = va.hopping_attacks(attacker.mac, _ip(attacker), DESKTOP, APP, targets, MARKER, PER_TARGET)
    attacks += va.control_attacks(attacker.mac, MARKER, CONTROL_COUNT)
    where = [(lab.ns(n), i) for n, i in VICTIM_NICS] + [(lab.ns(TRUNK[0]), TRUNK[1])]
    before = lab.status()
    with va.taps(where) as taps:
        for attack in attacks:
            va.inject(lab.ns("desk1"), "eth0", attack.frames)
        legit = probe.ping(lab.ns("desk1"), "10.50.0.12", count=2)  # a desktop frame must cross the trunk
        run = AttackRun(attacks, before, {}, {}, [], legit)
        run.after = _wait_for_drops(lab, "hv3", "desk1-0", before, run.expected())
        got = _after_barriers(lab, doc, taps, VICTIM_BARRIERS)
        run.captured = {f"{n}.{i}": got[f"{n}.{i}"] for n, i in VICTIM_NICS}
        run.trunk = got[".".join(TRUNK)]
    return run


def test_hopping_and_control_frames_reach_no_victim(attack_run: AttackRun) -> None:
    sent = ", ".join(f"{a.name} x{len(a.frames)}" for a in attack_run.attacks)
    for where, frames in attack_run.captured.items():
        got = [str(f) for f in frames if f.carries(MARKER)]
        assert not got, f"{where} received {len(got)} attack frames from desk1 ({sent}): {got[:5]}"


def test_attacker_port_counts_every_attack_frame_with_its_reason(attack_run: AttackRun) -> None:
    before = va.port_drops(attack_run.before, "hv3", "desk1-0")
    got = va.delta(va.port_drops(attack_run.after, "hv3", "desk1-0"), before)
    assert got == attack_run.expected(), (
        f"hv3 port desk1-0 (desk1's access port) ingress drops: expected exactly {attack_run.expected()} "
        f"from {[(a.name, a.reason, len(a.frames)) for a in attack_run.attacks]}, counted {got}"
    )


def test_every_drop_is_counted_once_lab_wide(attack_run: AttackRun) -> None:
    """No ingress drop anywhere but the attacker's, no attack frame got far enough to be dropped twice.
    The link tor1-tor2 brings the lab's own flooded frames (the barriers) back round to the
    standby members of hv2's and hv3's teams, which drop them by design: those drops are on
    those two members only, and are no attack frame's."""
    ingress = va.delta(va.total_drops(attack_run.after), va.total_drops(attack_run.before))
    standby = ingress.pop("team-standby-rx", 0)
    on_members = sum(
        va.port_drops(attack_run.after, host, "eth0")["team-standby-rx"]
        - va.port_drops(attack_run.before, host, "eth0")["team-standby-rx"]
        for host in ("hv2", "hv3")
    )
    assert standby == on_members, f"standby drops off hv2.eth0, hv3.eth0: {standby} != {on_members}"
    assert ingress == attack_run.expected(), (
        f"lab-wide ingress drops grew by {ingress}, the attacks sent {attack_run.expected()}"
    )
    egress = va.delta(va.total_drops(attack_run.after, "egress"), va.total_drops(attack_run.before, "egress"))
    late = {r: n for r, n in egress.items() if r in attack_run.expected()}
    assert not late, f"attack frames were dropped on egress somewhere (they got into a switch): {late}"


def test_trunk_carries_only_its_allowed_vlans(reference_lab: Lab, attack_run: AttackRun) -> None:
    topo = loader.load(REFERENCE, lab=reference_lab.name)
    port = next(p for p in ports.switch_ports(topo, TRUNK[0]) if p.name == TRUNK[1])
    allowed, untagged = set(port.vlans.allowed), port.vlans.untagged
    bad = []
    for f in attack_run.trunk:
        tags = f.tags()
        if f.carries(MARKER):
            bad.append(f"attack frame on the trunk: {f}")
        elif not tags and not untagged:
            bad.append(f"untagged frame on a trunk without untagged: {f}")
        elif len(tags) > 1 or (tags and tags[0][0] != va.TPID_8021Q):
            bad.append(f"stacked or 802.1ad tag: {f}")
        elif tags and tags[0][1] not in allowed:
            bad.append(f"VLAN {tags[0][1]} not in {sorted(allowed)}: {f}")
    assert not bad, f"{TRUNK[0]}.{TRUNK[1]} carried {len(bad)} frames it must not: {bad[:8]}"
    assert attack_run.legit_ping, "desk1 -> desk2 (desktop VLAN) failed during the attacks"
    assert any(f.tags() == [(va.TPID_8021Q, DESKTOP)] for f in attack_run.trunk), (
        f"the trunk tap saw no desktop frame of desk1's ping ({len(attack_run.trunk)} frames): tap broken"
    )


# -- 4, 5. a promiscuous VM, and one flooding random MACs ----------------------------------------
OTHER_VLAN_TRAFFIC = [
    ("app1", "10.30.0.22"),  # app, hv2 -> hv3
    ("app2", "10.30.0.21"),
    ("hv1", "10.10.0.3"),  # management vmknics
    ("mgmt1", "10.10.0.2"),
    ("app2", "10.40.0.31"),  # db, hv3 -> hv2
]
BROADCASTS = [("app2", "10.30.0.99"), ("mgmt1", "10.10.0.99"), ("hv3", "10.13.0.99"), ("app1", "10.40.0.99")]
OWN_BROADCAST = ("desk2", "10.50.0.99")  # the desktop VLAN's own ARP broadcast: desk1 must see it


def test_promiscuous_vm_sees_no_other_vlan(reference_lab: Lab, doc: dict[str, Any]) -> None:
    lab = reference_lab
    with va.taps([(lab.ns("desk1"), "eth0")]) as taps:
        results = _pings(lab, [*OTHER_VLAN_TRAFFIC, *BROADCASTS, OWN_BROADCAST])
        frames = _after_barriers(lab, doc, taps, {("desk1", "eth0"): ("desk2", "eth0")})["desk1.eth0"]
    failed = [pair for pair in OTHER_VLAN_TRAFFIC if not results[pair]]
    assert not failed, f"other VLANs' traffic did not run, so the test proves nothing: {failed} failed"
    foreign = _foreign(frames, va.nics(doc), DESKTOP)
    assert not foreign, f"promiscuous desk1 (desktop VLAN) saw {len(foreign)} foreign frames: {foreign[:8]}"
    assert OWN_BROADCAST[1] in _arp_targets(frames, va.nic(doc, "desk2").mac), (
        "desk1 missed desk2's ARP broadcast in its own VLAN: the tap is broken"
    )


def _fdb_macs(lab: Lab, host: str, bridge: str) -> set[str]:
    out = nlab("exec", "--lab", lab.name, host, "--", "bridge", "-j", "fdb", "show", "br", bridge, check=True)
    return {entry["mac"] for entry in json.loads(out.stdout)}


def test_mac_flood_breaks_no_isolation(reference_lab: Lab, doc: dict[str, Any]) -> None:
    lab = reference_lab
    flood = va.mac_flood(FLOOD, MARKER, seed=int.from_bytes(MARKER[-6:], "big"))
    sources = {f[6:12].hex(":") for f in flood}
    barriers = {  # tapped NIC: the NIC of its VLAN on the other host that sends its barrier
        ("desk1", "eth0"): ("desk2", "eth0"),
        ("desk2", "eth0"): ("desk1", "eth0"),  # after the flood, from the flooding NIC
        ("app2", "eth0"): ("app1", "eth0"),
        ("app2", "eth1"): ("db1", "eth0"),
        ("db1", "eth0"): ("app2", "eth1"),
    }
    with va.taps((lab.ns(n), i) for n, i in barriers) as taps:
        with ThreadPoolExecutor(1) as ex:
            sender = ex.submit(va.inject, lab.ns("desk1"), "eth0", flood)
            during = _pings(
                lab, [("app2", "10.40.0.31"), ("app1", "10.30.0.22"), BROADCASTS[0], OWN_BROADCAST]
            )
            sent = sender.result()
        after = probe.ping(lab.ns("app2"), "10.40.0.31", count=2)
        seen = _after_barriers(lab, doc, taps, barriers)
    learned = len(_fdb_macs(lab, "hv3", "ops") & sources)
    assert sent == FLOOD and learned >= FLOOD // 2, (
        f"the flood did not happen: sent {sent}, hv3 learned {learned}"
    )
    assert during["app2", "10.40.0.31"] and after, (
        "app2 -> db1 (db VLAN) failed during or after the MAC flood"
    )
    assert during["app1", "10.30.0.22"], "app1 -> app2 (app VLAN) failed during the MAC flood"
    foreign = _foreign(seen["desk1.eth0"], va.nics(doc), DESKTOP)
    assert not foreign, f"flooding desk1 saw {len(foreign)} frames of other VLANs: {foreign[:8]}"
    for where in ("app2.eth0", "app2.eth1", "db1.eth0"):
        got = sum(f.carries(MARKER) for f in seen[where])
        assert not got, f"{where} (another VLAN) received {got} of desk1's {FLOOD} flood frames"
    reached = sum(f.carries(MARKER) for f in seen["desk2.eth0"])
    assert reached, "no flood frame reached desk2 in desk1's own VLAN: the flood never crossed the fabric"


# -- 7. VM-VN-R1: trunk profiles match, statically and live --------------------------------------
def _unexpectedly_lost(results: list[vlancheck.ProbeResult], skip: set[tuple[str, str]]) -> list[str]:
    return [
        f"{r.trunk} {r.vlan}: {r.src} -> {r.dst}"
        for r in results
        if r.expected and r.outcome == "lost" and (r.trunk, r.vlan) not in skip
    ]


def test_reference_topology_meets_vm_vn_r1() -> None:
    findings = vlancheck.check(loader.load(REFERENCE))
    assert findings == [], f"VM-VN-R1 findings on the reference lab: {findings}"


def _deliverable(topo: Topology) -> set[tuple[str, str]]:
    """(trunk, VLAN) pairs the probe must deliver, worked out from the model alone: the switch port
    carries the VLAN, a node with an address in it sits on the uplinked vSwitch, and a node on
    another host or network has another address of the same subnet in it (to answer its ARP)."""
    nodes = [(vm.host, nic.vswitch, nic.vlan, nic.ip) for vm in topo.vms for nic in vm.nics if nic.ip]
    nodes += [(h.name, k.vswitch, k.vlan, k.ip) for h in topo.hosts for k in h.vmknics if k.ip]
    for net in topo.networks:  # (host, vSwitch, VLAN or None for untagged, address)
        profile = dict(topo.switch(net.switch).ports).get(net.name, PortProfile())
        if net.ip and not profile.trunk:
            nodes.append((None, None, profile.access, net.ip))
    found = set()
    for host in topo.hosts:
        for vs in host.vswitches:
            for pnic in (p for p in host.pnics if p.name in vs.uplinks):
                port = f"{host.name}-{pnic.name}"
                profile = dict(topo.switch(pnic.switch).ports).get(port, PortProfile())
                carried = (
                    {profile.access}
                    if profile.access
                    else {*profile.trunk, *([None] if profile.untagged else [])}
                )
                for h, v, vid, ip in nodes:
                    if (
                        h == host.name
                        and v == vs.name
                        and vid in carried
                        and any(
                            h2 != host.name and vid2 == vid and ip2.network == ip.network and ip2 != ip
                            for h2, _, vid2, ip2 in nodes
                        )
                    ):
                        label = "untagged" if vid is None else f"{topo.vlan_name(vid)} ({vid})"
                        found.add((f"{host.name}.{pnic.name} <-> {pnic.switch}.{port}", label))
    return found


def test_every_carried_vlan_crosses_every_trunk(reference_lab: Lab) -> None:
    """Exactly the (trunk, VLAN) pairs with endpoints on both sides are delivered, none lost."""
    topo = loader.load(REFERENCE, lab=reference_lab.name)
    want = _deliverable(topo)
    assert ("hv3.eth1 <-> tor2.hv3-eth1", DESKTOP_LABEL) in want and len(want) >= 10, sorted(want)
    results = vlancheck.probe_vlans(topo)
    delivered = {(r.trunk, r.vlan) for r in results if r.outcome == "delivered"}
    assert delivered == want, (
        f"probed with endpoints and delivered: {sorted(delivered)}; missing {sorted(want - delivered)}, "
        f"unexpected {sorted(delivered - want)}"
    )
    lost = [r for r in results if r.outcome == "lost"]
    assert not lost, f"VLANs lost across a trunk: {lost}"


HV3_TRUNK_LINE = "hv3-eth1: {trunk: [app, db, desktop, management, migration, logging, storage]}"
HV3_TRUNK = "hv3.eth1 <-> tor2.hv3-eth1"
DESKTOP_LABEL = "desktop (140)"


@pytest.fixture
def no_desktop_on_hv3(tmp_path: Path) -> Path:
    """A copy of the reference lab whose tor2 port to hv3 forgot the desktop VLAN."""
    text = REFERENCE.read_text()
    assert text.count(HV3_TRUNK_LINE) == 1, f"{REFERENCE} no longer has `{HV3_TRUNK_LINE}`: update this test"
    path = tmp_path / "nist-no-desktop-on-hv3.yaml"
    path.write_text(text.replace(HV3_TRUNK_LINE, HV3_TRUNK_LINE.replace("desktop, ", "")))
    return path


def test_trunk_missing_a_vlan_is_reported_and_really_loses_it(make_lab, no_desktop_on_hv3: Path) -> None:
    lab = make_lab(no_desktop_on_hv3)
    topo = loader.load(no_desktop_on_hv3, lab=lab.name)
    errors = [(f.trunk, f.vlan) for f in vlancheck.check(topo) if f.severity == "error"]
    assert errors == [(HV3_TRUNK, DESKTOP_LABEL)], (
        f"check should report exactly desktop on {HV3_TRUNK}: {errors}"
    )
    proc = lab.up()
    assert proc.returncode == 0, f"nlab up of the mismatched copy failed: {proc.stderr}"
    results = vlancheck.probe_vlans(topo)
    desktop = {r.trunk: r.outcome for r in results if r.vlan == DESKTOP_LABEL}
    assert desktop.get(HV3_TRUNK) == "lost", f"desktop across {HV3_TRUNK} should be lost: {desktop}"
    # desk2 (hv2) has no desktop peer but desk1 behind the broken trunk: lost there too
    lost = _unexpectedly_lost(results, {(t, DESKTOP_LABEL) for t in desktop})
    assert not lost, f"only desktop should be lost, but also: {lost}"
    delivered = {(r.trunk, r.vlan) for r in results if r.outcome == "delivered"}
    assert len(delivered) >= 10, f"too few VLANs delivered to prove the rest works: {sorted(delivered)}"


# rules 90/91 (echo requests) become UDP rules: no VM may ping any more
NO_ICMP_RULES = {
    "direction: in, peer: any, proto: icmp": "direction: in, peer: any, proto: udp",
    "direction: out, peer: any, proto: icmp": "direction: out, peer: any, proto: udp",
}


def _vlans_probe(lab: Lab) -> tuple[int, dict[str, Any]]:
    proc = nlab("vlans", lab.name, "--probe", "--json")
    return proc.returncode, json.loads(proc.stdout)


def test_probe_is_not_confounded_by_the_firewall_and_a_broken_trunk_is_named(
    make_lab, tmp_path: Path
) -> None:
    """No VM may ping (no ICMP rule): the VLANs still provably cross every trunk. Then tor2's port
    to hv3 loses the desktop VLAN live: NOT compliant, with the trunk and the VLAN named."""
    lab = make_lab(reference_variant(tmp_path, "nist-no-icmp.yaml", NO_ICMP_RULES))
    proc = lab.up()
    assert proc.returncode == 0, proc.stderr
    assert not probe.ping(lab.ns("app2"), "10.40.0.31", count=1), "ICMP should be refused by the NIC firewall"
    assert probe.tcp(lab.ns("app2"), "10.40.0.31", 5432) in ("refused", "open"), "TCP crosses the same trunk"

    code, doc = _vlans_probe(lab)
    assert (code, doc["compliant"], doc["findings"]) == (0, True, [])
    lost = [(p["trunk"], p["vlan"]) for p in doc["probes"] if p["outcome"] == "lost"]
    assert not lost and {p["method"] for p in doc["probes"] if p["method"]} == {"arp"}

    topo = loader.load_text(lab.topology.read_text(), str(lab.topology), lab=lab.name)
    [port] = [p for p in ports.switch_ports(topo, "tor2") if p.name == "hv3-eth1"]
    with Netlink(lab.ns("tor2")) as nl, SwitchDataplane.open(pin_dir(lab.name) / "tor2") as dp:
        dp.configure(nl.index("hv3-eth1"), replace(port.vlans, allowed=port.vlans.allowed - {140}))
    code, doc = _vlans_probe(lab)
    assert (code, doc["compliant"]) == (3, False)
    [error] = [f for f in doc["findings"] if f["severity"] == "error"]
    assert (error["trunk"], error["vlan"]) == (HV3_TRUNK, DESKTOP_LABEL), doc["findings"]
    assert "dropped at tor2 hv3-eth1" in error["reason"] and "vlan-not-allowed" in error["reason"]
    lost = {p["trunk"]: p["broken_trunk"] for p in doc["probes"] if p["outcome"] == "lost"}
    # hv2's and hv3's standby trunks (eth0 to tor1) are probed through their active members
    standby = {"hv2.eth0 <-> tor1.hv2-eth0": HV3_TRUNK, "hv3.eth0 <-> tor1.hv3-eth0": HV3_TRUNK}
    assert lost == {HV3_TRUNK: HV3_TRUNK, "hv2.eth1 <-> tor2.hv2-eth1": HV3_TRUNK, **standby}, (
        "desk2's probe from hv2 crosses hv3's trunk too: the trace of it blames hv3's"
    )
