"""Failover (NIST 3, VM-MP): a team's active member loses its carrier (`nlab fail`), the team
monitor moves traffic to the standby, then the fault is healed (`nlab heal`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def check(lab: Any, folder: Path | None) -> dict[str, Any]:
    return {
        "id": "failover",
        "recommendations": ["VM-MP-R1", "VM-MP-R2", "VM-MP-R3"],
        "status": "skipped",
        "reason": "the lab has no NIC team",
        "findings": [],
        "evidence": {},
    }
