"""A VM migrated between the hosts of a running lab: its namespace (its TCP/IP state, as memory
would be copied) stays; the host end of each of its veths moves to the target host's vSwitch.

Phases, each one event (`events.py`) and each undone if a later one fails:

    check      the plan (refusals), the changed topology validated; nothing touched yet
    rules      the target's firewall policy gets the VM's endpoints (the VM still runs on the source)
    mirror     the host end of each NIC moves into the target (down: no carrier, no programs),
               then one RunningLab transaction: the VM's vNIC settings (port security), mirror
               sessions and promiscuous groups on the target, the overlay's tables, the model
    conntrack  the VM's connection entries copied into the target's table with their quota shares
    port       VLAN policy of the port and the uplinks, programs attached, enslaved, then up
    announce   gratuitous ARP (RARP for a NIC without IPv4) from the VM's own NICs on the new path
    cleanup    the source's connection entries, vNIC and VLAN entries of the gone port
    done | rolled-back

The port carries no frame before its programs are attached and configured (fail closed): it
arrives down, and comes up last. The source loses the port at `mirror`, so the copied entries are
those the source had when it stopped. Until `cleanup` starts, a failure (or an injected one:
$NLAB_MIGRATE_FAIL_AT=PHASE) undoes every phase done, newest first: the port goes back to the
source and is wired again as it was, the model and the target's policy as they were. Cleanup is
the commit point: what it fails to remove is reported, the VM runs on the target.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dataplane import abi, fwpolicy, syscalls
from netns_lab.features.firewall import plan as fwplan
from netns_lab.features.migration import conntrack, events
from netns_lab.features.migration.plan import NicMove, Plan, plan
from netns_lab.features.mirror import live as mirror_live
from netns_lab.features.mirror import plan as mirror_plan
from netns_lab.features.team import frames
from netns_lab.features.vlan import plan as vlan_plan
from netns_lab.kernel import netns
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.running import HostPlane, RunningLab
from netns_lab.topology import names
from netns_lab.topology.model import Topology

log = logging.getLogger(__name__)

FAIL_ENV = "NLAB_MIGRATE_FAIL_AT"
PHASES = ("check", "rules", "mirror", "conntrack", "port", "announce", "cleanup")
ANNOUNCE = 3  # frames per NIC, as a team failover announces


class Failed(Exception):
    """The migration failed at `phase` and was rolled back (the VM runs on the source)."""

    def __init__(self, phase: str, cause: BaseException, report: dict[str, Any]) -> None:
        super().__init__(
            f"failed at phase {phase}: {cause}; rolled back, {report['vm']} runs on {report['from']}"
        )
        self.phase, self.cause, self.report = phase, cause, report


@dataclass
class Migration:
    live: RunningLab
    plan: Plan
    emit: Callable[[dict[str, Any]], None] = lambda record: None
    phases: list[dict[str, Any]] = field(default_factory=list)
    undo: list[Callable[[], None]] = field(default_factory=list)
    copied: list[abi.CtKey] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Every phase in order (see the module's docstring); the report of `nlab migrate`."""
        old_topo, old_text = self.live.topo, self.live.text
        self.old = old_topo
        t0 = time.monotonic()
        steps: list[tuple[str, Callable[[], None]]] = [
            ("rules", self._rules),
            ("mirror", lambda: self._move_and_install(old_topo, old_text)),
            ("conntrack", self._conntrack),
            ("port", self._port),
            ("announce", self._announce),
        ]
        self.new, self.new_text = self._timed("check", self._check)
        for phase, step in steps:
            try:
                self._timed(phase, step)
            except BaseException as err:
                self._roll_back(phase, err, old_topo, old_text)
                raise Failed(phase, err, self.report()) from err
        self._timed("cleanup", self._cleanup)
        self._event("done", (time.monotonic() - t0) * 1000)
        return self.report()

    def report(self) -> dict[str, Any]:
        return {
            "lab": self.live.lab,
            **self.plan.doc(),
            "phases": [{"phase": r["phase"], "ms": r["ms"]} for r in self.phases],
            "downtime_ms": self._downtime(),
            "connections": {"copied": len(self.copied)},
            "problems": list(self.problems),
        }

    def _downtime(self) -> float | None:
        """From the move (start of `mirror`) until the port is up (end of `port`)."""
        ms = {r["phase"]: r["ms"] for r in self.phases}
        if "port" not in ms:
            return None
        return round(sum(ms[p] for p in ("mirror", "conntrack", "port")), 3)

    def _timed(self, phase: str, step: Callable[[], Any]) -> Any:
        if os.environ.get(FAIL_ENV) == phase:
            raise RuntimeError(f"injected failure at phase {phase} (${FAIL_ENV})")
        t = time.monotonic()
        result = step()
        self._event(phase, (time.monotonic() - t) * 1000)
        return result

    def _event(self, phase: str, ms: float) -> None:
        p = self.plan
        record = events.record(p.lab, p.vm, p.source, p.target, phase, ms)
        self.phases.append(record)
        events.append(p.lab, record)
        self.emit(record)

    def _host(self, name: str) -> HostPlane:
        return next(h for h in self.live.hosts if h.host == name)

    # -- phases --------------------------------------------------------------------------------
    def _check(self) -> tuple[Topology, str]:
        for move in self.plan.nics:
            if move.port not in self._host(self.plan.source).ifindexes:
                raise RuntimeError(
                    f"{self.plan.source} has no port {move.port} (is the lab as its state says?)"
                )
        return self.live.prepare(self.plan.edit)

    def _rules(self) -> None:
        """The VM's endpoints into the target's policy, before anything of it moves."""
        target = self._host(self.plan.target)
        live = fwpolicy.compile(fwplan.host_policy(self.live.topo, target.host))
        staged = fwpolicy.compile(fwplan.host_policy(self.new, target.host), prev=live)
        if staged == live:
            return
        target.fw.install(staged, previous=live)
        self.undo.append(
            lambda: target.fw.install(fwpolicy.compile(fwplan.host_policy(self.old, target.host)))
        )

    def _move_and_install(self, old_topo: Topology, old_text: str) -> None:
        source, target = self._host(self.plan.source), self._host(self.plan.target)
        for move in self.plan.nics:
            _move_link(self.live.lab, move.port, source.host, target.host)
            self.undo.append(lambda m=move: self._back(m, old_topo))
        target.ifindexes = _ifindexes(self.live.lab, target.host)
        self.live.apply(self.new, self.new_text)
        self.undo.append(lambda: self.live.apply(old_topo, old_text))

    def _conntrack(self) -> None:
        source, target = self._host(self.plan.source), self._host(self.plan.target)
        items = conntrack.entries(source.fw, self.plan.endpoints)
        self.copied = conntrack.adopt(target.fw, items)
        self.undo.append(lambda: conntrack.forget(target.fw, self.copied))

    def _port(self) -> None:
        target = self._host(self.plan.target)
        _uplinks(target, self.new)
        self.undo.append(lambda: _uplinks(target, self.old))
        for move in self.plan.nics:
            _wire(self.live.lab, target, self.new, self.plan.vm, move, move.vswitch_to)

    def _announce(self) -> None:
        vm = self.new.vm(self.plan.vm)
        ns = names.namespace(self.live.lab, vm.name)
        for nic in vm.nics:
            ip4 = nic.ip.ip if nic.ip is not None and nic.ip.version == 4 else None
            frame = frames.arp_probe(nic.mac, ip4, ip4) if ip4 is not None else frames.rarp(nic.mac)
            with contextlib.closing(_raw_socket(ns, nic.name)) as sock:
                for _ in range(ANNOUNCE):
                    sock.send(frame)

    def _cleanup(self) -> None:
        """The source's share of the VM: connection entries, the gone port's vNIC and VLAN
        entries, uplink profiles without its VLANs. Each part tried; what fails is reported."""
        source = self._host(self.plan.source)
        parts: list[tuple[str, Callable[[], None]]] = [
            (
                "connections",
                lambda: conntrack.forget(
                    source.fw, [k for k, _ in conntrack.entries(source.fw, self.plan.endpoints)]
                ),
            ),
            ("uplinks", lambda: _uplinks(source, self.new)),
        ]
        for move in self.plan.nics:
            old = source.ifindexes.get(move.port)
            if old is not None:
                parts.append((f"port {move.port}", lambda i=old: _forget_port(source, i)))
        for what, part in parts:
            try:
                part()
            except Exception as err:  # the VM runs on the target: say what the source still holds
                self.problems.append(f"{self.plan.source}: {what} not cleaned: {err}")
                log.exception("%s: cleanup of %s", self.plan.source, what)

    # -- rollback ------------------------------------------------------------------------------
    def _roll_back(self, phase: str, err: BaseException, old_topo: Topology, old_text: str) -> None:
        log.error(
            "%s: migration of %s failed at %s: %s; rolling back", self.live.lab, self.plan.vm, phase, err
        )
        t = time.monotonic()
        for undo in reversed(self.undo):
            try:
                undo()
            except Exception:
                log.exception("%s: a rollback step failed", self.live.lab)
        self.undo = []
        self._event("rolled-back", (time.monotonic() - t) * 1000)

    def _back(self, move: NicMove, old_topo: Topology) -> None:
        """The port back on the source, wired as the old topology says."""
        source, target = self._host(self.plan.source), self._host(self.plan.target)
        if _link_in(self.live.lab, target.host, move.port):
            _move_link(self.live.lab, move.port, target.host, source.host)
        source.ifindexes = _ifindexes(self.live.lab, source.host)
        target.ifindexes = _ifindexes(self.live.lab, target.host)
        _wire(self.live.lab, source, old_topo, self.plan.vm, move, move.vswitch_from)


