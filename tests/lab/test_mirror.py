"""Port mirroring under real traffic (NIST 5, VM-TM-R1 and VM-TM-R2), on a copy of the reference lab.

    hv1  vs2 (VLAN web, internal only)                      vs3 (uplink eth1)
         web1 .11 --+-- web1-0 ==[taps]==> copies ==+       vm4.eth1 (app)
         web2 .12 --+-- web2-0                      |       nosy .30.99 (promiscuous, app)
         sniff .99 -+-- sniff-0 (promiscuous: web)  +====> mirror0/1 -encap-> eth1 (VLAN rspan)
         vm1, vm4 --+                               |                            |
         vsmon: analyzer-0 <========================+                          tor2 --- monitor
                                                                                 |   (access rspan)
    hv2  prod: app1 (app1-wire: encapsulated to monitor)    eth1 <-- decap ------+
         sandbox: ids2 (analyzer) <== web1's copies, restored byte for byte

    sessions: web1-ids (web1 -> analyzer, both ways, tap before the firewall, as in the reference
    lab), web1-remote (web1 -> ids2 on hv2 in mirror VLAN rspan), app1-wire (app1 -> the physical
    IDS on network monitor). [taps] = mirror_tap before/after vnic_firewall in port_from/to_vm.

Copies are compared byte for byte with what web1's own NIC sent and received (raw sockets in
both namespaces); counters come from the live maps. One lab for the whole module.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw, raw

from dataplane.abi import Direction, Reason
from dataplane.switch import SwitchDataplane
from netns_lab.features.mirror import live as mirror_live
from netns_lab.features.mirror import plan as mirror
from netns_lab.kernel import netlink
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab import running as running_lab
from netns_lab.lab.state import pin_dir
from tests.lab import vlan_attacks as va
from tests.lab.conftest import Lab, nlab, reference_variant, running

WEB1, WEB2, SNIFF = "10.20.0.11", "10.20.0.12", "10.20.0.99"
N = 5
EXTRA_VMS = """  app1:
    host: hv2"""
EXTRA = """  sniff:
    host: hv1
    nics:
      - {vswitch: vs2, vlan: web, ip: 10.20.0.99/24, promiscuous: true}
  nosy:
    host: hv1
    nics:
      - {vswitch: vs3, vlan: app, ip: 10.30.0.99/24, promiscuous: true}


  ids2:
    host: hv2
    role: analyzer
    nics:
      - {vswitch: sandbox}
