"""Build a validated topology into namespaces, bridges and veth links; roll back on failure.

Building is a list of steps, one per node. Each step that creates a namespace journals it
first (see state.py) and registers its undo on an ExitStack, so a failure, Ctrl-C or SIGTERM
at step N undoes steps 1..N. Deleting a namespace takes its links with it: a veth pair dies
with either end, so namespaces are the only undo needed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dataplane.bpf import LoadError
from dataplane.switch import PortError, SwitchDataplane
from netns_lab import model, ports, teardown
from netns_lab.kernel import netlink, netns, nft
from netns_lab.kernel.netlink import Netlink
from netns_lab.model import Host, Network, Switch, Topology, Vm
from netns_lab.state import LabState, pin_dir

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


class BuildError(Exception):
    """A failure caused by the topology's content (e.g. a ruleset nft rejects): bad input."""

    def __init__(self, source: str, path: str, reason: str) -> None:
        super().__init__(f"{source}: {path}: {reason}")


@dataclass(frozen=True)
class Step:
    label: str
    run: Callable[[], None]


class Builder:
    def __init__(
        self, topo: Topology, state: LabState, progress: Progress | None = None, dataplane: bool = True
    ) -> None:
        self.topo = topo
        self.state = state
        self.progress = progress or (lambda done, total, label: None)
        self.dataplane = dataplane
        self._sockets: dict[str, Netlink] = {}
        self._dataplanes: dict[str, SwitchDataplane] = {}
        self._port_vlans = {
            **{h.name: {p.name: p.vlans for p in ports.host_ports(topo, h.name)} for h in topo.hosts},
            **{s.name: {p.name: p.vlans for p in ports.switch_ports(topo, s.name)} for s in topo.switches},
        }
        self._undo = contextlib.ExitStack()

    def build(self) -> None:
        steps = list(self.plan())
        try:
            with self._undo:
                for done, step in enumerate(steps):
                    self.progress(done, len(steps), step.label)
                    step.run()
                self._undo.pop_all()  # success: keep everything
            self.progress(len(steps), len(steps), "done")
        finally:
            for sock in self._sockets.values():
                sock.close()
            for dp in self._dataplanes.values():
                dp.close()  # TC filters and pins keep the programs and maps alive

    def plan(self) -> Iterator[Step]:
        t = self.topo
        for switch in t.switches:
            yield Step(f"switch {switch.name}", lambda s=switch: self._switch(s))
        for network in t.networks:
            yield Step(f"network {network.name}", lambda n=network: self._network(n))
        for host in t.hosts:
            yield Step(f"host {host.name}", lambda h=host: self._host(h))
        for vm in t.vms:
            yield Step(f"vm {vm.name}", lambda v=vm: self._vm(v))

    # -- helpers -------------------------------------------------------------------------------
    def ns(self, node: str) -> str:
        return model.namespace(self.topo.lab, node)

    def _namespace(self, node: str) -> Netlink:
        """Create the node's namespace (journaled first, undone on failure), loopback up."""
        name = self.ns(node)
        self.state.record_namespace(name)
        netns.create(name)
        self._undo.callback(netns.delete, name)
        nl = Netlink(name)
        nl.up("lo")
        return nl

    def _keep(self, node: str, nl: Netlink) -> Netlink:
        self._sockets[self.ns(node)] = nl
        return nl

    def _sock(self, node: str) -> Netlink:
        return self._sockets[self.ns(node)]

    def _switching(self, node: str) -> None:
        """A namespace that switches frames: no IPv6 chatter of its own, its own dataplane."""
        ns = self.ns(node)
        netlink.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
        netlink.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
        if not self.dataplane:
            return
        directory = pin_dir(self.topo.lab) / node
        try:
            self._dataplanes[node] = SwitchDataplane.load(directory)
        except LoadError as err:
            raise RuntimeError(f"{node}: {err}") from None

    def _attach(self, node: str, ifname: str) -> None:
        """Configure a port's VLAN policy, then attach its programs: never the other way round,
        since an unconfigured port drops everything (fail closed)."""
        dp = self._dataplanes.get(node)
        if dp is None:
            return
        nl = self._sock(node)
        ifindex = nl.index(ifname)
        try:
            dp.configure(ifindex, self._port_vlans[node][ifname])
        except PortError as err:
            raise RuntimeError(f"{node}: port {ifname}: {err}") from None
        dp.attach(nl.iproute(), ifindex)

    # -- steps ---------------------------------------------------------------------------------
    def _switch(self, switch: Switch) -> None:
        nl = self._keep(switch.name, self._namespace(switch.name))
        self._switching(switch.name)
        nl.bridge(model.SWITCH_BRIDGE)

    def _cable(self, switch: str, port: str, peer: str, peer_ns: str) -> None:
        """A cable from a new port of a physical switch to `peer` in `peer_ns`."""
        # Enslaved and up at creation: no carrier until the peer comes up, which happens only
        # after _attach, so no frame crosses an unfiltered port.
        self._sock(switch).veth(port, peer, peer_ns, master=model.SWITCH_BRIDGE, up=True)
        self._attach(switch, port)

    def _network(self, network: Network) -> None:
        with self._namespace(network.name) as nl:
            self._cable(
                network.switch, model.network_port(network.name), model.NETWORK_IFNAME, self.ns(network.name)
            )
            _configure_ip(nl, model.NETWORK_IFNAME, network.ip, network.gateway, network.routes)

    def _host(self, host: Host) -> None:
        nl = self._keep(host.name, self._namespace(host.name))
        self._switching(host.name)
        for pnic in host.pnics:
            self._cable(pnic.switch, model.switch_port(host.name, pnic.name), pnic.name, self.ns(host.name))
        for vswitch in host.vswitches:
            nl.bridge(vswitch.name)
            for uplink in vswitch.uplinks:
                self._attach(host.name, uplink)
                nl.enslave(uplink, vswitch.name)
        for pnic in host.pnics:
            nl.up(pnic.name)
        for vmknic in host.vmknics:
            self._vmknic(host, vmknic)

    def _vmknic(self, host: Host, vmknic: model.VmkNic) -> None:
        """The hypervisor's own interface: a veth inside the host, one end on the vSwitch."""
        nl = self._sock(host.name)
        nl.veth(vmknic.port, vmknic.name, self.ns(host.name), mac=vmknic.mac, master=vmknic.vswitch, up=True)
        self._attach(host.name, vmknic.port)
        if vmknic.ip is not None and vmknic.ip.version == 6:
            netlink.sysctl(self.ns(host.name), f"net.ipv6.conf.{vmknic.name}.disable_ipv6", "0")
        _configure_ip(nl, vmknic.name, vmknic.ip, None, ())

    def _vm(self, vm: Vm) -> None:
        ns = self.ns(vm.name)
        host = self._sock(vm.host)
        with self._namespace(vm.name) as nl:
            for nic in vm.nics:
                port = model.vm_port(vm.name, nic.index)
                host.veth(port, nic.name, ns, mac=nic.mac, master=nic.vswitch, up=True)
                self._attach(vm.host, port)
                _configure_ip(nl, nic.name, nic.ip, None, ())
            _configure_routes(nl, vm.gateway, vm.routes)
        if vm.forwards:
            netlink.sysctl(ns, "net.ipv4.ip_forward", "1")
            netlink.sysctl(ns, "net.ipv6.conf.all.forwarding", "1")
        if vm.nftables:
            try:
                nft.load(ns, vm.nftables)
            except nft.NftError as err:
                raise BuildError(
                    self.topo.source, f"vms.{vm.name}.nftables", f"nft rejected the ruleset: {err}"
                ) from None


def _configure_ip(
    nl: Netlink,
    ifname: str,
    ip: model.IfAddr | None,
    gateway: model.IpAddr | None,
    routes: tuple[model.Route, ...],
) -> None:
    nl.up(ifname)
    if ip is not None:
        nl.address(ifname, str(ip))
    _configure_routes(nl, gateway, routes)


def _configure_routes(nl: Netlink, gateway: model.IpAddr | None, routes: tuple[model.Route, ...]) -> None:
    for route in routes:
        nl.route(str(route.to), str(route.via))
    if gateway is not None:
        nl.route("default", str(gateway))


def up(
    topo: Topology, topology_text: str, progress: Progress | None = None, dataplane: bool = True
) -> LabState:
    """Build the lab; on any failure nothing of it remains (namespaces, journal, state, pins)."""
    state = LabState.begin(topo.lab, topo.source, topology_text)
    try:
        Builder(topo, state, progress, dataplane).build()
    except BaseException:
        teardown.down(topo.lab)  # the journal catches anything the undo stack missed
        raise
    state.mark_up()
    log.info("lab %s up: %d namespaces", topo.lab, len(state.namespaces()))
    return state