# -- the kernel side ---------------------------------------------------------------------------
def _ifindexes(lab: str, host: str) -> dict[str, int]:
    with Netlink(names.namespace(lab, host)) as nl:
        return {link.name: link.index for link in nl.links()}


def _link_in(lab: str, host: str, ifname: str) -> bool:
    return ifname in _ifindexes(lab, host)


def _move_link(lab: str, ifname: str, src: str, dst: str) -> None:
    """Move `ifname` from host `src`'s namespace into `dst`'s. The kernel takes it down, out of
    its bridge and its clsact qdisc (and so its programs) away on the way."""
    fd = os.open(netns.path(names.namespace(lab, dst)), os.O_RDONLY)
    try:
        with Netlink(names.namespace(lab, src)) as nl:
            nl.iproute().link("set", index=nl.index(ifname), net_ns_fd=fd)
    finally:
        os.close(fd)


def _wire(lab: str, h: HostPlane, topo: Topology, vm_name: str, move: NicMove, vswitch: str) -> None:
    """A VM port that is down and bare in `h`: VLAN policy, vNIC settings, mirror port, programs
    attached, enslaved, up, in that order (a port carries no frame before it is configured)."""
    ifindex = h.ifindexes[move.port]
    vm = topo.vm(vm_name)
    nic = next(n for n in vm.nics if n.index == move.index)
    h.dataplane.configure(ifindex, vlan_plan.port_vlans(topo)[h.host][move.port])
    fwplan.install_vnic(h.fw, ifindex, nic, fwplan.vnic_settings(topo, vm, nic))
    host_plan = mirror_plan.plan(topo)[h.host]
    ports = host_plan.ports(mirror_live.read_ids(lab))
    if move.port in ports or move.port in host_plan.analyzers:
        h.dataplane.mirrors.set_port(
            ifindex, ports.get(move.port, []), analyzer=move.port in host_plan.analyzers
        )
    with Netlink(names.namespace(lab, h.host)) as nl:
        h.dataplane.attach(nl.tc_socket(), ifindex, vm=True)
        nl.enslave(move.port, vswitch)
        nl.up(move.port)


