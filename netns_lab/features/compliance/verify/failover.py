"""Failover (NIST 3, VM-MP): the first team's active member loses its carrier, as `nlab fail
HOST.PNIC` does it, the team monitor must move the team to a standby member; then the fault
is healed (`nlab heal`) and the member must be healthy again (back to active with failback).

This is the one check that acts on the lab: a fault is injected for about a second and always
healed (`finally`), and the team's move is real traffic's path change, as `nlab fail` makes it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from netns_lab.features.compliance.verify import probes
from netns_lab.features.compliance.verify.evidence import recording
from netns_lab.features.compliance.verify.expected import Probe
from netns_lab.features.team import faults
from netns_lab.features.team import plan as team_plan
from netns_lab.lab.running import HostPlane, RunningLab
from netns_lab.topology import names

WINDOW = 5.0  # seconds for the monitor to move the team (link detection acts within its hold-down)
POLL = 0.01
ECHOES = 3
RECOMMENDATIONS = ["VM-MP-R1", "VM-MP-R2", "VM-MP-R3"]


def _active(h: HostPlane, t: team_plan.TeamPlan) -> str | None:
    members = h.dataplane.team.members()
    return next((m for m in t.members if members.get(h.ifindexes.get(m, -1))), None)


def _until(h: HostPlane, t: team_plan.TeamPlan, done: Any) -> tuple[str | None, float]:
    start = time.monotonic()
    while True:
        active = _active(h, t)
        if done(active) or time.monotonic() - start > WINDOW:
            return active, time.monotonic() - start
        time.sleep(POLL)


def _across(lab: RunningLab, t: team_plan.TeamPlan, table: list[dict[str, Any]]) -> list[Probe]:
    """Echoes from a VM behind the team to a VM on another host that both the model and the
    dataplane allowed: they must cross the team's new member."""
    for r in table:
        src, dst = lab.topo.vm(r["src"]), lab.topo.vm(r["dst"])
        behind = src.host == t.host and any(n.vswitch == t.vswitch for n in src.nics)
        if (
            r["proto"] == "icmp"
            and r["expected"] == r["observed"] == "allow"
            and behind
            and dst.host != t.host
        ):
            return [Probe(src.name, dst.name, r["dst_ip"], "icmp", None)] * ECHOES
    return []


def check(lab: RunningLab, folder: Path | None, table: list[dict[str, Any]]) -> dict[str, Any]:
    plans = team_plan.teams(lab.topo)
    if not plans:
        return _doc("skipped", "the lab has no NIC team", [], {})
    t = plans[0]
    h = next(x for x in lab.hosts if x.host == t.host)
    before = _active(h, t)
    if before is None:
        where = f"{t.host} team {t.name}"
        return _doc("fail", "no active member", [_finding(where, "one active member", "none")], {})
    if faults.active(lab.lab):
        return _doc("skipped", "a fault is injected already (nlab heal it first)", [], {})
    link = faults.resolve(lab.topo, f"{t.host}.{before}")
    findings = []
    with recording(lab, folder, "failover") as rec:
        for member in t.members:  # the echoes leave by the standby once the team moved
            rec.capture(names.namespace(lab.lab, t.host), member)
        faults.fail(lab.topo, link, "carrier")
        echoes = _across(lab, t, table)
        try:
            moved, took = _until(h, t, lambda a: a not in (None, before))
            answered = sum(s.verdict == "allow" for s in probes.observe(lab.lab, echoes, timeout=1.0))
        finally:
            faults.heal(lab.topo, link)
        back, healed = _until(h, t, lambda a: a == before if t.team.failback else a is not None)
        files = rec.finish()
    if moved in (None, before):
        findings.append(_finding(f"{t.host} team {t.name}", f"a standby active within {WINDOW:.0f} s", moved))
    if echoes and answered != len(echoes):
        where = f"{echoes[0].src} -> {echoes[0].dst} {echoes[0].dst_ip} icmp, on {moved}"
        findings.append(
            {"what": "echoes across the team", "where": where, "expected": len(echoes), "observed": answered}
        )
    want_back = before if t.team.failback else "an active member"
    if (back != before) if t.team.failback else back is None:
        findings.append(_finding(f"{t.host} team {t.name} after heal", want_back, back))
    reason = (
        f"{link.name} failed (carrier): team {t.name} moved {before} -> {moved} in {took * 1000:.0f} ms; "
        f"healed: active {back} after {healed * 1000:.0f} ms (failback {'on' if t.team.failback else 'off'})"
    )
    if echoes:
        reason += (
            f"; while failed, {answered}/{len(echoes)} echoes {echoes[0].src} -> {echoes[0].dst} answered"
        )
    if len(plans) > 1:
        reason += f"; {len(plans) - 1} other teams not exercised"
    doc = _doc("fail" if findings else "pass", reason, findings, files)
    doc["failover_ms"] = round(took * 1000, 1)
    return doc


def _finding(where: str, expected: Any, observed: Any) -> dict[str, Any]:
    return {"what": "team failover", "where": where, "expected": expected, "observed": observed}


def _doc(status: str, reason: str, findings: list[dict[str, Any]], files: dict[str, str]) -> dict[str, Any]:
    return {
        "id": "failover",
        "recommendations": RECOMMENDATIONS,
        "status": status,
        "reason": reason,
        "findings": findings,
        "evidence": files,
    }
