"""The teams of a topology, as the monitor and the dataplane need them: pure, no I/O.

A team is named ``HOST.VSWITCH``; its members are the vSwitch's uplinks in their active-standby
order. Each team also lists the MACs a failover announces on the new active member (every VM
NIC and VMkernel NIC on the vSwitch, with the VLAN its frames carry on the uplink) and how the
ARP target is probed (from a VMkernel NIC's address and VLAN on the target's subnet, else as an
RFC 5227 probe from 0.0.0.0, untagged).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from netns_lab.features.team.detect import Settings
from netns_lab.topology.model import Team, Topology

ANY = IPv4Address("0.0.0.0")  # the sender of an RFC 5227 ARP probe
HOLD_DOWN_MIN = 1.0  # seconds a recovered member waits at least before it takes over again
Tagged = tuple[str, int | None]  # (MAC, VLAN on the uplink; None: untagged)


@dataclass(frozen=True)
class TeamPlan:
    host: str
    vswitch: str
    members: tuple[str, ...]
    team: Team
    macs: tuple[Tagged, ...] = ()
    arp_source: IPv4Address = ANY
    arp_vlan: int | None = None

    @property
    def name(self) -> str:
        return f"{self.host}.{self.vswitch}"

    def settings(self) -> Settings:
        """What the detector needs, times in seconds."""
        interval = self.team.beacon_interval_ms / 1000
        beacon = "beacon" in self.team.detection
        return Settings(
            name=self.name,
            members=self.members,
            failback=self.team.failback,
            link="link" in self.team.detection,
            beacon=beacon,
            arp=self.team.arp_target is not None,
            beacon_interval=interval,
            beacon_miss=self.team.beacon_miss,
            hold_down=max(HOLD_DOWN_MIN, interval * self.team.beacon_miss) if beacon else HOLD_DOWN_MIN,
        )


def teams(topo: Topology, host: str | None = None) -> list[TeamPlan]:
    """Every team of the topology (of ``host`` only, if given), in declaration order."""
    return [
        _plan(topo, h.name, vs.name)
        for h in topo.hosts
        if host in (None, h.name)
        for vs in h.vswitches
        if vs.team is not None
    ]


def _plan(topo: Topology, host: str, vswitch: str) -> TeamPlan:
    vs = topo.host(host).vswitch(vswitch)
    assert vs.team is not None
    profile = topo.uplink_profile(host, vswitch)
    macs: list[Tagged] = []
    for vm in topo.vms:
        if vm.host == host:
            macs += [(nic.mac, _tag(nic.vlan, profile.trunk)) for nic in vm.nics if nic.vswitch == vswitch]
    kernel_nics = [k for k in topo.host(host).vmknics if k.vswitch == vswitch]
    macs += [(k.mac, _tag(k.vlan, profile.trunk)) for k in kernel_nics]
    source, vlan = ANY, None
    target = vs.team.arp_target
    for k in kernel_nics:
        if target is not None and k.ip is not None and target in k.ip.network and k.ip.version == 4:
            source, vlan = IPv4Address(str(k.ip.ip)), _tag(k.vlan, profile.trunk)
            break
    return TeamPlan(host, vswitch, vs.uplinks, vs.team, tuple(dict.fromkeys(macs)), source, vlan)


def _tag(vlan: int | None, trunk: frozenset[int]) -> int | None:
    """The VLAN a port's frames carry on the uplink: tagged when the trunk carries it."""
    return vlan if vlan is not None and vlan in trunk else None
