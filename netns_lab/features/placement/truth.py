"""The verdicts the lab's one policy gives new flows between VMs (pure), whatever enforces it:
a flow passes when the source's "out" rules and the destination's "in" rules both allow it,
each judged by the reference evaluator (`dataplane.fwpolicy.evaluate`) on the lab-wide policy.
A VM no rule applies to judges nothing."""

from __future__ import annotations

from dataclasses import dataclass

from dataplane import fwpolicy
from netns_lab.features.firewall import plan as firewall
from netns_lab.topology.model import Topology


@dataclass(frozen=True)
class Probe:
    src: str  # VM
    dst: str  # VM
    proto: str  # tcp, udp, icmp
    port: int  # destination port; ICMP: the type

    def doc(self, expected: str, observed: str | None = None) -> dict[str, object]:
        row: dict[str, object] = {**self.__dict__, "expected": expected}
        return row if observed is None else {**row, "observed": observed}


def expected(topo: Topology, probes: list[Probe]) -> dict[Probe, str]:
    """The verdict, "allow" or "deny", of each probe between the VMs' first NICs."""
    policy = firewall.policy(topo, topo.firewalled_nics())
    ids = firewall.endpoint_ids(topo)
    known = {ep.id for ep in policy.endpoints}

    def side(vm: str, direction: str, peer: str, p: Probe) -> bool:
        eid = ids[(vm, 0)]
        if eid not in known:
            return True
        return fwpolicy.evaluate(policy, eid, direction, peer, p.proto, p.port).allowed

    verdicts = {}
    for p in probes:
        src, dst = str(address(topo, p.src)), str(address(topo, p.dst))
        ok = side(p.src, "out", dst, p) and side(p.dst, "in", src, p)
        verdicts[p] = "allow" if ok else "deny"
    return verdicts


def address(topo: Topology, vm: str) -> object:
    ip = topo.vm(vm).nics[0].ip
    if ip is None:
        raise ValueError(f"{vm} has no address on its first NIC")
    return ip.ip
