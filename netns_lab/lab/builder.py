"""Build a validated topology into namespaces, bridges and veth links; roll back on failure.

Building is a list of steps, one per node. The builder makes the nodes and their links; what a
capability puts on them (VLAN policy, firewall, mirror sessions, lab processes) comes from the
features (`netns_lab.features`), whose hooks each step calls in the registry's order.

Each step that creates a namespace journals it first (see state.py) and registers its undo on
an ExitStack, so a failure, Ctrl-C or SIGTERM at step N undoes steps 1..N. Deleting a namespace
takes its links with it: a veth pair dies with either end, so namespaces are the only undo needed.

The dataplanes of the switching nodes are compiled in a background thread from the start
(`Loads`), while the steps make namespaces and links; a step waits only for its own node's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dataplane import private, tc
from dataplane.bpf import LoadError
from dataplane.switch import SwitchDataplane
from netns_lab.features.registry import FEATURES
from netns_lab.kernel import netlink, netns, nft
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab import eventhub, teardown
from netns_lab.lab.state import LabState, code_file, pin_dir
from netns_lab.topology import model, names
from netns_lab.topology.model import Appliance, Host, Network, Router, Switch, SwitchLink, Topology, Vm

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
T = TypeVar("T")


class BuildError(Exception):
    """A failure caused by the topology's content (e.g. a ruleset nft rejects): bad input."""

    def __init__(self, source: str, path: str, reason: str) -> None:
        super().__init__(f"{source}: {path}: {reason}")


@dataclass(frozen=True)
class Step:
    label: str
    run: Callable[[], None]


class Loads:
    """The dataplanes of a lab's switching nodes, compiled and pinned one after the other in a
    background thread, in the order the build needs them.

    bcc compiles in C with the GIL released, so compiling overlaps the builder's own work.
    One thread only: bcc is not safe for concurrent compiles in one process (iovisor/bcc#4500).
    """

    def __init__(self, pins: Path, nodes: list[tuple[str, bool]]) -> None:
        """`nodes`: (name, has VM ports) in build order. Each kind is compiled once; the other
        nodes of that kind get the same programs with maps of their own (`SwitchDataplane.load`
        with `like`), a tenth of the time."""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlab-compile")
        self._futures: dict[str, Future[SwitchDataplane]] = {}
        first: dict[bool, Future[SwitchDataplane]] = {}
        for node, vm_ports in nodes:
            like = first.get(vm_ports)
            self._futures[node] = self._pool.submit(self._load, pins / node, vm_ports, like)
            first.setdefault(vm_ports, self._futures[node])

    @staticmethod
    def _load(pin: Path, vm_ports: bool, like: Future[SwitchDataplane] | None) -> SwitchDataplane:
        # the pool has one thread: `like` was submitted before, so it is done (or failed)
        return SwitchDataplane.load(pin, vm_ports, like.result() if like is not None else None)

    def ready(self, node: str) -> bool:
        return self._futures[node].done()

    def get(self, node: str) -> SwitchDataplane:
        """`node`'s dataplane, once compiled (LoadError if it could not be)."""
        return self._futures[node].result()

    def close(self) -> None:
        """Cancel the loads not started, wait for the one under way, close every loaded object.

        Closing drops only our file descriptors: TC filters and pins keep the programs and maps
        of a built lab alive; a failed build's pins go with the lab's pin directory (teardown),
        which is why no load may still be running when this returns.
        """
        interrupted: KeyboardInterrupt | None = None
        while True:
            try:
                self._pool.shutdown(wait=True, cancel_futures=True)
                break
            except KeyboardInterrupt as err:  # another Ctrl-C or SIGTERM: a compile cannot be cut short
                interrupted = err
        for future in self._futures.values():
            if not future.cancelled() and future.exception() is None:
                future.result().close()
        if interrupted is not None:
            raise interrupted


