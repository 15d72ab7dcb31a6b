"""The topology model: plain, frozen data with no I/O.

The loader turns a YAML file into these objects after validating it; the builder, status and
graph read them. Names of the kernel objects a lab creates are derived in `names`. The NIC
firewall's policy (security groups, rules, connection-tracking settings) is part of the topology
too, with the pure helpers that say which rules apply to which NIC.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import Literal

from netns_lab.topology.names import default_mac, link_port, segment_bridge, vm_port, vmknic_mac

IfAddr = IPv4Interface | IPv6Interface
IpAddr = IPv4Address | IPv6Address
IpNet = IPv4Network | IPv6Network
Role = Literal["none", "firewall", "router", "analyzer"]
ROLES: tuple[str, ...] = ("none", "firewall", "router", "analyzer")

PeerKind = Literal["any", "cidr", "group", "vm"]
Direction = Literal["in", "out"]
Proto = Literal["tcp", "udp", "icmp", "icmpv6", "any"]
Action = Literal["allow", "deny"]
PROTOS: tuple[str, ...] = ("tcp", "udp", "icmp", "icmpv6", "any")
MirrorDirection = Literal["in", "out", "both"]
TapPoint = Literal["before", "after"]
SourceKind = Literal["vm", "vlan", "group"]
OverlayMode = Literal["flood", "controller", "evpn"]
OVERLAY_MODES: tuple[str, ...] = ("flood", "controller", "evpn")
Placement = Literal["kernel", "subnet", "physical"]
PLACEMENTS: tuple[str, ...] = ("kernel", "subnet", "physical")
TRAITS: tuple[str, ...] = ("delay-sensitive", "io-intensive")

# A segment's frames cross the underlay inside outer Ethernet (14) + IPv4 (20) + UDP (8) + VXLAN (8)
# headers: with the underlay's 1500-byte MTU left as it is, VM NICs on a segment get 50 bytes less
# so that no encapsulated frame needs fragmenting (the VTEP refuses fragments).
UNDERLAY_MTU = 1500
VXLAN_OVERHEAD = 50
SEGMENT_MTU = UNDERLAY_MTU - VXLAN_OVERHEAD


@dataclass(frozen=True)
class Route:
    to: IpNet
    via: IpAddr


@dataclass(frozen=True)
class Vlan:
    """A VLAN declared once in `vlans:` and referred to by name or id."""

    name: str
    id: int


@dataclass(frozen=True)
class PortProfile:
    """What VLANs a port carries: an access VLAN, or tagged VLANs plus untagged frames or not.

    `access` set: frames leave the port untagged and enter it into that VLAN.
    Otherwise the port is a trunk for `trunk` (tagged) and passes untagged frames iff `untagged`;
    a port with no VLAN at all (`trunk` empty, `untagged` true) is a plain, VLAN-unaware port.
    """

    access: int | None = None
    trunk: frozenset[int] = frozenset()
    untagged: bool = True

    @property
    def kind(self) -> Literal["access", "trunk", "untagged"]:
        if self.access is not None:
            return "access"
        return "trunk" if self.trunk else "untagged"

    def carries(self, vlan: int | None) -> bool:
        """Does a frame of `vlan` (None: untagged) cross this port?"""
        if self.access is not None:
            return vlan == self.access
        return self.untagged if vlan is None else vlan in self.trunk


UNTAGGED = PortProfile()


@dataclass(frozen=True)
class PNic:
    """A physical NIC of a hypervisor host, cabled to a port of a physical switch.

    With ``ip`` it is a routed interface of the host (the underlay of the overlay, never a vSwitch
    uplink); ``gateway`` and ``routes`` go into the host's routing table through it.
    """

    name: str
    switch: str
    driver: str
    pci_bus: str
    ip: IfAddr | None = None
    gateway: IpAddr | None = None
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class Team:
    """NIC teaming of a vSwitch's uplinks (NIST 3): the order of ``uplinks`` is the active-standby
    order. ``detection``: carrier (``link``) and/or ``beacon`` probes; an ``arp_target`` adds
    ARP probing through the active member. ``announce``: RARP frames per VM MAC after a failover."""

    policy: str = "active-standby"
    failback: bool = True
    detection: tuple[str, ...] = ("link",)
    beacon_interval_ms: int = 1000
    beacon_miss: int = 3
    arp_target: IpAddr | None = None
    announce: int = 3


@dataclass(frozen=True)
class VSwitch:
    """A virtual switch in a host; no uplink means an internal-only switch.

    A segment's vSwitch (``segment`` set, named ``sg-<vni>``) is not declared but made by the
    loader on every host with a VM NIC on the segment: its way out is the host's VXLAN device, not
    a pNIC, so it has no uplinks and is still not internal-only.
    """

    name: str
    uplinks: tuple[str, ...] = ()
    trunk: frozenset[int] | None = None  # declared VLANs of the uplink; None: those of its ports
    untagged: bool | None = None  # declared: uplink passes untagged frames; None: derived
    segment: str | None = None  # the overlay segment whose bridge this is
    team: Team | None = None  # several uplinks need one

    @property
    def internal_only(self) -> bool:
        return not self.uplinks and self.segment is None


@dataclass(frozen=True)
class VmkNic:
    """A hypervisor's own interface on one of its vSwitches (management, migration, storage...)."""

    name: str
    vswitch: str
    mac: str
    ip: IfAddr | None = None
    vlan: int | None = None

    @property
    def port(self) -> str:
        """The vSwitch port (bridge end of the veth) of this interface."""
        return f"{self.name}-br"