def _uplinks(h: HostPlane, topo: Topology) -> None:
    """Uplink VLAN profiles as `topo` derives them (a vSwitch's trunk follows its VMs' VLANs)."""
    for port in vlan_plan.host_ports(topo, h.host):
        if port.role == "uplink" and port.name in h.ifindexes:
            h.dataplane.configure(h.ifindexes[port.name], port.vlans)


def _forget_port(h: HostPlane, ifindex: int) -> None:
    """The entries of a port that left `h`: its vNIC settings, source addresses, VLAN policy."""
    stale = [
        key
        for key, _ in syscalls.map_items(h.fw.maps["vnic_addrs"], abi.AddrKey, ctypes.c_uint8)
        if key.ifindex == ifindex
    ]
    for key in stale:
        syscalls.map_delete(h.fw.maps["vnic_addrs"], key)
    syscalls.map_update(h.fw.maps["vnics"], ctypes.c_uint32(ifindex), abi.Vnic())
    h.dataplane.unconfigure(ifindex)


def _raw_socket(ns: str, ifname: str) -> socket.socket:
    with netns.inside(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((ifname, 0))
    return sock


# -- the command's entry -----------------------------------------------------------------------
def migrate(
    lab: str, vm: str, host: str, emit: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Migrate `vm` of running lab `lab` to `host`: its report, or TopologyError (refused,
    nothing touched), or Failed (rolled back)."""
    with RunningLab(lab) as live:
        m = Migration(live, plan(live.topo, vm, host), emit or (lambda record: None))
        return m.run()
