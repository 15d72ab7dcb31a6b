"""Which nodes enforce the lab's policy off the vNIC, and the ruleset of each (pure).

An instance of placement "subnet" is a firewall VM without a hand-written ruleset; one of
"physical" is an appliance. Every instance of a placement gets the same ruleset: the policy of
all the NICs placed there, lab-wide (an instance only sees the traffic routed through it, so the
chains of VMs behind another instance cost nothing). One ruleset per placement, compiled from
the one policy: that is how one change provisions every instance (VM-FW-R3).
"""

from __future__ import annotations

from dataclasses import dataclass

from dataplane import fwpolicy
from netns_lab import encoding
from netns_lab.features.firewall import plan as firewall
from netns_lab.features.placement import nftables
from netns_lab.topology.model import Topology


@dataclass(frozen=True)
class Instance:
    node: str  # the firewall VM or the appliance (its namespace is <lab>-<node>)
    placement: str  # "subnet" | "physical"


def instances(topo: Topology) -> list[Instance]:
    return [Instance(vm.name, "subnet") for vm in topo.policy_firewalls()] + [
        Instance(a.name, "physical") for a in topo.appliances
    ]


def placed_policy(topo: Topology, placement: str) -> fwpolicy.Policy:
    """The policy of the NICs whose VMs are placed at `placement`."""
    where = topo.placements()
    return firewall.policy(topo, {n for n in topo.firewalled_nics() if where[n[0]] == placement})


def rulesets(topo: Topology) -> dict[str, str]:
    """node -> the nftables ruleset it runs, for every instance."""
    labels = {eid: encoding.nic_name(vm, idx) for (vm, idx), eid in firewall.endpoint_ids(topo).items()}
    policies = {p: placed_policy(topo, p) for p in ("subnet", "physical")}
    return {i.node: nftables.ruleset(policies[i.placement], labels, i.node) for i in instances(topo)}