@dataclass(frozen=True)
class Host:
    name: str
    pnics: tuple[PNic, ...]
    vswitches: tuple[VSwitch, ...]
    vmknics: tuple[VmkNic, ...] = ()
    vtep: str | None = None  # the pNIC whose address is the host's VTEP
    machine: str | None = None  # the machine that builds this host (nlab up --machine)

    def vswitch(self, name: str) -> VSwitch:
        return next(v for v in self.vswitches if v.name == name)

    def pnic(self, name: str) -> PNic:
        return next(p for p in self.pnics if p.name == name)


@dataclass(frozen=True)
class Switch:
    """A physical (top-of-rack) switch; ports not in `ports` are plain, VLAN-unaware ports.
    ``links`` are the inter-switch links declared at this switch: (the other switch, the VLAN
    profile of both ends); the other switch does not declare them again."""

    name: str
    ports: tuple[tuple[str, PortProfile], ...] = ()  # (port name, profile) as declared
    links: tuple[tuple[str, PortProfile], ...] = ()

    def port_profile(self, port: str) -> PortProfile:
        return dict(self.ports).get(port, UNTAGGED)


@dataclass(frozen=True)
class SwitchLink:
    """One inter-switch link: a cable between port ``b`` of switch ``a`` and port ``a`` of switch
    ``b`` (a link port is named after the switch at its other end), ``a`` the switch that
    declares it."""

    a: str
    b: str
    profile: PortProfile

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"

    def ends(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """(switch, port) of both ends."""
        return (self.a, link_port(self.b)), (self.b, link_port(self.a))


@dataclass(frozen=True)
class Network:
    """An external network (e.g. the internet, the corporate LAN) as one node on a switch."""

    name: str
    switch: str
    ip: IfAddr | None = None
    gateway: IpAddr | None = None
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class ApplianceNic:
    """An interface of a physical firewall appliance, on an access port of its switch."""

    name: str  # eth0, eth1... inside the appliance
    vlan: int | None
    ip: IfAddr | None = None


@dataclass(frozen=True)
class Appliance:
    """A physical firewall on the physical network (NIST 4.1): nftables in its own namespace,
    routing between the VLANs of its NICs, each cabled to an access port of ``switch``. The
    traffic of VMs whose routes go through it leaves their host and comes back (hairpin)."""

    name: str
    switch: str
    nics: tuple[ApplianceNic, ...]
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class Segment:
    """A VXLAN segment (NIST 2.5): one layer-2 network of a tenant across hosts, VNI 1..16777215.
    ``mode`` says how the VTEPs learn where its MACs are (flood and learn, the lab's controller,
    or BGP EVPN)."""

    name: str
    vni: int
    tenant: str
    mode: OverlayMode = "controller"

    @property
    def bridge(self) -> str:
        """The name of the segment's vSwitch (a bridge) on each host that hosts it."""
        return segment_bridge(self.vni)


@dataclass(frozen=True)
class OverlaySettings:
    """Lab-wide overlay settings: the default mode of segments, the BGP AS number of EVPN, and
    the node (a router or a host) that reflects the EVPN routes of every VTEP."""

    mode: OverlayMode = "controller"
    asn: int = 65000
    route_reflector: str | None = None


@dataclass(frozen=True)
class RouterNic:
    """An interface of an underlay router, cabled to a port of a physical switch, or (``link``)
    the routed link to another machine's part: no switch of the lab, see topology/machines.py."""

    name: str
    switch: str  # "" on a link
    ip: IfAddr
    link: str | None = None
    wire: str | None = None  # the namespace a machine's part plugs the link into (nlab up --link)


@dataclass(frozen=True)
class Router:
    """An IP router of the underlay (a spine, a routed ToR): its own namespace, forwarding on."""

    name: str
    nics: tuple[RouterNic, ...]
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class Nic:
    index: int
    vswitch: str
    mac: str
    ip: IfAddr | None = None
    vlan: int | None = None
    vni: int | None = None
    segment: str | None = None  # the overlay segment; then vswitch is its sg-<vni> and vlan is None
    port_security: bool = True  # the VM sends only from its MAC and addresses
    allowed_addresses: tuple[IfAddr, ...] = ()  # more sources it may use (a VIP): /32, /128 or a prefix
    promiscuous: bool = False  # receives copies of its port group's frames (VM-TM-R2)
    dhcp_server: bool = False  # may send DHCP/DHCPv6 server messages (port security refuses them otherwise)

    @property
    def name(self) -> str:
        """The interface name inside the VM."""
        return f"eth{self.index}"

    @property
    def addresses(self) -> tuple[IfAddr, ...]:
        """Every source the NIC may send from: its own address first, then the allowed ones."""
        return (self.ip, *self.allowed_addresses) if self.ip is not None else self.allowed_addresses


@dataclass(frozen=True)
class Vm:
    name: str
    host: str
    nics: tuple[Nic, ...]
    role: Role = "none"
    gateway: IpAddr | None = None
    routes: tuple[Route, ...] = ()
    nftables: str | None = None  # hand-written ruleset of a firewall VM; None: the lab's policy
    tenant: str | None = None  # mirrors never copy a VM's frames to another tenant's VM
    traits: tuple[str, ...] = ()  # delay-sensitive, io-intensive (VM-FW-R1/R2)

    @property
    def forwards(self) -> bool:
        return self.role in ("firewall", "router")


@dataclass(frozen=True)
class SecurityGroup:
    """A named set of VM NICs: (vm, nic index), the index None standing for every NIC of the VM."""

    name: str
    members: tuple[tuple[str, int | None], ...] = ()


@dataclass(frozen=True)
class PeerSpec:
    """What a rule names: ``any`` address, a ``cidr`` (value: the prefix), a ``group`` (value: its
    name) or a ``vm`` (value: its name; ``nic``: one NIC's index, None for all of them)."""

    kind: PeerKind
    value: str | IpNet | None = None
    nic: int | None = None


@dataclass(frozen=True)
class FwRule:
    """One firewall rule. ``apply`` names groups and VMs (the NICs it filters); ``peers`` the other
    end. ``ports`` are inclusive ranges of destination ports (ICMP: of types); empty means all."""

    id: int
    apply: tuple[PeerSpec, ...]
    direction: Direction
    peers: tuple[PeerSpec, ...]
    proto: Proto
    ports: tuple[tuple[int, int], ...]
    action: Action
    priority: int = 100
    description: str = ""

    @property
    def precedence(self) -> tuple[int, int, int]:
        """Sort key of evaluation: lower priority first, deny before allow, then the id."""
        return self.priority, 0 if self.action == "deny" else 1, self.id


@dataclass(frozen=True)
class FirewallSettings:
    """The rules and the connection tracking of every NIC firewall; timeouts in seconds."""

    rules: tuple[FwRule, ...] = ()
    ct_quota: int = 4096  # connection entries of flows one VM opened
    tcp_timeout: int = 3600
    tcp_open_timeout: int = 60  # a TCP connection not established yet
    udp_timeout: int = 60
    icmp_timeout: int = 30
    frag_timeout: int = 10
    tcp_close_timeout: int = 10  # after a FIN or RST
    sweep_interval: int = 10  # between two sweeps of a host's connection table (netns_lab/lab/sweeper.py)
    ct_quota_in: int = 4096  # connection entries of flows opened towards one VM
    ct_quota_peer: int = 4096  # of those, entries of flows one peer opened (YAML default: ct_quota)
    placement: str = "kernel"  # where the rules of a VM are enforced: kernel, subnet or physical
    placements: tuple[tuple[str, str], ...] = ()  # (security group, placement) per tier


@dataclass(frozen=True)
class MirrorSource:
    """What a mirror session copies: a ``vm`` (``nic`` None: all its NICs), a port group (``vlan``:
    the VLAN id on ``vswitch`` (host, vSwitch), or on every vSwitch when None) or a security
    ``group``. Names, never ports: a session resolves them when it is installed."""

    kind: SourceKind
    name: str  # the VM, the VLAN's name (or id as text), or the group
    nic: int | None = None
    vlan: int | None = None
    vswitch: tuple[str, str] | None = None


@dataclass(frozen=True)
class MirrorSession:
    """A port-mirroring session (NIST 5): copies of the sources' frames to analyzer VM ``dest``."""

    name: str
    sources: tuple[MirrorSource, ...]
    dest: str | None  # the analyzer VM; None: ``uplink``
    direction: MirrorDirection = "both"
    tap: TapPoint = "before"
    snaplen: int = 0  # 0: whole frames
    sample: int = 1  # copy 1 frame in N
    uplink: str | None = None  # an analyzer on the physical network: a network, or HOST.PNIC
    vlan: int | None = None  # the mirror VLAN of copies that leave their host


@dataclass(frozen=True)
class MirrorPath:
    """How the copies of a session cross the physical network: out of a pNIC of each source
    host (``out``: host -> pNIC), through ``switch``, into ``into`` (host, pNIC) of the analyzer's
    host, or to network ``network``. Empty ``out``: every source is on the analyzer's host."""

    switch: str | None = None
    out: tuple[tuple[str, str], ...] = ()
    into: tuple[str, str] | None = None
    network: str | None = None


@dataclass(frozen=True)
class Topology:
    lab: str
    source: str
    hosts: tuple[Host, ...] = ()
    switches: tuple[Switch, ...] = ()
    networks: tuple[Network, ...] = ()
    vms: tuple[Vm, ...] = ()
    vlans: tuple[Vlan, ...] = ()
    description: str = ""
    security_groups: tuple[SecurityGroup, ...] = ()
    firewall: FirewallSettings = FirewallSettings()
    mirrors: tuple[MirrorSession, ...] = ()
    segments: tuple[Segment, ...] = ()
    routers: tuple[Router, ...] = ()
    appliances: tuple[Appliance, ...] = ()
    overlay: OverlaySettings = OverlaySettings()
    machines: tuple[str, ...] = ()  # declared machine names; hosts may name machines without them
    # one machine's part (topology/machines.py): the machine, and the whole lab it is part of
    machine: str | None = None
    whole: Topology | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def lab_wide(self) -> Topology:
        """The whole lab: every machine's nodes (itself unless it is one machine's part)."""
        return self.whole if self.whole is not None else self

    def renamed(self, lab: str) -> Topology:
        """The same topology under another prefix (``nlab up --name``)."""
        hosts = tuple(_remac_host(host, self.lab, lab) for host in self.hosts)
        return dataclasses.replace(
            self, lab=lab, hosts=hosts, vms=tuple(_remac(vm, self.lab, lab) for vm in self.vms)
        )

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def vm(self, name: str) -> Vm:
        return next(v for v in self.vms if v.name == name)

    def switch(self, name: str) -> Switch:
        return next(s for s in self.switches if s.name == name)

    def router(self, name: str) -> Router:
        return next(r for r in self.routers if r.name == name)

    # -- the physical network --------------------------------------------------------------------
    def switch_links(self) -> list[SwitchLink]:
        """Every inter-switch link once, in declaration order."""
        return [SwitchLink(s.name, peer, profile) for s in self.switches for peer, profile in s.links]

    def links_of(self, switch: str) -> list[tuple[str, SwitchLink]]:
        """(its port, the link) of every link of ``switch``."""
        return [(port, link) for link in self.switch_links() for node, port in link.ends() if node == switch]

    def reachable(self, switch: str, vlan: int | None) -> set[str]:
        """The switches frames of ``vlan`` (None: untagged) reach from ``switch`` over links
        that carry it, ``switch`` included."""
        seen, todo = {switch}, [switch]
        while todo:
            here = todo.pop()
            for _, link in self.links_of(here):
                there = link.b if link.a == here else link.a
                if link.profile.carries(vlan) and there not in seen:
                    seen.add(there)
                    todo.append(there)
        return seen

    # -- the overlay ---------------------------------------------------------------------------
    def segment(self, name: str) -> Segment:
        return next(s for s in self.segments if s.name == name)

    def vtep_ip(self, host: str) -> IPv4Address | None:
        """The host's VTEP address: the IPv4 address of its VTEP pNIC; None without a VTEP."""
        h = self.host(host)
        pnic = next((p for p in h.pnics if p.name == h.vtep), None)
        ip = pnic.ip.ip if pnic is not None and pnic.ip is not None else None
        return ip if isinstance(ip, IPv4Address) else None

    def segment_hosts(self, name: str) -> list[str]:
        """The hosts of a segment (those with a VM NIC on it), in the order of ``hosts``."""
        return self.segment_spans().get(name, [])

    def segment_spans(self) -> dict[str, list[str]]:
        """Segment name -> its hosts, in the order of ``hosts``, for every segment a NIC uses."""
        used: dict[str, set[str]] = {}
        for vm in self.vms:
            for nic in vm.nics:
                if nic.segment is not None:
                    used.setdefault(nic.segment, set()).add(vm.host)
        order = [h.name for h in self.hosts]
        return {name: [h for h in order if h in hosts] for name, hosts in used.items()}

    def host_segments(self, host: str) -> list[Segment]:
        """The segments a host hosts, by VNI."""
        used = {nic.segment for vm in self.vms if vm.host == host for nic in vm.nics}
        return sorted((s for s in self.segments if s.name in used), key=lambda s: s.vni)

    def nic_tenant(self, nic: Nic) -> str | None:
        """The tenant of a NIC's segment; None for a NIC on a VLAN or a plain vSwitch."""
        return self.segment(nic.segment).tenant if nic.segment is not None else None

    def machine_hosts(self, machine: str) -> list[str]:
        """The hosts a machine builds, in the order of ``hosts``."""
        return [h.name for h in self.hosts if h.machine == machine]

    def vlan_name(self, vid: int | None) -> str | None:
        return None if vid is None else next((v.name for v in self.vlans if v.id == vid), str(vid))

    def vswitch_ports(self, host: str, vswitch: str) -> list[tuple[str, int | None]]:
        """(port name, access VLAN or None) of every VM NIC and VMkernel NIC on a vSwitch."""
        ports = [
            (vm_port(vm.name, nic.index), nic.vlan)
            for vm in self.vms
            if vm.host == host
            for nic in vm.nics
            if nic.vswitch == vswitch
        ]
        ports += [(k.port, k.vlan) for k in self.host(host).vmknics if k.vswitch == vswitch]
        return ports

    def uplink_profile(self, host: str, vswitch: str) -> PortProfile:
        """The VLAN profile of a vSwitch's uplink: as declared, else what its ports need."""
        vs = self.host(host).vswitch(vswitch)
        vlans = [vlan for _, vlan in self.vswitch_ports(host, vswitch)]
        mirror = frozenset(v for up in vs.uplinks for v in self.mirror_vlans(host, up))
        trunk = vs.trunk if vs.trunk is not None else frozenset(v for v in vlans if v is not None) | mirror
        untagged = vs.untagged if vs.untagged is not None else (None in vlans or not trunk)
        return PortProfile(trunk=trunk, untagged=untagged)

    def node_names(self) -> list[str]:
        """Every node that becomes a namespace, in build order."""
        groups = (self.switches, self.routers, self.networks, self.appliances, self.hosts, self.vms)
        return [node.name for group in groups for node in group]

    # -- the NIC firewall ------------------------------------------------------------------------
    def group(self, name: str) -> SecurityGroup:
        return next(g for g in self.security_groups if g.name == name)

    def nics_of(self, spec: PeerSpec) -> list[tuple[Vm, Nic]]:
        """The NICs a group or VM spec stands for, each once, in the order they are named.

        Names the model does not hold (a group or VM left out of a topology that failed to load)
        stand for no NIC; ``any`` and CIDR specs have no NICs and raise ValueError.
        """
        if spec.kind == "group":
            group = next((g for g in self.security_groups if g.name == spec.value), None)
            members = group.members if group is not None else ()
        elif spec.kind == "vm":
            members = ((str(spec.value), spec.nic),)
        else:
            raise ValueError(f"a {spec.kind} peer stands for addresses, not NICs")
        vms = {vm.name: vm for vm in self.vms}
        found: dict[tuple[str, int], tuple[Vm, Nic]] = {}
        for name, index in members:
            vm = vms.get(name)
            for nic in vm.nics if vm is not None else ():
                if index is None or nic.index == index:
                    found.setdefault((name, nic.index), (vm, nic))
        return list(found.values())

    def firewalled_nics(self) -> set[tuple[str, int]]:
        """(vm, nic index) of every NIC some rule applies to: these deny by default, both ways."""
        return {
            (vm.name, nic.index)
            for rule in self.firewall.rules
            for spec in rule.apply
            for vm, nic in self.nics_of(spec)
        }

    def placement_of(self, vm: str) -> str:
        """Where the rules of `vm` are enforced: "kernel" (its vNIC ports), "subnet" (the firewall
        VMs provisioned from the lab's policy), "physical" (the appliances), or "none" when no rule
        applies to it. A tier's placement (its security group's) overrides the lab's default."""
        return self.placements().get(vm, "none")

    def placements(self) -> dict[str, str]:
        """`placement_of` for every VM, computed in one pass."""
        firewalled = {vm for vm, _ in self.firewalled_nics()}
        chosen = dict(self.firewall.placements)
        tier: dict[str, str] = {}
        for group in self.security_groups:  # the first tier named wins, as validation wants one
            for member, _ in group.members if group.name in chosen else ():
                tier.setdefault(member, chosen[group.name])
        return {
            vm.name: tier.get(vm.name, self.firewall.placement) if vm.name in firewalled else "none"
            for vm in self.vms
        }

    def policy_firewalls(self) -> list[Vm]:
        """The firewall VMs provisioned from the lab's policy (no hand-written ruleset)."""
        return [vm for vm in self.vms if vm.role == "firewall" and vm.nftables is None]

    def appliance(self, name: str) -> Appliance:
        return next(a for a in self.appliances if a.name == name)

    def rules_for(self, vm: str, nic_index: int) -> list[FwRule]:
        """The rules that apply to one NIC, in the order they are evaluated (``FwRule.precedence``)."""
        rules = [
            rule
            for rule in self.firewall.rules
            if any((v.name, n.index) == (vm, nic_index) for spec in rule.apply for v, n in self.nics_of(spec))
        ]
        return sorted(rules, key=lambda rule: rule.precedence)

    # -- port mirroring ------------------------------------------------------------------------
    def mirror_nics(self, source: MirrorSource) -> list[tuple[Vm, Nic]]:
        """The VM NICs a mirror source stands for, each once; names the model lacks stand for none."""
        if source.kind == "vm":
            return self.nics_of(PeerSpec("vm", source.name, source.nic))
        if source.kind == "group":
            return self.nics_of(PeerSpec("group", source.name))
        return [
            (vm, nic)
            for vm in self.vms
            for nic in vm.nics
            if nic.vlan == source.vlan
            and (source.vswitch is None or source.vswitch == (vm.host, nic.vswitch))
        ]

    def mirror_path(self, s: MirrorSession) -> MirrorPath | None:
        """The path of a session's encapsulated copies; None when no switch joins its hosts."""
        hosts = {vm.host for src in s.sources for vm, _ in self.mirror_nics(src)}
        if s.dest is not None:
            dest_host = next((vm.host for vm in self.vms if vm.name == s.dest), None)
            hosts.discard(dest_host)  # type: ignore[arg-type]
            if not hosts:
                return MirrorPath()
            for pnic in self._uplink_pnics(dest_host):
                out = [next(iter(self._uplink_pnics(h, pnic.switch)), None) for h in sorted(hosts)]
                if all(out):
                    pairs = tuple((h, p.name) for h, p in zip(sorted(hosts), out, strict=True) if p)
                    return MirrorPath(pnic.switch, pairs, (str(dest_host), pnic.name))
            return None
        uplink = str(s.uplink)
        if "." in uplink:
            host, pnic_name = uplink.split(".", 1)
            pnic = next((p for p in self._uplink_pnics(host) if p.name == pnic_name), None)
            return MirrorPath(pnic.switch, ((host, pnic.name),)) if pnic and hosts <= {host} else None
        network = next((n for n in self.networks if n.name == uplink), None)
        if network is None:
            return None
        out = [next(iter(self._uplink_pnics(h, network.switch)), None) for h in sorted(hosts)]
        if not all(out):
            return None
        pairs = tuple((h, p.name) for h, p in zip(sorted(hosts), out, strict=True) if p)
        return MirrorPath(network.switch, pairs, network=network.name)

    def _uplink_pnics(self, host: str | None, switch: str | None = None) -> list[PNic]:
        """A host's pNICs that are vSwitch uplinks (they run the dataplane), on `switch` if given,
        in the order of the vSwitches' uplinks: a team's first (active) member before its
        standby ones, which drop what is sent through them."""
        h = next((h for h in self.hosts if h.name == host), None)
        if h is None:
            return []
        pnics = {p.name: p for p in h.pnics}
        uplinks = dict.fromkeys(u for vs in h.vswitches for u in vs.uplinks if u in pnics)
        return [pnics[u] for u in uplinks if switch in (None, pnics[u].switch)]

    def mirror_vlans(self, host: str, pnic: str) -> frozenset[int]:
        """Mirror VLANs whose copies cross `pnic` of `host`."""
        found = set()
        for s in self.mirrors:
            path = self.mirror_path(s) if s.vlan is not None else None
            if path is not None and ((host, pnic) in path.out or path.into == (host, pnic)):
                found.add(s.vlan)
        return frozenset(found)  # type: ignore[arg-type]

    def port_group(self, vm: Vm, nic: Nic) -> list[tuple[Vm, Nic]]:
        """The other VM NICs of a NIC's port group: its VLAN (or untagged) on its vSwitch."""
        return [
            (other, o)
            for other in self.vms
            if other.host == vm.host
            for o in other.nics
            if o.vswitch == nic.vswitch
            and o.vlan == nic.vlan
            and (other.name, o.index) != (vm.name, nic.index)
        ]

    def groups_of(self, vm: str, nic_index: int) -> list[str]:
        """The security groups one NIC is a member of, in declaration order."""
        members = ((vm, None), (vm, nic_index))
        return [g.name for g in self.security_groups if any(m in g.members for m in members)]


def _remac(vm: Vm, old_lab: str, new_lab: str) -> Vm:
    """Derived MACs follow the lab name so that copies of a lab never share MACs."""
    nics = tuple(
        dataclasses.replace(nic, mac=default_mac(new_lab, vm.name, nic.index))
        if nic.mac == default_mac(old_lab, vm.name, nic.index)
        else nic
        for nic in vm.nics
    )
    return dataclasses.replace(vm, nics=nics)


def _remac_host(host: Host, old_lab: str, new_lab: str) -> Host:
    vmknics = tuple(
        dataclasses.replace(nic, mac=vmknic_mac(new_lab, host.name, nic.name))
        if nic.mac == vmknic_mac(old_lab, host.name, nic.name)
        else nic
        for nic in host.vmknics
    )
    return dataclasses.replace(host, vmknics=vmknics)
