"""Who sees a VM's traffic: mirror completeness (VM-TM-R1), promiscuous scope (VM-TM-R2) and
snooping, from one round of real echoes.

Each mirror session's source VM exchanges a few echoes with a peer its firewall lets it reach
(taken from the truth table). Meanwhile every session's tap captures its copies, and every other
VM NIC listens in promiscuous mode from inside its VM. The echoes carry a random token:
  - at a session's tap, requests from the source count as `out` copies, replies to it as `in`;
    both must arrive as the session declares (its `direction`), each echo exactly once;
  - a promiscuous NIC (an implicit session over its port group) may receive copies of its port
    group's traffic only: an echo of a pair outside the group reaching it is a finding;
  - any other NIC that receives a frame of the echoes between others has snooped them.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from netns_lab.features.compliance.verify import expected, probes
from netns_lab.features.compliance.verify.evidence import Recorder, copy_as, recording
from netns_lab.features.compliance.verify.expected import Probe
from netns_lab.features.mirror import live as mirror_live
from netns_lab.features.mirror import plan as mirror_plan
from netns_lab.lab.running import RunningLab
from netns_lab.topology import names

ECHOES = 3
SETTLE = 0.5  # seconds the copies may take after the last answer
ICMP_ECHO, ICMP_REPLY = 8, 0


@dataclass(frozen=True)
class Pair:
    session: str
    src: str
    src_ip: str
    dst: str
    dst_ip: str


def _source_ports(lab: RunningLab, session: str) -> set[str]:
    return {
        port
        for hp in mirror_plan.plan(lab.topo).values()
        for s in hp.sessions
        if s.name == session
        for port in s.sources
    }


def _pairs(
    lab: RunningLab, taps: list[mirror_plan.Tap], table: list[dict[str, Any]]
) -> tuple[list[Pair], list[str]]:
    """Per session: one echo the model and the dataplane both allow, sent from a source NIC."""
    echoes = [r for r in table if r["proto"] == "icmp" and r["expected"] == r["observed"] == "allow"]
    pairs, unpaired = [], []
    for tap in taps:
        ports = _source_ports(lab, tap.session)
        pair = None
        for r in echoes:
            vm = lab.topo.vm(r["src"])
            found = expected.route(vm, ip_address(r["dst_ip"]))  # type: ignore[arg-type]
            if (
                found is not None
                and found[0].ip is not None
                and names.vm_port(vm.name, found[0].index) in ports
            ):
                pair = Pair(tap.session, vm.name, str(found[0].ip.ip), r["dst"], r["dst_ip"])
                break
        if pair is None:
            unpaired.append(tap.session)
        else:
            pairs.append(pair)
    return pairs, unpaired


def _echoes(data: bytes, token: bytes) -> list[tuple[int, str, str]]:
    """(ICMP type, IP source, IP destination) of each echo of the run in a frame (an
    encapsulated copy too: the token is found wherever the inner frame starts)."""
    found, at = [], data.find(token)
    while at >= 28:
        icmp, ip = at - 8, at - 28
        if data[ip] == 0x45 and data[ip + 9] == socket.IPPROTO_ICMP:
            src, dst = socket.inet_ntoa(data[ip + 12 : ip + 16]), socket.inet_ntoa(data[ip + 16 : ip + 20])
            found.append((data[icmp], src, dst))
        at = data.find(token, at + 1)
    return found


def _count(frames: list[Any], token: bytes) -> dict[tuple[int, str, str], int]:
    counts: dict[tuple[int, str, str], int] = {}
    for frame in frames:
        for echo in _echoes(frame.data, token):
            counts[echo] = counts.get(echo, 0) + 1
    return counts


@dataclass
class Round:
    pairs: list[Pair]
    unpaired: list[str]
    taps: dict[str, dict[tuple[int, str, str], int]]  # session -> echoes seen at its tap
    nics: dict[str, dict[tuple[int, str, str], int]]  # VM.ethN -> echoes it received
    recorder: Recorder
    files: dict[str, str]


def run(lab: RunningLab, folder: Path | None, table: list[dict[str, Any]]) -> Round:
    taps = mirror_live.taps(lab.lab)
    pairs, unpaired = _pairs(lab, taps, table)
    ends = {p.src for p in pairs} | {p.dst for p in pairs}
    dests = {s.dest_vm for s in mirror_plan.sessions(lab.topo) if s.dest_vm}
    with recording(lab, folder, "mirror") as rec:
        tap_caps = {t.session: rec.capture(t.namespace, t.ifname, marked=t.marked) for t in taps}
        nic_caps = {
            f"{vm.name}.{nic.name}": rec.capture(names.namespace(lab.lab, vm.name), nic.name)
            for vm in lab.topo.vms
            if vm.name not in ends and vm.name not in dests
            for nic in vm.nics
        }
        batch = [Probe(p.src, p.dst, p.dst_ip, "icmp", None) for p in pairs for _ in range(ECHOES)]
        with probes.batch(lab.lab, batch) as echo:
            echo.run(timeout=1.0)
            token = echo.token
        _settle(rec, tap_caps, pairs, token)
        seen_taps = {s: _count(rec.frames_of(c), token) for s, c in tap_caps.items()}
        seen_nics = {n: _count(rec.frames_of(c), token) for n, c in nic_caps.items()}
        files = rec.finish()
    return Round(pairs, unpaired, seen_taps, seen_nics, rec, files)


def _settle(rec: Recorder, caps: dict[str, Any], pairs: list[Pair], token: bytes) -> None:
    """Read the captures until every session's tap holds its pair's echoes both ways, or
    SETTLE seconds: a copy is cloned before the frame it copies is delivered, but reaches its
    tap through a queue of its own."""
    deadline = time.monotonic() + SETTLE
    while True:
        rec.drain()
        counts = {
            p.session: _count(rec.frames_of(caps[p.session]), token) for p in pairs if p.session in caps
        }
        done = all(
            counts[p.session].get((ICMP_ECHO, p.src_ip, p.dst_ip), 0) >= ECHOES
            and counts[p.session].get((ICMP_REPLY, p.dst_ip, p.src_ip), 0) >= ECHOES
            for p in pairs
            if p.session in counts
        )
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.02)


# -- judgements ------------------------------------------------------------------------------------
def _declared(lab: RunningLab, session: str) -> tuple[str, int, int]:
    """(direction, sample, snaplen) as the model declares the session."""
    s = next((m for m in lab.topo.mirrors if m.name == session), None)
    planned = next((p for p in mirror_plan.sessions(lab.topo) if p.name == session), None)
    sample = planned.sample if planned else 1
    snaplen = planned.snaplen if planned else 0
    return (s.direction if s else "both"), sample, snaplen


def mirror_check(lab: RunningLab, r: Round) -> dict[str, Any]:
    findings, judged = [], []
    for p in r.pairs:
        if p.session.startswith("promiscuous:"):
            continue
        direction, sample, snaplen = _declared(lab, p.session)
        seen = r.taps.get(p.session, {})
        got = {
            "out": seen.get((ICMP_ECHO, p.src_ip, p.dst_ip), 0),
            "in": seen.get((ICMP_REPLY, p.dst_ip, p.src_ip), 0),
        }
        want = {d: (ECHOES if direction in (d, "both") else 0) for d in ("out", "in")}
        exact = sample == 1 and not snaplen  # sampled or truncated copies: at least one, not all
        for d in ("out", "in"):
            ok = got[d] == want[d] if exact else (got[d] > 0) == (want[d] > 0)
            if not ok:
                findings.append(
                    {
                        "what": f"mirror copies ({d} of {p.src})",
                        "where": f"session {p.session}",
                        "expected": want[d] if exact else ("some" if want[d] else 0),
                        "observed": got[d],
                    }
                )
        one_way = "" if direction == "both" else f" (declared {direction} only: VM-TM-R1 not met by design)"
        judged.append(f"{p.session}: {p.src}<->{p.dst} out {got['out']}, in {got['in']}{one_way}")
    skipped = [s for s in r.unpaired if not s.startswith("promiscuous:")]
    if not judged and not findings:
        status, reason = (
            "skipped",
            "no mirror session" + (f" with an echo peer ({', '.join(skipped)})" if skipped else ""),
        )
    else:
        status = "fail" if findings else "pass"
        reason = f"{ECHOES} echoes each way; copies at the taps: " + "; ".join(judged)
        if skipped:
            reason += f"; not exercised (no echo peer): {', '.join(skipped)}"
    return _doc("mirror", ["VM-TM-R1", "VM-TM-R3"], status, reason, findings, r.files)


def snooped(lab: RunningLab, r: Round) -> list[dict[str, Any]]:
    """Echoes between others received by a NIC that is no mirror destination."""
    promiscuous = {f"{vm.name}.{n.name}" for vm in lab.topo.vms for n in vm.nics if n.promiscuous}
    found = []
    for nic, seen in sorted(r.nics.items()):
        if nic in promiscuous:
            continue
        for (kind, src, dst), n in sorted(seen.items()):
            found.append(
                {
                    "what": "snooped echo",
                    "where": nic,
                    "expected": 0,
                    "observed": f"{n} x type {kind} {src} -> {dst}",
                }
            )
    return found


def promiscuous_check(lab: RunningLab, r: Round) -> dict[str, Any]:
    findings = []
    judged = []
    plans = {s.name: s for s in mirror_plan.sessions(lab.topo)}
    for p in (x for x in r.pairs if x.session.startswith("promiscuous:")):
        group = set(plans[p.session].source_vms) if p.session in plans else set()
        outside = [x for x in r.pairs if x.src not in group and x.dst not in group]
        seen = r.taps.get(p.session, {})
        for x in outside:
            n = seen.get((ICMP_ECHO, x.src_ip, x.dst_ip), 0) + seen.get((ICMP_REPLY, x.dst_ip, x.src_ip), 0)
            if n:
                findings.append(
                    {
                        "what": "copy outside the port group",
                        "where": p.session,
                        "expected": 0,
                        "observed": f"{n} of {x.src}<->{x.dst}",
                    }
                )
        judged.append(f"{p.session} over {', '.join(sorted(group))}")
    leaks = snooped(lab, r)
    findings += leaks
    promiscuous = {f"{vm.name}.{n.name}" for vm in lab.topo.vms for n in vm.nics if n.promiscuous}
    listening = len(set(r.nics) - promiscuous)
    reason = (
        f"{listening} NICs, neither mirror destinations nor promiscuous, listened in promiscuous "
        f"mode: {len(leaks)} frames of others' echoes reached them"
    )
    if judged:
        reason = f"promiscuous NICs: {'; '.join(judged)}; " + reason
    status = "fail" if findings else "pass"
    return _doc("promiscuous", ["VM-TM-R2"], status, reason, findings, copy_as(r.files, "promiscuous"))


def _doc(
    cid: str, recs: list[str], status: str, reason: str, findings: list[dict[str, Any]], files: dict[str, str]
) -> dict[str, Any]:
    return {
        "id": cid,
        "recommendations": recs,
        "status": status,
        "reason": reason,
        "findings": findings,
        "evidence": files,
    }