"""
# copies of web1 to an analyzer VM on another host: across tor2 in the mirror VLAN
REMOTE_SESSION = """  web1-remote: {source: web1, dest: ids2, vlan: rspan, direction: both}
"""
# every VM on a monitored VLAN: the firewall VMs and the sniffers share web1's VLAN, and their
# router solicitations reach web1's port (copied, both ways) at moments of their own
QUIET = ("web1", "web2", "app1", "app2", "desk1", "desk2", "vm1", "vm4", "sniff", "nosy")
HV1_TRUNK = "hv1-eth1: {trunk: [app, management, migration, logging]}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    edits = {
        EXTRA_VMS: EXTRA + EXTRA_VMS,
        "mirrors:\n": "mirrors:\n" + REMOTE_SESSION,
        HV1_TRUNK: HV1_TRUNK.replace("logging]", "logging, rspan]"),
    }
    path = reference_variant(tmp_path_factory.mktemp("mirror"), "mirror.yaml", edits)
    with running(path) as lab:
        # VMs that speak only when spoken to (no IPv6 solicitations, MLD reports): a session's
        # counters then move only with the test's own frames, and are checked exactly
        for vm in QUIET:
            netlink.sysctl(lab.ns(vm), "net.ipv6.conf.all.disable_ipv6", "1")
        yield lab


def ping(lab: Lab, vm: str, to: str, count: int = N, pattern: str | None = None) -> None:
    """`count` pings; `pattern` (hex) fills their payload, so that their copies can be told apart."""
    marked = ["-p", pattern] if pattern else []
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.ns(vm), "ping", "-c", str(count), "-i", "0.05", "-W", "1", *marked, to],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def udp(lab: Lab, vm: str, to: str, payload: bytes, port: int = 9999) -> None:
    """One UDP datagram from `vm` (a socket in its namespace, as its kernel would send it)."""
    from netns_lab.kernel import netns

    with netns.inside(lab.ns(vm)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.sendto(payload, (to, port))


def echoes(frames: list[va.Frame], ips: set[str]) -> list[bytes]:
    """ICMP echo requests and replies of IPv4 frames between addresses of `ips`."""
    found = []
    for f in frames:
        d = f.data
        if len(d) < 34 or d[12:14] != b"\x08\x00" or d[23] != 1 or d[34] not in (0, 8):
            continue
        src, dst = socket.inet_ntoa(d[26:30]), socket.inet_ntoa(d[30:34])
        if {src, dst} <= ips:
            found.append(d)
    return found


def received(tap: va.Tap) -> list[va.Frame]:
    """What reached the namespace (its own kernel's chatter, sent and dropped at the port, left out)."""
    return incoming(tap.frames())


def incoming(frames: list[va.Frame]) -> list[va.Frame]:
    return [f for f in frames if not f.outgoing]


def carrying(frames: list[va.Frame], marker: bytes) -> list[bytes]:
    return [f.data for f in frames if marker in f.data]


def patterned(frames: list[va.Frame], pattern: str) -> list[va.Frame]:
    """Frames of pings made with `ping(..., pattern=pattern)`."""
    return [f for f in frames if bytes.fromhex(pattern) * 4 in f.data]


def unpatterned(frames: list[va.Frame], pattern: str) -> list[va.Frame]:
    """Frames other than those of the pings with `pattern` (a barrier's, left out of a count)."""
    return [f for f in frames if bytes.fromhex(pattern) * 4 not in f.data]


def until_patterned(tap: va.Tap, pattern: str, count: int) -> list[va.Frame]:
    """What `tap` received until `count` frames of the pings with `pattern` were among it (the barrier)."""
    seen: list[va.Frame] = []

    def enough(frame: va.Frame) -> bool:
        seen.append(frame)
        return len(patterned(incoming(seen), pattern)) >= count

    return incoming(tap.until(enough))


def session_counters(lab: Lab) -> dict[str, dict[str, int]]:
    """Each session's counters, read in this process: between a read and the tap that follows
    it there is no subprocess, so a count and a capture cover the same frames."""
    with running_lab.opened(lab.name) as live:
        return {s["name"]: s["counters"] for s in mirror_live.documents(live)}


def test_every_copy_is_byte_identical_and_only_of_web1(lab: Lab) -> None:
    before = session_counters(lab)["web1-ids"]
    with va.taps([(lab.ns("web1"), "eth0"), (lab.ns("analyzer"), "eth0")]) as t:
        ping(lab, "web2", SNIFF)  # not web1's: never copied
        ping(lab, "web1", WEB2, pattern="5a5a0001")
        copies = until_patterned(t[lab.ns("analyzer"), "eth0"], "5a5a0001", 2 * N)
        after = session_counters(lab)["web1-ids"]
        copies += received(t[lab.ns("analyzer"), "eth0"])
        at_web1 = t[lab.ns("web1"), "eth0"].frames()
    original = echoes(at_web1, {WEB1, WEB2})
    mirrored = echoes(copies, {WEB1, WEB2, SNIFF})
    assert len(original) == 2 * N
    assert sorted(mirrored) == sorted(original), "copies differ from what web1 sent and received"
    web1_frames = {f.data for f in at_web1}
    strangers = [f.data.hex()[:80] for f in copies if f.data not in web1_frames]
    assert strangers == [], "the analyzer received frames that are not web1's"
    # every copy the session counted is one the analyzer received, and no other
    assert after["packets"] - before["packets"] == len(copies) >= 2 * N
    assert after["dropped"] == before["dropped"] == 0


def test_tap_before_sees_a_denied_packet_and_tap_after_does_not(lab: Lab) -> None:
    marker = b"nlab-mirror-denied"
    # web1's rules let no UDP out: its firewall denies this datagram
    with va.taps([(lab.ns("analyzer"), "eth0"), (lab.ns("web2"), "eth0")]) as t:
        udp(lab, "web1", WEB2, marker + b"-before")
        ping(lab, "web1", WEB2, count=1, pattern="5a5a0008")  # the barrier: its request reaches web2
        assert len(carrying(until_patterned(t[lab.ns("analyzer"), "eth0"], "5a5a0008", 2), marker)) == 1
        assert carrying(until_patterned(t[lab.ns("web2"), "eth0"], "5a5a0008", 1), marker) == []
        nlab("mirror", "--lab", lab.name, "del", "web1-ids", check=True)
        try:
            nlab(
                "mirror", "--lab", lab.name, "add", "web1-after", "--source", "web1",
                "--direction", "out", "--dest", "analyzer", "--tap", "after", check=True,
            )  # fmt: skip
            udp(lab, "web1", WEB2, marker + b"-after")
            ping(lab, "web1", WEB2, pattern="5a5a0009")
            ping(lab, "web1", WEB2, count=1, pattern="5a5a000a")  # barrier: after the replies above
            copies = until_patterned(t[lab.ns("analyzer"), "eth0"], "5a5a000a", 1)
            assert carrying(copies, marker) == []
            shown = echoes(patterned(copies, "5a5a0009"), {WEB1, WEB2})
            assert len([d for d in shown if d[34] == 8]) == N and len(shown) == N, "direction out only"
        finally:
            nlab("mirror", "--lab", lab.name, "del", "web1-after")
            nlab(
                "mirror", "--lab", lab.name, "add", "web1-ids", "--source", "web1",
                "--direction", "both", "--dest", "analyzer", check=True,
            )  # fmt: skip


def test_nothing_is_copied_after_mirror_del(lab: Lab) -> None:
    """Copies arrive, the session is deleted, none arrive; re-added, the barrier's copies arrive."""
    shown, hidden, barrier = "5a5a0002", "5a5a0003", "5a5a0004"
    deleted = False
    try:
        with va.taps([(lab.ns("analyzer"), "eth0")]) as t:
            tap = t[lab.ns("analyzer"), "eth0"]
            ping(lab, "web1", WEB2, pattern=shown)
            assert len(patterned(until_patterned(tap, shown, 2 * N), shown)) == 2 * N
            nlab("mirror", "--lab", lab.name, "del", "web1-ids", check=True)
            deleted = True
            names = [
                s["name"]
                for s in json.loads(nlab("mirror", "--lab", lab.name, "list", "--json").stdout)["sessions"]
            ]
            assert "web1-ids" not in names
            ping(lab, "web1", WEB2, pattern=hidden)
            _add_web1_ids(lab)
            deleted = False
            ping(lab, "web1", WEB2, count=1, pattern=barrier)
            after_del = until_patterned(tap, barrier, 2)
        assert patterned(after_del, hidden) == [], "copies of pings made while the session was deleted"
    finally:
        if deleted:
            _add_web1_ids(lab)


def _add_web1_ids(lab: Lab) -> None:
    nlab(
        "mirror", "--lab", lab.name, "add", "web1-ids", "--source", "web1",
        "--direction", "both", "--dest", "analyzer", check=True,
    )  # fmt: skip


def test_promiscuous_nic_sees_its_port_group_once_and_nothing_else_does(lab: Lab) -> None:
    where = [(lab.ns("sniff"), "eth0"), (lab.ns("nosy"), "eth0"), (lab.ns("vm4"), "eth0")]
    # ARP barriers, each broadcast in the VLAN of the tap it is for: web2's (the pinging VM) for
    # sniff and vm4 in the web VLAN, vm4's own app NIC's for nosy in the app VLAN
    from_web2 = va.own_barrier(lab.ns("web2"), "eth0", WEB2)
    senders = {where[0]: from_web2, where[2]: from_web2}
    senders[where[1]] = va.own_barrier(lab.ns("vm4"), "eth1", "10.30.0.1")
    with va.taps(where) as t:
        ping(lab, "web2", WEB1)
        got = {ns: echoes(incoming(f), {WEB1, WEB2}) for (ns, _), f in va.barriers(t, senders).items()}
    assert len(got[lab.ns("sniff")]) == 2 * N, "each request and reply once"
    assert got[lab.ns("nosy")] == [], "another port group's promiscuous NIC saw web traffic"
    assert got[lab.ns("vm4")] == [], "a plain member of the port group saw unicast of others"


def test_promiscuous_nic_sees_a_flooded_frame_of_its_group_once(lab: Lab) -> None:
    """A frame from web2 to a MAC no port has is flooded to every port of the web VLAN. The
    port-secured members refuse it at their ports (dst-mac); the promiscuous NIC gets it once,
    as the copy its session takes where the frame leaves web2, not a second time by the flood.
    The barrier, web2's echo request to the subnet's broadcast address, reaches all of them and
    starts no traffic of theirs (Linux ignores broadcast echoes; an ARP request would make web1
    answer and later probe, frames the next tests' session counters would count)."""
    doc = lab.status()
    web2 = va.nic(doc, "web2")
    mark = b"nlab-flooded-" + secrets.token_hex(6).encode()
    ip = IP(src=WEB2, dst=WEB1) / ICMP(id=0x4E4C, seq=1) / Raw(mark)  # an echo web2's rules let out
    flooded = raw(Ether(src=web2.mac, dst="02:00:00:de:ad:02") / ip)
    barrier = IP(src=WEB2, dst="10.20.0.255") / ICMP(id=0x4E4C, seq=2) / Raw(b"barrier")
    broadcast = raw(Ether(src=web2.mac, dst=va.BROADCAST) / barrier)
    where = [(lab.ns(vm), "eth0") for vm in ("sniff", "vm4", "web1")]
    with va.taps(where) as t:
        va.inject(lab.ns("web2"), "eth0", [flooded, broadcast])
        got = {ns: [f.data for f in tap.until(lambda f: f.data == broadcast)] for (ns, _), tap in t.items()}
    seen = {ns.split("-", 1)[1]: sum(mark in f for f in frames) for ns, frames in got.items()}
    assert seen == {"sniff": 1, "vm4": 0, "web1": 0}, f"copies of the flooded frame seen: {seen}"


def test_analyzer_port_is_receive_only(lab: Lab) -> None:
    with Netlink(lab.ns("hv1")) as nl:
        port = nl.index("analyzer-0")

    def packets(counts: dict, reason: Reason) -> int:
        key = (Direction.INGRESS, reason)
        return counts[key].packets if key in counts else 0

    frame = bytes.fromhex("ffffffffffff") + bytes(6) + struct.pack("!H", 0x0800) + b"nlab-analyzer" * 4
    with SwitchDataplane.open(pin_dir(lab.name) / "hv1") as dp, va.taps([(lab.ns("analyzer"), "eth0")]) as t:
        before = dp.counters(port)
        va.inject(lab.ns("analyzer"), "eth0", [frame] * 3)
        deadline = time.monotonic() + 10  # the port counts in softirq, after inject returned
        while packets(dp.counters(port), Reason.ANALYZER_TX) - packets(before, Reason.ANALYZER_TX) < 3:
            assert time.monotonic() < deadline, "the analyzer's port never counted its 3 frames"
            time.sleep(0.01)
        after = dp.counters(port)
        sent = [f for f in t[lab.ns("analyzer"), "eth0"].frames() if f.outgoing]
    # exactly what the analyzer sent (its own kernel is silent: no address, IPv6 off), none passed
    assert [f.data for f in sent] == [frame] * 3
    assert packets(after, Reason.ANALYZER_TX) - packets(before, Reason.ANALYZER_TX) == 3
    assert packets(after, Reason.PASS) == packets(before, Reason.PASS)


def test_copies_never_reach_a_bridge_fdb(lab: Lab) -> None:
    """web1's copies reach the analyzer through vsmon's port, and vsmon never learns web1's MAC."""
    before = session_counters(lab)["web1-ids"]
    with va.taps([(lab.ns("analyzer"), "eth0")]) as t:
        ping(lab, "web1", WEB2, count=2, pattern="5a5a0005")
        copies = until_patterned(t[lab.ns("analyzer"), "eth0"], "5a5a0005", 4)
    assert len(patterned(copies, "5a5a0005")) == 4, "each request and reply copied once"
    assert session_counters(lab)["web1-ids"]["packets"] - before["packets"] >= 4
    out = subprocess.run(
        ["bridge", "-n", lab.ns("hv1"), "-j", "fdb", "show", "br", "vsmon"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    web1_mac = next(n["mac"] for vm in lab.status()["vms"] if vm["name"] == "web1" for n in vm["nics"])
    learned = [e for e in json.loads(out or "[]") if e.get("mac") == web1_mac]
    assert learned == [], f"vsmon learned web1's MAC from a copy: {learned}"


def test_bad_input_is_refused_whole(lab: Lab) -> None:
    cases = {
        ("--dest", "web2"): "nlab mirror add: --dest: web2 is not an analyzer",
        ("--dest", "nobody"): "nlab mirror add: --dest: unknown VM 'nobody'",
        ("--dest", "analyzer", "--snaplen", "10"): "nlab mirror add: --snaplen: 10 is not in 64..65535",
    }
    for extra, message in cases.items():
        proc = nlab(
            "mirror", "--lab", lab.name, "add", "bad", "--source", "web1", "--direction", "in", *extra
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    doc = json.loads(nlab("mirror", "--lab", lab.name, "list", "--json", check=True).stdout)
    assert "bad" not in [s["name"] for s in doc["sessions"]]


def _fdb(lab: Lab, node: str, bridge: str) -> list[dict]:
    out = subprocess.run(
        ["bridge", "-n", lab.ns(node), "-j", "fdb", "show", "br", bridge],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [e for e in json.loads(out or "[]") if "permanent" not in e.get("state", "")]


def _vm_macs(lab: Lab) -> dict[str, str]:
    return {n["mac"]: f"{vm['name']}.{n['name']}" for vm in lab.status()["vms"] for n in vm["nics"]}


def test_remote_analyzer_on_another_host_gets_byte_identical_copies(lab: Lab) -> None:
    with va.taps([(lab.ns("web1"), "eth0"), (lab.ns("ids2"), "eth0")]) as t:
        ping(lab, "web1", WEB2)
        ping(lab, "web1", WEB2, count=1, pattern="5a5a000c")  # the barrier: its copies come last
        copies = unpatterned(until_patterned(t[lab.ns("ids2"), "eth0"], "5a5a000c", 2), "5a5a000c")
        at_web1 = unpatterned(t[lab.ns("web1"), "eth0"].frames(), "5a5a000c")
    original = echoes(at_web1, {WEB1, WEB2})
    assert len(original) == 2 * N
    assert sorted(echoes(copies, {WEB1, WEB2})) == sorted(original)
    web1_frames = {f.data for f in at_web1}
    assert [f.data.hex()[:80] for f in copies if f.data not in web1_frames] == []
    # web1 lives on an internal-only vSwitch: no physical switch may ever learn its MAC
    macs = _vm_macs(lab)
    learned = [
        (e["mac"], e["ifname"])
        for e in _fdb(lab, "tor2", "fabric")
        if macs.get(e["mac"], "").startswith("web1")
    ]
    assert learned == [], f"tor2 learned web1's MAC from a copy: {learned}"
    hv1_mirror = mirror.endpoint_mac(lab.name, "hv1")
    assert {e["ifname"] for e in _fdb(lab, "tor2", "fabric") if e["mac"] == hv1_mirror} == {"hv1-eth1"}


def test_analyzer_on_the_physical_network_gets_encapsulated_copies(lab: Lab) -> None:
    app1, app2 = "10.30.0.21", "10.30.0.22"
    before = session_counters(lab)["app1-wire"]
    with va.taps([(lab.ns("app1"), "eth0"), (lab.ns("monitor"), "eth0")]) as t:
        ping(lab, "app1", app2, pattern="5a5a0006")
        wire = until_patterned(t[lab.ns("monitor"), "eth0"], "5a5a0006", 2 * N)
        after = session_counters(lab)["app1-wire"]
        wire += received(t[lab.ns("monitor"), "eth0"])
        at_app1 = t[lab.ns("app1"), "eth0"].frames()
    decoded = [mirror.decapsulate(f.data) for f in wire]
    assert all(d is not None for d in decoded), "a frame on the monitor port is not a mirror copy"
    ids = {d[0] for d in decoded if d}
    assert len(ids) == 1
    inner = [va.Frame(False, None, d[2]) for d in decoded if d]
    original = echoes(at_app1, {app1, app2})
    assert len(original) == 2 * N
    assert sorted(echoes(inner, {app1, app2})) == sorted(original)
    directions = {d[1] for d in decoded if d and d[2] in original}
    assert directions == {"in", "out"}
    macs = _vm_macs(lab)
    outer = {f.src for f in wire} | {f.dst for f in wire}
    assert not outer & set(macs), "an outer header carries a VM's MAC"
    on_monitor = [
        macs[e["mac"]] for e in _fdb(lab, "tor2", "fabric") if e["ifname"] == "monitor" and e["mac"] in macs
    ]
    assert on_monitor == []
    assert after["packets"] - before["packets"] == len(wire) and after["dropped"] == before["dropped"] == 0


def test_taps_say_where_each_session_can_be_captured(lab: Lab) -> None:
    taps = {t.session: t for t in mirror_live.taps(lab.name)}
    # an analyzer VM's copies on the host side of its port, where each still carries its mark
    assert taps["web1-ids"] == mirror.Tap("web1-ids", lab.ns("hv1"), "analyzer-0", ("web1",), False, True)
    assert taps["web1-remote"] == mirror.Tap("web1-remote", lab.ns("hv2"), "ids2-0", ("web1",), False, True)
    assert taps["app1-wire"] == mirror.Tap("app1-wire", lab.ns("monitor"), "eth0", ("app1",), True)
    assert (taps["promiscuous:sniff.eth0"].namespace, taps["promiscuous:sniff.eth0"].ifname) == (
        lab.ns("hv1"),
        "sniff-0",
    )
    assert mirror_live.taps(lab.name, "web1-ids") == [taps["web1-ids"]]
    with pytest.raises(KeyError):
        mirror_live.taps(lab.name, "nope")


def test_live_session_out_of_a_named_pnic(lab: Lab) -> None:
    """`nlab mirror add ... --dest uplink:HOST.PNIC --vlan V`: desk2's copies leave hv2 through eth1
    in the mirror VLAN, and the IDS on the physical network decapsulates them; nothing after del."""
    desk2, desk1 = "10.50.0.12", "10.50.0.11"
    add = nlab(
        "mirror", "--lab", lab.name, "add", "desk-wire", "--source", "desk2", "--direction", "both",
        "--dest", "uplink:hv2.eth1", "--vlan", "rspan",
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    try:
        with va.taps([(lab.ns("desk2"), "eth0"), (lab.ns("monitor"), "eth0")]) as t:
            ping(lab, "desk2", desk1)
            ping(lab, "desk2", desk1, count=1, pattern="5a5a000d")  # the barrier: its copies come last
            wire = unpatterned(until_patterned(t[lab.ns("monitor"), "eth0"], "5a5a000d", 2), "5a5a000d")
            at_desk2 = unpatterned(t[lab.ns("desk2"), "eth0"].frames(), "5a5a000d")
    finally:
        nlab("mirror", "--lab", lab.name, "del", "desk-wire", check=True)
    inner = [va.Frame(False, None, d[2]) for f in wire if (d := mirror.decapsulate(f.data))]
    original = echoes(at_desk2, {desk2, desk1})
    assert len(original) == 2 * N
    assert sorted(echoes(inner, {desk2, desk1})) == sorted(original)
    with va.taps([(lab.ns("monitor"), "eth0")]) as t:
        ping(lab, "desk2", desk1, count=2)
        # the barrier and positive control: app1-wire's copies take the same way to the monitor
        ping(lab, "app1", "10.30.0.22", count=1, pattern="5a5a000e")
        wire = until_patterned(t[lab.ns("monitor"), "eth0"], "5a5a000e", 2)
        after = [d for f in wire if (d := mirror.decapsulate(f.data))]
    assert len(patterned([va.Frame(False, None, d[2]) for d in after], "5a5a000e")) == 2
    assert echoes([va.Frame(False, None, d[2]) for d in after], {desk2, desk1}) == []


def test_status_shows_every_session_with_its_counters(lab: Lab) -> None:
    before = session_counters(lab)["web1-ids"]
    with va.taps([(lab.ns("analyzer"), "eth0")]) as t:
        ping(lab, "web1", WEB2, count=1, pattern="5a5a0007")
        copies = until_patterned(t[lab.ns("analyzer"), "eth0"], "5a5a0007", 2)
    sessions = {m["name"]: m for m in lab.status()["mirrors"]}
    assert {"web1-ids", "web1-remote", "app1-wire"} <= set(sessions)
    assert any(name.startswith("promiscuous:") for name in sessions)
    assert sessions["web1-ids"]["sources"] == ["web1"] and sessions["web1-ids"]["dest"] == "analyzer"
    assert sessions["web1-ids"]["counters"]["packets"] - before["packets"] == len(copies) >= 2


SAMPLE, STREAM = 4, 400  # 1 in 4 of 400 frames: Binomial(400, 1/4), mean 100, sd 8.7


def test_sampled_session_copies_about_one_in_n_and_counts_the_rest(lab: Lab) -> None:
    """`nlab mirror add --sample 4`: of a known stream of frames web2 sends, every one is either
    copied or counted as sampled out; the copies are within 6 sd of a quarter, byte-identical."""
    doc = lab.status()
    web1, web2 = va.nic(doc, "web1"), va.nic(doc, "web2")
    marker = b"nlab-sampled-" + secrets.token_hex(6).encode()
    # web2's and web1's firewalls let no UDP out: the frames are copied (tap before) and denied
    frame = raw(
        Ether(src=web2.mac, dst="02:00:00:00:00:99")
        / IP(src=WEB2, dst="10.20.0.250")
        / UDP(sport=40000, dport=9)
        / Raw(marker)
    )
    barrier = raw(
        Ether(src=web1.mac, dst="02:00:00:00:00:99")
        / IP(src=WEB1, dst="10.20.0.250")
        / UDP(sport=40000, dport=9)
        / Raw(marker + b"-barrier")
    )
    add = nlab(
        "mirror", "--lab", lab.name, "add", "web2-sample", "--source", "web2", "--direction", "out",
        "--dest", "analyzer", "--sample", str(SAMPLE),
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    try:
        listed = nlab("mirror", "--lab", lab.name, "list", check=True).stdout.splitlines()
        assert any(line.split()[0] == "web2-sample" and f"sample={SAMPLE}" in line for line in listed)
        before = session_counters(lab)["web2-sample"]
        with va.taps([(lab.ns("analyzer"), "eth0"), (lab.ns("web2"), "eth0")]) as t:
            va.inject(lab.ns("web2"), "eth0", [frame] * STREAM)
            va.inject(lab.ns("web1"), "eth0", [barrier])  # web1-ids copies it to the same analyzer
            copies = incoming(t[lab.ns("analyzer"), "eth0"].until(lambda f: f.data == barrier))
            after = session_counters(lab)["web2-sample"]
            sent = [f for f in t[lab.ns("web2"), "eth0"].frames() if f.outgoing]
    finally:
        nlab("mirror", "--lab", lab.name, "del", "web2-sample", check=True)
    assert len([f for f in sent if f.data == frame]) == STREAM
    tried = after["packets"] - before["packets"] + after["sampled_out"] - before["sampled_out"]
    assert tried == len(sent), "a frame web2 sent was neither copied nor counted as sampled out"
    of_web2 = [f.data for f in copies if f.src == web2.mac]
    assert after["packets"] - before["packets"] == len(of_web2)
    kept = of_web2.count(frame)
    assert 48 <= kept <= 152, f"1 in {SAMPLE} of {STREAM} frames kept {kept} (mean 100, sd 8.7)"
