"""VLAN segmentation (NIST 2.4, VM-VN-R1): every port of every switching node gets its VLAN
policy (access, trunk or untagged; edge ports guarded against switch-control frames) before its
programs attach, on a plain bridge (this kernel has no VLAN-aware bridge).

    plan.py     pure: each node's ports and their VLAN policy
    checks.py   VM-VN-R1 statically (`checks`, `nlab audit`) and by live ARP probes that show which
                VLANs each trunk really carries (`nlab vlans`)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netns_lab.features.base import BuildContext, Feature
from netns_lab.features.vlan import plan

if TYPE_CHECKING:
    from netns_lab.topology.model import Topology


class VlanFeature(Feature):
    name = "vlan"

    def port(self, b: BuildContext, node: str, ifindex: int, ifname: str) -> None:
        from dataplane.switch import PortError

        dp = b.dataplane(node)
        if dp is None:
            return
        policies = b.memo("vlan.ports", lambda: plan.port_vlans(b.topo))
        try:
            dp.configure(ifindex, policies[node][ifname])
        except PortError as err:
            raise RuntimeError(f"{node}: port {ifname}: {err}") from None

    def checks(self, topo: Topology) -> list[dict[str, Any]]:
        from netns_lab.features.vlan import checks

        return [checks.recommendation(topo)]


FEATURE = VlanFeature()
