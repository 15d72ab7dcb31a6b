"""`nlab watch` where no root is needed: the pcap writer's layout (read back by tcpdump and
tshark), VLAN tags put back from PACKET_AUXDATA, JSON record schema, filters, terminal lines,
argument errors (exit 2), and a watch path that never imports scapy."""

from __future__ import annotations

import io
import json
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from netns_lab.cli import watch as cli_watch
from netns_lab.features.mirror.plan import Tap
from netns_lab.observe import capture, pktdecode, watch

REPO = Path(__file__).resolve().parents[2]
A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def eth(src: str, dst: str, payload: bytes, ethertype: int = 0x0800) -> bytes:
    return (
        bytes.fromhex(dst.replace(":", ""))
        + bytes.fromhex(src.replace(":", ""))
        + struct.pack("!H", ethertype)
        + payload
    )


def udp4(sport: int, dport: int) -> bytes:
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    )
    return ip + struct.pack("!HHHH", sport, dport, 8, 0)


# -- pcap ------------------------------------------------------------------------------------------
def _pcap(frames: list[tuple[int, bytes, int]]) -> bytes:
    out = io.BytesIO()
    writer = capture.PcapWriter(out)
    for time_ns, data, wire in frames:
        writer.write(time_ns, data, wire)
    return out.getvalue()


FRAMES = [(1_700_000_000_123_456_789 + i * 1000, eth(A, B, udp4(1000 + i, 53)), 42) for i in range(5)]


