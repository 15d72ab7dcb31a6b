"""`nlab verify`: a running lab checked live, with real packets, against its model.

`verify(lab, evidence)` runs every check and returns the verify document (docs/cli.md):
  crosscheck    every rule, port policy, program, mirror, team and overlay entry in the kernel
                against what the model compiles to (read only)
  reachability  the model's truth table against real TCP, UDP and ICMP probes between the VMs,
                each disagreement with the trace of the real programs
  mirror        every session's copies at its tap, both directions as declared (VM-TM-R1)
  promiscuous   promiscuous NICs get their port group's traffic only; nobody else snoops (VM-TM-R2)
  attacks       VLAN hopping, spoofing and fragments against exact drop counters
  failover      a team's active member failed and healed (when the lab has a team)
The lab's own conntrack sees the probes' connections (they are traffic); nothing else is
written: no counter reset, no map entry, no program (traces run on private copies).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from netns_lab.features.compliance.verify import attacks, crosscheck, failover, reachability, traffic
from netns_lab.features.compliance.verify.evidence import recording
from netns_lab.lab.running import RunningLab

__all__ = ["VerifyError", "verify"]


class VerifyError(ValueError):
    """Bad input: an evidence folder that cannot be written (exit 2)."""


def _crosscheck(lab: RunningLab, folder: Path | None) -> dict[str, Any]:
    with recording(lab, folder, "crosscheck") as rec:
        findings = crosscheck.run(lab)
        files = rec.finish()
    checked = f"{len(lab.hosts)} hosts and {len(lab.topo.switches)} switches"
    return {
        "id": "crosscheck",
        "recommendations": ["VM-VN-R1", "VM-FW-R3", "VM-TM-R1", "VM-MP-R1"],
        "status": "fail" if findings else "pass",
        "reason": f"{len(findings)} difference{'' if len(findings) == 1 else 's'} between the model and "
        f"the kernel on {checked}",
        "findings": findings,
        "evidence": files,
    }


def _folder(evidence: Path | None) -> Path | None:
    if evidence is None:
        return None
    try:
        evidence.mkdir(parents=True, exist_ok=True)
        probe = evidence / ".nlab-verify"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise VerifyError(f"--evidence {evidence}: cannot write: {err.strerror or err}") from None
    return evidence


def verify(lab: RunningLab, evidence: Path | None = None) -> dict[str, Any]:
    """Every check on the running lab `lab`; `evidence`: a folder for a pcap and a counter
    snapshot per check."""
    folder = _folder(evidence)
    started = time.monotonic()
    checks = [_crosscheck(lab, folder)]
    reach, table, outside = reachability.check(lab, folder)
    checks.append(reach)
    echoes = traffic.run(lab, folder, table)
    checks.append(traffic.mirror_check(lab, echoes))
    checks.append(traffic.promiscuous_check(lab, echoes))
    checks.append(attacks.check(lab, folder, traffic.snooped(lab, echoes)))
    checks.append(failover.check(lab, folder, table))
    checks.append(
        {
            "id": "migration",
            "recommendations": ["VM-FW-R4"],
            "status": "skipped",
            "reason": "verify migrates no VM; continuity is shown by `nlab migrate` itself",
            "findings": [],
            "evidence": {},
        }
    )
    return {
        "lab": lab.lab,
        "ok": all(c["status"] != "fail" for c in checks),
        "seconds": round(time.monotonic() - started, 1),
        "checks": checks,
        "truth_table": table,
        "outside_scope": outside,
    }