class Builder:
    def __init__(
        self, topo: Topology, state: LabState, progress: Progress | None = None, dataplane: bool = True
    ) -> None:
        self.topo = topo
        self.state = state
        self.progress = progress or (lambda done, total, label: None)
        self.with_dataplanes = dataplane
        self._sockets: dict[str, Netlink] = {}
        self._loads: Loads | None = None
        self._dataplanes: dict[str, SwitchDataplane] = {}
        self._at = (0, 0, "")  # the step under way, for progress while waiting for a compile
        self.undo = contextlib.ExitStack()
        # VM ports by interface name (names are unique within a host namespace)
        self._vnics = {names.vm_port(vm.name, nic.index): (vm, nic) for vm in topo.vms for nic in vm.nics}
        self._hosts = {h.name for h in topo.hosts}
        self._memo: dict[str, Any] = {}

    def build(self) -> None:
        steps = list(self.plan())
        try:
            if self.with_dataplanes:
                switching = [
                    *((s.name, False) for s in self.topo.switches),
                    *((h.name, True) for h in self.topo.hosts),
                ]
                self._loads = Loads(pin_dir(self.topo.lab), switching)  # in the order of the steps
            with self.undo:
                for done, step in enumerate(steps):
                    self._at = (done, len(steps), step.label)
                    self.progress(*self._at)
                    step.run()
                self.undo.pop_all()  # success: keep everything
            self.progress(len(steps), len(steps), "done")
        finally:
            for sock in self._sockets.values():
                sock.close()
            if self._loads is not None:
                self._loads.close()

    def plan(self) -> Iterator[Step]:
        """Switches and the links between them, underlay routers, networks, then each host
        followed by its VMs: a host's VMs are built while the next host's dataplane compiles,
        instead of every VM waiting for the last compile."""
        t = self.topo
        for switch in t.switches:
            yield Step(f"switch {switch.name}", lambda s=switch: self._switch(s))
        for link in t.switch_links():
            yield Step(f"link {link.name}", lambda k=link: self._link(k))
        for router in t.routers:
            yield Step(f"router {router.name}", lambda r=router: self._router(r))
        for network in t.networks:
            yield Step(f"network {network.name}", lambda n=network: self._network(n))
        for appliance in t.appliances:
            yield Step(f"appliance {appliance.name}", lambda a=appliance: self._appliance(a))
        for host in t.hosts:
            yield Step(f"host {host.name}", lambda h=host: self._host(h))
            for vm in (vm for vm in t.vms if vm.host == host.name):
                yield Step(f"vm {vm.name}", lambda v=vm: self._vm(v))
            yield Step(f"features {host.name}", lambda h=host: self._each("host_built", h))
        yield Step("lab features", lambda: self._each("lab_built"))
        if self.with_dataplanes and t.hosts:
            yield Step("event hub", self._event_hub)

    def _each(self, hook: str, *args: Any) -> None:
        for feature in FEATURES:
            getattr(feature, hook)(self, *args)

    # -- what a feature may use (features.base.BuildContext) ------------------------------------
    def dataplane(self, node: str) -> SwitchDataplane | None:
        return self._dataplanes.get(node)

    def vnic(self, node: str, ifname: str) -> tuple[Vm, model.Nic] | None:
        return self._vnics.get(ifname) if node in self._hosts else None

    def memo(self, key: str, make: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def sock(self, node: str) -> Netlink:
        return self._sockets[self.ns(node)]

    def attach(self, node: str, ifname: str) -> None:
        """A port a feature made on a switching node (e.g. a segment's VXLAN device), not yet
        enslaved nor up: configured by every feature, then its programs attached."""
        self._attach(node, ifname)

    def _event_hub(self) -> None:
        """The one reader of every host's events (see eventhub.py), once all are loaded; in the
        first host's namespace, so teardown ends it with the lab's other processes."""
        proc = eventhub.start(self.topo.lab, self.ns(self.topo.hosts[0].name))
        self.undo.callback(eventhub.stop, proc)
        eventhub.wait_ready(self.topo.lab, proc)

    # -- helpers -------------------------------------------------------------------------------
    def ns(self, node: str) -> str:
        return names.namespace(self.topo.lab, node)

    def _namespace(self, node: str) -> Netlink:
        """Create the node's namespace (journaled first, undone on failure), loopback up."""
        name = self.ns(node)
        self.state.record_namespace(name)
        netns.create(name)
        self.undo.callback(netns.delete, name)
        nl = Netlink(name)
        nl.up("lo")
        return nl

    def _keep(self, node: str, nl: Netlink) -> Netlink:
        self._sockets[self.ns(node)] = nl
        return nl

    def _switching(self, node: str) -> None:
        """A namespace that switches frames: no IPv6 chatter of its own, its own dataplane."""
        ns = self.ns(node)
        netlink.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
        netlink.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
        # the bridges would otherwise report their link-local IPv4 groups (IGMP) into every port
        netlink.sysctl(ns, "net.ipv4.igmp_link_local_mcast_reports", "0")
        if self._loads is None:
            return
        if not self._loads.ready(node):
            done, total, label = self._at
            self.progress(done, total, f"{label}: compiling")
        try:
            self._dataplanes[node] = self._loads.get(node)
        except LoadError as err:
            raise RuntimeError(f"{node}: {err}") from None
        private.save_code(self._dataplanes[node], code_file(self.topo.lab, node))
        if node in self._hosts:
            self._each("host_loaded", self.topo.host(node))

    def _attach(self, node: str, ifname: str) -> None:
        """Let every feature configure the port (its VLAN policy first), then attach its programs:
        never the other way round, since an unconfigured port drops everything (fail closed)."""
        dp = self._dataplanes.get(node)
        if dp is None:
            return
        nl = self.sock(node)
        ifindex = nl.index(ifname)
        for feature in FEATURES:
            feature.port(self, node, ifindex, ifname)
        try:
            dp.attach(nl.tc_socket(), ifindex, vm=self.vnic(node, ifname) is not None)
        except tc.TcError as err:
            raise tc.TcError(err.errno, f"{node}: port {ifname}: {err.strerror}") from None

    # -- steps ---------------------------------------------------------------------------------
    def _switch(self, switch: Switch) -> None:
        nl = self._keep(switch.name, self._namespace(switch.name))
        self._switching(switch.name)
        nl.bridge(names.SWITCH_BRIDGE)

    def _cable(self, switch: str, port: str, peer: str, peer_ns: str) -> None:
        """A cable from a new port of a physical switch to `peer` in `peer_ns`."""
        # Enslaved and up at creation: no carrier until the peer comes up, which happens only
        # after _attach, so no frame crosses an unfiltered port.
        self.sock(switch).veth(port, peer, peer_ns, master=names.SWITCH_BRIDGE, up=True)
        self._attach(switch, port)

    def _link(self, link: SwitchLink) -> None:
        """An inter-switch link: one cable between two switches, each end configured and gated
        by its switch's programs before the cable gets its carrier (the far end comes up last).
        Before any host exists: a team spanning the two switches finds the loop already cabled
        and its standby member keeps it open from its first frame."""
        (a, port_a), (b, port_b) = link.ends()
        self.sock(a).veth(port_a, port_b, self.ns(b), master=names.SWITCH_BRIDGE, up=True)
        self._attach(a, port_a)
        far = self.sock(b)
        far.enslave(port_b, names.SWITCH_BRIDGE)
        self._attach(b, port_b)
        far.up(port_b)

    def _network(self, network: Network) -> None:
        with self._namespace(network.name) as nl:
            self._cable(
                network.switch, names.network_port(network.name), names.NETWORK_IFNAME, self.ns(network.name)
            )
            _configure_ip(nl, names.NETWORK_IFNAME, network.ip, network.gateway, network.routes)

    def _router(self, router: Router) -> None:
        """An IP router of the underlay: each NIC cabled to its switch like a network's port."""
        ns = self.ns(router.name)
        with self._namespace(router.name) as nl:
            netlink.sysctl(ns, "net.ipv4.ip_forward", "1")
            for nic in router.nics:
                if nic.wire is not None:
                    _plug(nic.wire, names.router_port(router.name, nic.name), nic.name, ns)
                else:
                    self._cable(nic.switch, names.router_port(router.name, nic.name), nic.name, ns)
                _configure_ip(nl, nic.name, nic.ip, None, ())
            _configure_routes(nl, None, router.routes)

    def _appliance(self, appliance: Appliance) -> None:
        """A physical firewall: an access port of its switch per NIC, forwarding on. Its ruleset
        comes from the placement feature once every node exists, before the lab is up."""
        ns = self.ns(appliance.name)
        with self._namespace(appliance.name) as nl:
            netlink.sysctl(ns, "net.ipv4.ip_forward", "1")
            netlink.sysctl(ns, "net.ipv6.conf.all.forwarding", "1")
            for nic in appliance.nics:
                self._cable(appliance.switch, names.appliance_port(appliance.name, nic.name), nic.name, ns)
                _configure_ip(nl, nic.name, nic.ip, None, ())
            _configure_routes(nl, None, appliance.routes)

    def _host(self, host: Host) -> None:
        nl = self._keep(host.name, self._namespace(host.name))
        self._switching(host.name)
        for pnic in host.pnics:
            self._cable(pnic.switch, names.switch_port(host.name, pnic.name), pnic.name, self.ns(host.name))
        for vswitch in host.vswitches:
            nl.bridge(vswitch.name)
            for uplink in vswitch.uplinks:
                self._attach(host.name, uplink)
                nl.enslave(uplink, vswitch.name)
        for pnic in host.pnics:
            # a routed pNIC (the underlay of the overlay) is the host's own interface, no port
            _configure_ip(nl, pnic.name, pnic.ip, pnic.gateway, pnic.routes)
        for vmknic in host.vmknics:
            self._vmknic(host, vmknic)
        self._each("host_wired", host)

    def _vmknic(self, host: Host, vmknic: model.VmkNic) -> None:
        """The hypervisor's own interface: a veth inside the host, one end on the vSwitch."""
        nl = self.sock(host.name)
        nl.veth(vmknic.port, vmknic.name, self.ns(host.name), mac=vmknic.mac, master=vmknic.vswitch, up=True)
        self._attach(host.name, vmknic.port)
        if vmknic.ip is not None and vmknic.ip.version == 6:
            netlink.sysctl(self.ns(host.name), f"net.ipv6.conf.{vmknic.name}.disable_ipv6", "0")
        _configure_ip(nl, vmknic.name, vmknic.ip, None, ())

    def _vm(self, vm: Vm) -> None:
        ns = self.ns(vm.name)
        host = self.sock(vm.host)
        with self._namespace(vm.name) as nl:
            if vm.role == "analyzer":
                # receive-only: its own kernel's IPv6 chatter (DAD, router solicitations, MLD)
                # would only be dropped and counted at its port
                netlink.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
                netlink.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
            for nic in vm.nics:
                port = names.vm_port(vm.name, nic.index)
                host.veth(port, nic.name, ns, mac=nic.mac, master=nic.vswitch, up=True)
                self._attach(vm.host, port)
                if nic.segment is not None:  # its frames cross the underlay inside VXLAN
                    nl.iproute().link("set", index=nl.index(nic.name), mtu=model.SEGMENT_MTU)
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


def _plug(wire: str, port: str, peer: str, peer_ns: str) -> None:
    """The routed link to another machine's part (topology/machines.py): a cable from the
    wire's bridge, in a namespace this lab does not own, to `peer` in `peer_ns`. The port goes
    with `peer_ns`, so the wire keeps nothing of the lab after its teardown."""
    if not netns.exists(wire):
        raise RuntimeError(f"link: no namespace {wire!r} to plug {peer_ns}'s {peer} into")
    with Netlink(wire) as nl:
        nl.veth(port, peer, peer_ns, master=names.SWITCH_BRIDGE, up=True)


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
    topo: Topology,
    topology_text: str,
    progress: Progress | None = None,
    claimed: Callable[[LabState], None] | None = None,
    dataplane: bool = True,
) -> LabState:
    """Build the lab; on any failure nothing of it remains (namespaces, journal, state, pins).
    `claimed` is told the new state before the first step (e.g. to record more of the lab)."""
    state = LabState.begin(topo.lab, topo.source, topology_text)
    try:
        if claimed is not None:
            claimed(state)
        Builder(topo, state, progress, dataplane).build()
    except BaseException:
        teardown.down(topo.lab)  # the journal catches anything the undo stack missed
        raise
    state.mark_up()
    log.info("lab %s up: %d namespaces", topo.lab, len(state.namespaces()))
    return state
