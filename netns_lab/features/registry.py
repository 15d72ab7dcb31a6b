"""The features of a lab, in the order the builder and a live change run their hooks."""

from __future__ import annotations

from netns_lab.features.base import Feature
from netns_lab.features.firewall import FEATURE as FIREWALL
from netns_lab.features.mirror import FEATURE as MIRROR
from netns_lab.features.overlay import FEATURE as OVERLAY
from netns_lab.features.placement import FEATURE as PLACEMENT
from netns_lab.features.team import FEATURE as TEAM
from netns_lab.features.vlan import FEATURE as VLAN

FEATURES: tuple[Feature, ...] = (VLAN, FIREWALL, MIRROR, PLACEMENT, OVERLAY, TEAM)


def _check_order() -> None:
    seen: set[str] = set()
    for feature in FEATURES:
        missing = [r for r in feature.requires if r not in seen]
        if missing:  # a registry edit that breaks the order must fail at import, not mid-build
            raise RuntimeError(f"feature {feature.name} needs {missing} registered before it")
        seen.add(feature.name)


_check_order()