def test_pcap_header_and_records_layout() -> None:
    blob = _pcap(FRAMES)
    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack_from("<IHHiIII", blob)
    assert (magic, major, minor, zone, sigfigs, linktype) == (0xA1B23C4D, 2, 4, 0, 0, 1)
    assert snaplen >= 65535
    offset = 24
    for time_ns, data, _wire in FRAMES:
        sec, nsec, incl, orig = struct.unpack_from("<IIII", blob, offset)
        assert (sec, nsec, incl, orig) == (time_ns // 10**9, time_ns % 10**9, len(data), len(data))
        assert blob[offset + 16 : offset + 16 + incl] == data
        offset += 16 + incl
    assert offset == len(blob)


def test_pcap_keeps_the_original_length_of_a_cut_frame() -> None:
    out = io.BytesIO()
    capture.PcapWriter(out, snaplen=20).write(5, b"z" * 60, 60)
    assert struct.unpack_from("<IIII", out.getvalue(), 24) == (0, 5, 20, 60)
    assert len(out.getvalue()) == 24 + 16 + 20


@pytest.mark.parametrize("reader", ["tcpdump", "tshark"])
def test_pcap_reads_back_in(reader: str, tmp_path: Path) -> None:
    if not shutil.which(reader):
        pytest.skip(f"{reader} is not installed")
    path = tmp_path / "w.pcap"
    path.write_bytes(_pcap(FRAMES))
    cmd = [reader, "-n", "-r", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == len(FRAMES), proc.stdout
    assert all("10.0.0.1" in line and "10.0.0.2" in line for line in lines), proc.stdout


# -- frames from a capture socket ------------------------------------------------------------------
def _aux(status: int, tp_len: int, tci: int = 0, tpid: int = 0) -> tuple[int, int, bytes]:
    return (
        capture.SOL_PACKET,
        capture.PACKET_AUXDATA,
        capture.AUXDATA.pack(status, tp_len, tp_len, 0, 14, tci, tpid),
    )


def test_stripped_vlan_tag_is_put_back() -> None:
    frame = eth(A, B, udp4(7, 8))
    stamp = (socket.SOL_SOCKET, capture.SO_TIMESTAMPNS, capture.TIMESPEC.pack(12, 34))
    got = capture._frame(frame, [_aux(capture.TP_STATUS_VLAN_VALID, len(frame), 0x2078), stamp])
    assert got.vlan == 120 and got.time_ns == 12 * 10**9 + 34 and got.wire_len == len(frame) + 4
    assert got.data == frame[:12] + bytes.fromhex("81002078") + frame[12:]
    d = pktdecode.decode(got.data)
    assert (d.vlans, d.proto, d.sport, d.dport) == ([120], "udp", 7, 8)
    qinq = capture._frame(
        frame, [_aux(capture.TP_STATUS_VLAN_VALID | capture.TP_STATUS_VLAN_TPID_VALID, 60, 5, 0x88A8)]
    )
    assert qinq.data[12:16] == bytes.fromhex("88a80005") and qinq.vlan == 5


def test_untagged_frame_is_left_alone() -> None:
    frame = eth(A, B, udp4(7, 8))
    got = capture._frame(frame, [_aux(0, len(frame))])
    assert (got.data, got.vlan, got.wire_len) == (frame, None, len(frame))


# -- records, filters, lines -----------------------------------------------------------------------
VERDICT = {
    "time": 1.5, "vm": "app1", "nic": "app1.eth1", "direction": "out", "verdict": "deny", "reason": "policy",
    "rule": "default", "proto": "tcp", "src": "10.40.0.21", "dst": "10.40.0.31", "sport": 4000, "dport": 22,
}  # fmt: skip
MIRROR_FIELDS = {
    "kind",
    "time",
    "session",
    "direction",
    "summary",
    "proto",
    "src",
    "dst",
    "sport",
    "dport",
    "len",
}


def test_mirror_record_schema_and_direction() -> None:
    data = eth(A, B, udp4(1000, 53))
    d = pktdecode.decode(data)
    rec = watch.mirror_record("s1", capture.Frame(2_500_000_000, data, len(data), None), d, "out")
    assert rec.keys() >= MIRROR_FIELDS
    assert json.loads(json.dumps(rec)) == rec
    assert (rec["session"], rec["direction"], rec["time"], rec["len"]) == ("s1", "out", 2.5, len(data))
    assert (rec["proto"], rec["src"], rec["dst"], rec["sport"], rec["dport"]) == (
        "udp",
        "10.0.0.1",
        "10.0.0.2",
        1000,
        53,
    )
    assert rec["summary"] == "udp 10.0.0.1:1000 -> 10.0.0.2:53 len 42"
    assert watch.direction(d, frozenset({A})) == "out"
    assert watch.direction(d, frozenset({B})) == "in"
    assert watch.direction(d, frozenset({"02:00:00:00:00:0c"})) == "?"
    assert watch.direction(pktdecode.decode(eth(A, "ff:ff:ff:ff:ff:ff", b"")), frozenset()) == "in"


def test_lost_record() -> None:
    rec = watch.lost_record("capture", "lab-analyzer/eth0", 3, 10)
    assert {k: rec[k] for k in ("kind", "source", "where", "count", "total")} == {
        "kind": "lost", "source": "capture", "where": "lab-analyzer/eth0", "count": 3, "total": 10,
    }  # fmt: skip


def test_a_migration_record_has_its_line() -> None:
    from netns_lab.features.migration import events

    rec = events.record("lab", "srv", "hv1", "hv2", "conntrack", 21.7)
    text, colour = cli_watch.line(rec)
    assert colour == "migration" and text.endswith("migrate  srv        hv1 -> hv2  conntrack 21.7 ms")


def test_filters() -> None:
    web, db = (
        Tap("web", "l-analyzer", "eth0", ("web1",), False),
        Tap("db", "l-analyzer", "eth0", ("db1", "app1"), False),
    )
    allow = {**VERDICT, "verdict": "allow", "reason": "new-flow", "rule": 21}
    everything = watch.Filter()
    assert everything.wants_verdicts and everything.wants_mirrors
    assert everything.keep_verdict(VERDICT) and everything.keep_verdict(allow)
    assert everything.keep_tap(web) and everything.keep_tap(db)
    denied = watch.Filter(denied=True)
    assert denied.keep_verdict(VERDICT) and not denied.keep_verdict(allow) and not denied.wants_mirrors
    assert watch.Filter(denied=True, mirror="web").wants_mirrors
    vms = watch.Filter(frozenset({"app1"}))
    assert vms.keep_verdict(VERDICT) and not vms.keep_verdict({**VERDICT, "vm": "db1"})
    assert vms.keep_tap(db) and not vms.keep_tap(web)
    one = watch.Filter(mirror="web")
    assert not one.wants_verdicts and one.keep_tap(web) and not one.keep_tap(db)
    assert watch.Filter(frozenset({"web1"}), mirror="web").wants_verdicts


def test_terminal_lines_are_aligned_and_say_what_decided() -> None:
    deny, _ = cli_watch.line({"kind": "verdict", **VERDICT})
    allow, key = cli_watch.line(
        {"kind": "verdict", **VERDICT, "verdict": "allow", "reason": "new-flow", "rule": 21}
    )
    data = eth(A, B, udp4(1000, 53))
    mirrored = watch.mirror_record(
        "s1", capture.Frame(1_500_000_000, data, 42, None), pktdecode.decode(data), "in"
    )
    copy, mkey = cli_watch.line(mirrored)
    assert "DENY" in deny and "default policy" in deny and "10.40.0.21:4000 → 10.40.0.31:22" in deny
    assert key == "allow" and "rule 21 new-flow" in allow and mkey == "mirror"
    assert "mirror" in copy and "10.0.0.1:1000 → 10.0.0.2:53" in copy and copy.endswith(" 42")
    assert deny.index("10.40") == allow.index("10.40") == copy.index("10.0.0.1")
    lost, lkey = cli_watch.line(watch.lost_record("firewall", "ring buffer", 7, 9))
    assert lkey == "lost" and "LOST" in lost and "7 firewall events were lost" in lost


def test_printer_colours_only_when_asked_and_json_is_one_object_per_line() -> None:
    out = io.StringIO()
    cli_watch.Printer(out, as_json=True, colour=False)({"kind": "verdict", **VERDICT})
    cli_watch.Printer(out, as_json=False, colour=False)({"kind": "verdict", **VERDICT})
    cli_watch.Printer(out, as_json=False, colour=True)({"kind": "verdict", **VERDICT})
    first, plain, coloured = out.getvalue().splitlines()
    assert json.loads(first) == {"kind": "verdict", **VERDICT}
    assert "\x1b[" not in plain and coloured.startswith("\x1b[31m") and coloured.endswith("\x1b[0m")


# -- CLI -------------------------------------------------------------------------------------------
def nlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netns_lab", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "x"], "nlab watch: count: 'x' is not a whole number above 0"),
        (["--count", "0"], "nlab watch: count: '0' is not a whole number above 0"),
        (["--count", "1.5"], "nlab watch: count: '1.5' is not a whole number above 0"),
        (["--duration", "-1"], "nlab watch: duration: '-1' is not a number of seconds above 0"),
        (["--duration", "nan"], "nlab watch: duration: 'nan' is not a number of seconds above 0"),
        (["--lab", "no-such-lab-x1"], "nlab watch: lab: lab 'no-such-lab-x1' is not up"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line(args: list[str], message: str) -> None:
    proc = nlab("watch", *args)
    assert (proc.returncode, proc.stdout, proc.stderr.strip()) == (2, "", message)


def test_watch_path_does_not_import_scapy() -> None:
    code = (
        "import sys, netns_lab.cli, netns_lab.observe.watch, netns_lab.observe.capture;"
        "print('scapy' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == "False"


def test_copies_are_attributed_to_the_session_of_their_vm() -> None:
    web, db = (
        Tap("web", "l-analyzer", "eth0", ("web1",), False),
        Tap("db", "l-analyzer", "eth0", ("db1",), False),
    )
    macs = {"web": frozenset({A}), "db": frozenset({B})}
    to_db = eth("02:00:00:00:00:0c", B, udp4(1, 2))
    rec, frame = watch.mirrored([web, db], macs, capture.Frame(1, to_db, len(to_db), None))
    assert (rec["session"], rec["direction"], frame.data) == ("db", "in", to_db)
    from_web = eth(A, "02:00:00:00:00:0c", udp4(1, 2))
    rec, _ = watch.mirrored([web, db], macs, capture.Frame(1, from_web, len(from_web), None))
    assert (rec["session"], rec["direction"]) == ("web", "out")


def test_encapsulated_copies_are_unwrapped_and_others_skipped() -> None:
    tap = Tap("remote", "l-internal", "eth0", ("web1",), encapsulated=True)
    inner = eth("02:00:00:00:00:0c", A, udp4(5, 6))
    outer = eth(B, "02:00:00:00:00:0d", udp4(4789, 4789) + inner)

    def decapsulate(data: bytes) -> tuple[int, str, bytes] | None:
        return (7, "in", data[14 + 28 :]) if data == outer else None

    rec, frame = watch.mirrored(
        [tap], {"remote": frozenset({A})}, capture.Frame(9, outer, 200, None), decapsulate
    )
    assert frame.data == inner and frame.wire_len == len(inner) and frame.time_ns == 9
    assert (rec["session"], rec["direction"], rec["sport"], rec["dport"], rec["len"]) == (
        "remote",
        "in",
        5,
        6,
        len(inner),
    )
    other = eth(B, A, udp4(1, 1))
    assert (
        watch.mirrored([tap], {"remote": frozenset()}, capture.Frame(9, other, 42, None), decapsulate) is None
    )
