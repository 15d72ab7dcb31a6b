"""A host dual-homed to two switches that share an upstream: a loop that only the team breaks.

    vm ─ vm0 ┐                 ┌ down ─ s1 ─ up ┐
             host:br0 ─ eth0 ──┘                ├─ upstream:br0 ─ peer
                      ─ eth1 ──┐                │
                               └ down ─ s2 ─ up ┘

The host's ports carry the dataplane (loaded, pinned, configured and attached as the builder
does: SwitchDataplane.load/configure/attach); s1, s2 and upstream are plain bridges. eth0 is
the active member, eth1 the standby; the team map is written before any uplink comes up, and
IPv6 and link-local IGMP reports are off everywhere, so nothing but a test's own frames
crosses the lab. Namespaces are `zztm<random>-<node>`, deleted when `team_lab` ends, whatever
happened. Used by tests/lab/test_team_dataplane.py and tests/bench/test_team_traffic.py.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dataplane.abi import Direction, Reason
from dataplane.switch import PortVlans, SwitchDataplane
from netns_lab.kernel import netlink, netns
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.state import pin_dir

NODES = ("host", "s1", "s2", "upstream", "vm", "peer")
VM_MAC, PEER_MAC = "02:00:00:00:0e:01", "02:00:00:00:0e:02"
VM_IP, PEER_IP = "10.14.0.1/24", "10.14.0.2/24"


@dataclass
class TeamLab:
    prefix: str
    pins: Path
    members: dict[str, int]  # eth0, eth1 -> ifindex in the host namespace

    def ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def dataplane(self) -> SwitchDataplane:
        """The host's dataplane reopened from its pins, as a CLI process would."""
        return SwitchDataplane.open(self.pins)

    def counts(self, member: str) -> dict[tuple[Direction, Reason], int]:
        with self.dataplane() as dp:
            return {key: c.packets for key, c in dp.counters(self.members[member]).items()}


def _build(lab: TeamLab, host_dp: SwitchDataplane) -> None:
    for node in NODES:
        netns.create(lab.ns(node))
        # only the test's own frames: no IPv6 (MLD, ND), no IGMP report for the all-snoopers
        # group a bridge joins (224.0.0.106) a few seconds after it comes up
        for scope in ("all", "default"):
            netlink.sysctl(lab.ns(node), f"net.ipv6.conf.{scope}.disable_ipv6", "1")
        netlink.sysctl(lab.ns(node), "net.ipv4.igmp_link_local_mcast_reports", "0")
    with contextlib.ExitStack() as stack:
        nl = {node: stack.enter_context(Netlink(lab.ns(node))) for node in NODES}
        for node in ("host", "s1", "s2", "upstream"):
            nl[node].bridge("br0")
        # the host's ports: enslaved, configured and gated before anything is up
        vm0 = nl["host"].veth("vm0", "eth0", lab.ns("vm"), mac=VM_MAC, master="br0")
        for member, switch in (("eth0", "s1"), ("eth1", "s2")):
            lab.members[member] = nl["host"].veth(member, "down", lab.ns(switch), master="br0")
        for ifindex in (vm0, *lab.members.values()):
            host_dp.configure(ifindex, PortVlans(untagged=True))
            host_dp.attach(nl["host"].tc_socket(), ifindex)
        host_dp.team.activate(lab.members["eth0"], list(lab.members.values()))
        # the switches: the loop s1 - upstream - s2 closes through the host
        for switch, port in (("s1", "s1"), ("s2", "s2")):
            nl[switch].enslave("down", "br0")
            nl["upstream"].veth(port, "up", lab.ns(switch), master="br0", up=True)
            nl[switch].enslave("up", "br0")
            nl[switch].up("up")
            nl[switch].up("down")
        nl["upstream"].veth("peer", "eth0", lab.ns("peer"), mac=PEER_MAC, master="br0", up=True)
        for vm, ip in (("vm", VM_IP), ("peer", PEER_IP)):
            nl[vm].address("eth0", ip)
            nl[vm].up("eth0")
        for port in ("vm0", "eth0", "eth1"):
            nl["host"].up(port)


@contextlib.contextmanager
def team_lab() -> Iterator[TeamLab]:
    prefix = "zztm" + secrets.token_hex(3)
    made = TeamLab(prefix, pin_dir(prefix), {})
    host_dp = None
    try:
        host_dp = SwitchDataplane.load(made.pins)
        _build(made, host_dp)
        yield made
    finally:
        if host_dp is not None:
            host_dp.close()
        for node in NODES:
            netns.delete(made.ns(node))
        shutil.rmtree(made.pins, ignore_errors=True)
    assert not any(netns.exists(made.ns(node)) for node in NODES)
