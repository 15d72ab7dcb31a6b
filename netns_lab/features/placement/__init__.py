"""Firewall placements (NIST 4.1-4.3): the lab's one policy enforced in the kernel (the firewall
feature, on every vNIC port), on subnet-level firewall VMs, or on physical appliances, per tier.
This feature provisions the nftables instances: at build time, and on every live change, with
the same compile (VM-FW-R3).

    nftables.py   pure: a policy as an nftables ruleset
    plan.py       pure: the instances and the ruleset of each
    compare.py    the same workload through each placement, side by side (`nlab placement compare`)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netns_lab.features.base import BuildContext, Feature
from netns_lab.features.placement import plan
from netns_lab.kernel import nft
from netns_lab.topology import names

if TYPE_CHECKING:
    from netns_lab.features.base import HostPlane, LiveContext
    from netns_lab.topology.model import Topology


class PlacementFeature(Feature):
    name = "placement"
    requires = ("firewall",)

    def lab_built(self, b: BuildContext) -> None:
        install(b.topo.lab, plan.rulesets(b.topo))

    def live_install(self, lab: LiveContext, host: HostPlane, old: Topology, new: Topology) -> None:
        """Once per change, with the first host: a change that fails on a later host is undone by
        installing `old` on the hosts touched, which brings the instances' old rulesets back too."""
        lab.memo("placement.nft", lambda: _changed(lab.lab, plan.rulesets(old), plan.rulesets(new)))


def install(lab: str, rulesets: dict[str, str]) -> None:
    """Each instance's ruleset, each loaded atomically (`nft -f` is one transaction)."""
    for node, text in rulesets.items():
        nft.load(names.namespace(lab, node), text)


def rule_hits(lab: str, topo: Topology) -> dict[int, tuple[int, int]]:
    """(packets, bytes) of each rule on every nftables instance, by rule id; 0: the default
    denials (as the NIC firewall's `rule_hits` counts them, so the two add up)."""
    total: dict[int, tuple[int, int]] = {}
    for instance in plan.instances(topo):
        for comment, (packets, nbytes) in nft.counters(names.namespace(lab, instance.node)).items():
            word = comment.split()
            rule = int(word[1]) if word[0] == "rule" else 0 if word[:2] == ["default", "deny"] else None
            if rule is not None:
                p, b = total.get(rule, (0, 0))
                total[rule] = (p + packets, b + nbytes)
    return total


def _changed(lab: str, old: dict[str, str], new: dict[str, str]) -> bool:
    install(lab, {node: text for node, text in new.items() if old.get(node) != text})
    return True


FEATURE = PlacementFeature()
