"""The reachability a topology promises, computed from the model alone (pure, no kernel).

What this evaluator covers, for a probe from one VM to an address of another:
  - the source's choice of NIC and next hop (its connected subnets, routes, gateway), as the
    VM's kernel makes it;
  - layer 2 between that NIC and the target NIC: the same vSwitch of one host, or both
    vSwitches uplinked to the same physical switch with the VLAN carried by each host uplink's
    profile and each switch port's profile (access, trunk, untagged), or the same overlay segment;
  - the NIC firewall on both ports (security groups, rules, defaults: `dataplane.fwpolicy.evaluate`,
    the specification the kernel maps are compiled from), outbound at the source, inbound at the
    target; replies are taken as passed by connection tracking;
  - port security is not in question: probes are sent from the VM's own MAC and address.

What it leaves out, and says so (`scope` "outside" with the reason) rather than guessing:
  - paths through a router or firewall VM (their nftables decide: `nlab trace` evaluates those
    hop by hop on the live ruleset), unless a NIC firewall on an end already denies, which no
    router can undo;
  - a source or target VM with an nftables ruleset of its own (its input/output chains);
  - frames between different physical switches (inter-switch links).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from typing import Literal

from dataplane import fwpolicy
from netns_lab.features.firewall import plan as fwplan
from netns_lab.topology import names
from netns_lab.topology.model import Nic, PortProfile, Topology, Vm

Proto = Literal["tcp", "udp", "icmp"]
ECHO_REQUEST = 8  # the NIC firewall keys ICMP by message type in the port's place
DENIED_SAMPLE = 9  # discard: no rule of the reference lab names it
MAX_DENIED = 3  # ports just above allowed ranges: off-by-one edges of the compiled ranges


@dataclass(frozen=True)
class Probe:
    src: str  # VM name
    dst: str  # VM name
    dst_ip: str
    proto: Proto
    port: int | None  # None for ICMP echo


@dataclass(frozen=True)
class Expectation:
    verdict: Literal["allow", "deny"] | None  # None: outside the evaluator's scope
    why: str  # what decided (a rule, a default, no layer-2 path) or why it is out of scope

    @property
    def in_scope(self) -> bool:
        return self.verdict is not None


def probe_ports(topo: Topology) -> dict[str, list[int]]:
    """TCP and UDP ports to probe: both ends of every range a rule allows, then a sample of
    ports no rule allows (just above a range, and discard)."""
    ports: dict[str, list[int]] = {}
    for proto in ("tcp", "udp"):
        allowed: list[tuple[int, int]] = [
            r for rule in topo.firewall.rules if rule.proto == proto for r in rule.ports
        ]
        edges = sorted({p for lo, hi in allowed for p in (lo, hi)})
        covered = {p for lo, hi in allowed for p in range(lo, hi + 1)} if allowed else set()
        above = sorted({hi + 1 for _, hi in allowed if hi < 65535} - covered)[:MAX_DENIED]
        denied = [p for p in [*above, DENIED_SAMPLE] if p not in covered]
        ports[proto] = list(dict.fromkeys([*edges, *denied]))
    return ports


def probes(topo: Topology) -> list[Probe]:
    """Every ordered pair of VMs with an address, to each IPv4 address of the target, on every
    probe port of both protocols and with an ICMP echo (an address several tenants use: from
    the target's tenant only)."""
    ports = probe_ports(topo)
    found = []
    senders = [vm for vm in topo.vms if any(n.ip is not None and n.ip.version == 4 for n in vm.nics)]
    owners = Counter(n.ip.ip for vm in topo.vms for n in vm.nics if n.ip is not None)
    for src in senders:
        for dst in senders:
            if dst.name == src.name:
                continue
            for nic in dst.nics:
                if nic.ip is None or nic.ip.version != 4:
                    continue
                if owners[nic.ip.ip] > 1 and src.tenant != dst.tenant:
                    continue  # tenants reuse addresses: a packet to it reaches the source tenant's owner
                ip = str(nic.ip.ip)
                found += [Probe(src.name, dst.name, ip, "tcp", p) for p in ports["tcp"]]
                found += [Probe(src.name, dst.name, ip, "udp", p) for p in ports["udp"]]
                found.append(Probe(src.name, dst.name, ip, "icmp", None))
    return found


# -- layer 2 ---------------------------------------------------------------------------------------
BLOCKED = -1  # a VLAN a port does not carry


def _through(profile: PortProfile, tag: int | None) -> int | None:
    """The VLAN a frame carrying `tag` (None: untagged) is in past a port with `profile`,
    seen from the side where frames enter untagged into an access VLAN; BLOCKED if refused."""
    if profile.access is not None:
        return profile.access if tag is None else BLOCKED
    if tag is None:
        return None if profile.untagged else BLOCKED
    return tag if tag in profile.trunk else BLOCKED


def _on_switch(topo: Topology, vm: Vm, nic: Nic) -> dict[str, int | None]:
    """Physical switch -> the VLAN `nic`'s frames are in there (switches it cannot reach left out)."""
    host = topo.host(vm.host)
    vswitch = host.vswitch(nic.vswitch)
    # a team forwards through its active member only: the first, as the lab is built
    uplinks = vswitch.uplinks[:1] if vswitch.team is not None else vswitch.uplinks
    on_wire = _through(topo.uplink_profile(vm.host, nic.vswitch), nic.vlan)
    found: dict[str, int | None] = {}
    if on_wire == BLOCKED:
        return found
    for pnic in host.pnics:
        if pnic.name not in uplinks:
            continue
        port = names.switch_port(vm.host, pnic.name)
        vlan = _through(topo.switch(pnic.switch).port_profile(port), on_wire)
        if vlan != BLOCKED:
            found[pnic.switch] = vlan
    return found


def layer2(topo: Topology, a: tuple[Vm, Nic], b: tuple[Vm, Nic]) -> tuple[bool | None, str]:
    """Do `a` and `b` share a layer-2 network? (None: across switches, outside the scope.)"""
    (va, na), (vb, nb) = a, b
    if na.segment is not None or nb.segment is not None:
        same = na.segment == nb.segment
        return same, f"overlay segment {na.segment}" if same else "different overlay segments"
    if va.host == vb.host and na.vswitch == nb.vswitch:
        same = na.vlan == nb.vlan
        where = f"{va.host}.{na.vswitch}"
        return same, f"same vSwitch {where}" if same else f"different VLANs on {where}"
    sa, sb = _on_switch(topo, va, na), _on_switch(topo, vb, nb)
    if not sa or not sb:
        side = f"{va.name}.{na.name}" if not sa else f"{vb.name}.{nb.name}"
        why = "its VLAN reaches no switch (internal vSwitch, or uplink or switch port lacks it)"
        return False, f"{side}: {why}"
    shared = [s for s in sa if s in sb]
    if not shared:
        return None, f"on different physical switches ({', '.join(sa)} / {', '.join(sb)})"
    same = any(sa[s] == sb[s] for s in shared)
    return same, f"through switch {shared[0]}" if same else f"different VLANs on switch {shared[0]}"


# -- the NIC firewall ------------------------------------------------------------------------------
class Firewalls:
    """The compiled policy of each host, built once per evaluation."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.ids = fwplan.endpoint_ids(topo)
        self.firewalled = topo.firewalled_nics()
        self._policies: dict[str, fwpolicy.Policy] = {}

    def verdict(
        self, vm: Vm, nic: Nic, direction: str, peer: str, proto: Proto, port: int | None
    ) -> tuple[bool, str]:
        if (vm.name, nic.index) not in self.firewalled:
            return True, "no firewall"
        if vm.host not in self._policies:
            self._policies[vm.host] = fwplan.host_policy(self.topo, vm.host)
        number = ECHO_REQUEST if proto == "icmp" else port or 0
        v = fwpolicy.evaluate(
            self._policies[vm.host], self.ids[(vm.name, nic.index)], direction, peer, proto, number
        )
        decided = f"rule {v.rule_id}" if v.rule_id is not None else "default"
        return v.allowed, f"{vm.name}.{nic.name} {direction}: {v.action} by {decided}"


# -- the verdict of one probe ----------------------------------------------------------------------
def route(vm: Vm, dst: IPv4Address) -> tuple[Nic, IPv4Address] | None:
    """The NIC `vm` sends a packet for `dst` from, and the next hop, as its kernel would."""
    for nic in vm.nics:
        if nic.ip is not None and dst in nic.ip.network:
            return nic, dst
    for route in vm.routes:
        if dst in route.to:
            return _via(vm, route.via)
    if vm.gateway is not None:
        return _via(vm, vm.gateway)
    return None


def _via(vm: Vm, gateway: object) -> tuple[Nic, IPv4Address] | None:
    nic = next((n for n in vm.nics if n.ip is not None and gateway in n.ip.network), None)
    return (nic, gateway) if nic is not None else None  # type: ignore[return-value]


def _owner(topo: Topology, ip: IPv4Address) -> tuple[Vm, Nic] | None:
    for vm in topo.vms:
        for nic in vm.nics:
            if nic.ip is not None and nic.ip.ip == ip:
                return vm, nic
    return None


def expect(topo: Topology, p: Probe, fws: Firewalls | None = None) -> Expectation:
    fws = fws or Firewalls(topo)
    src, dst = topo.vm(p.src), topo.vm(p.dst)
    ip = ip_address(p.dst_ip)
    target = next(n for n in dst.nics if n.ip is not None and n.ip.ip == ip)
    found = route(src, ip)  # type: ignore[arg-type]
    if found is None:
        return Expectation("deny", f"{src.name} has no route to {ip}")
    out, hop = found
    assert out.ip is not None
    ok, why_out = fws.verdict(src, out, "out", p.dst_ip, p.proto, p.port)
    if not ok:
        return Expectation("deny", why_out)
    ok, why_in = fws.verdict(dst, target, "in", str(out.ip.ip), p.proto, p.port)
    if not ok:
        return Expectation("deny", why_in)
    if hop != ip:
        via = _owner(topo, hop)
        name = via[0].name if via else str(hop)
        return Expectation(None, f"routed through {name} (its nftables decide: see nlab trace)")
    for vm in (src, dst):
        if vm.nftables:
            return Expectation(None, f"{vm.name} runs an nftables ruleset of its own")
    connected, why_l2 = layer2(topo, (src, out), (dst, target))
    if connected is None:
        return Expectation(None, why_l2)
    if not connected:
        return Expectation("deny", f"no layer-2 path: {why_l2}")
    return Expectation("allow", f"{why_l2}; {why_out}; {why_in}")
