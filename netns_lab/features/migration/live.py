"""A VM migrated between the hosts of a running lab: its namespace (its TCP/IP state, as memory
would be copied) stays; the host end of each of its veths moves into the target host's namespace
and onto its vSwitch, under an ifindex chosen beforehand, so that everything keyed by it is
written on the target before the port arrives.

Phases, each one event (`events.py`) and each undone if a later one fails:

    check      the changed topology validated, the port's ifindex on the target chosen
    rules      on the target, while the VM still runs on the source: its endpoints in the
               firewall policy, its port's vNIC settings (port security) and VLAN policy, the
               uplinks' VLAN profiles, the port's counters zeroed
    mirror     the target's mirror sessions and promiscuous groups with the VM's port
    conntrack  the port moves into the target (down, no programs: the kernel takes them off on
               the way; the source stops here), then the VM's connection entries are copied
               into the target's table with their quota shares
    port       programs attached, enslaved, up: the VM runs on the target
    announce   gratuitous ARP (RARP for a NIC without IPv4) from the VM's own NICs on the new
               path, then one RunningLab transaction records the model (the source's policy
               without the VM, the overlay's VTEP tables)
    cleanup    the source's connection entries, vNIC, VLAN entries of the port, uplink profiles
    done | rolled-back

No frame crosses the port before its programs are attached and configured (fail closed): it
arrives down and comes up last. Downtime (of the VM's traffic) is `conntrack` + `port`. Until
`cleanup` starts, a failure (or an injected one: $NLAB_MIGRATE_FAIL_AT=PHASE) undoes every phase
done, newest first: the port goes back to the source and is wired again as it was, the target's
entries and the model as they were. Cleanup is the commit point: what it fails to remove is
reported, the VM runs on the target. An injected failure comes at the end of its phase, once the
phase's work is done (all of it to undo); at `cleanup` it is one more problem reported.
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

from dataplane import abi, fwpolicy, nlwire, syscalls
from netns_lab.features.firewall import plan as fwplan
from netns_lab.features.migration import conntrack, events
from netns_lab.features.migration.plan import NicMove, Plan, plan
from netns_lab.features.mirror import live as mirror_live
from netns_lab.features.mirror import plan as mirror_plan
from netns_lab.features.team import frames
from netns_lab.features.vlan import plan as vlan_plan
from netns_lab.kernel import netns, rtnl
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.running import HostPlane, RunningLab
from netns_lab.topology import names
from netns_lab.topology.errors import TopologyError
from netns_lab.topology.model import Topology

log = logging.getLogger(__name__)

FAIL_ENV = "NLAB_MIGRATE_FAIL_AT"
PHASES = ("check", "rules", "mirror", "conntrack", "port", "announce", "cleanup")  # then done
ANNOUNCE = 3  # frames per NIC, as a team failover announces
IFLA_NEW_IFINDEX = 49  # <linux/if_link.h>: the ifindex a device moved to another namespace takes


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
        self.old, self.old_text = self.live.topo, self.live.text
        self.source, self.target = self._host(self.plan.source), self._host(self.plan.target)
        t0 = time.monotonic()
        steps: list[tuple[str, Callable[[], None]]] = [
            ("check", self._check),
            ("rules", self._rules),
            ("mirror", self._mirror),
            ("conntrack", self._conntrack),
            ("port", self._port),
            ("announce", self._announce),
        ]
        for phase, step in steps:
            try:
                self._timed(phase, step)
            except BaseException as err:
                if isinstance(err, TopologyError) and not self.undo:
                    raise  # the changed topology does not validate: bad input, nothing touched
                self._roll_back(phase, err)
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
        """From the move (start of `conntrack`) until the port is up (end of `port`)."""
        ms = {r["phase"]: r["ms"] for r in self.phases}
        if "port" not in ms:
            return None
        return round(ms["conntrack"] + ms["port"], 3)

    def _timed(self, phase: str, step: Callable[[], Any]) -> Any:
        t = time.monotonic()
        result = step()
        if os.environ.get(FAIL_ENV) == phase and phase != "cleanup":  # its work done: all to undo
            raise RuntimeError(f"injected failure at the end of phase {phase} (${FAIL_ENV})")
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
    def _check(self) -> None:
        for move in self.plan.nics:
            if move.port not in self.source.ifindexes:
                raise RuntimeError(
                    f"{self.source.host} has no port {move.port} (the lab is not as its state says)"
                )
        self.new, self.new_text = self.live.prepare(self.plan.edit)
        self.index = _free_ifindexes(self.source, self.target, [m.port for m in self.plan.nics])

    def _rules(self) -> None:
        """Everything the target keys by the VM's endpoint or by its port's chosen ifindex."""
        t, vm = self.target, self.new.vm(self.plan.vm)
        live = fwpolicy.compile(fwplan.host_policy(self.old, t.host))
        staged = fwpolicy.compile(fwplan.host_policy(self.new, t.host), prev=live)
        t.fw.install(staged, previous=live)
        self.undo.append(lambda: t.fw.install(fwpolicy.compile(fwplan.host_policy(self.old, t.host))))
        ports = vlan_plan.port_vlans(self.new)[t.host]
        for move in self.plan.nics:
            index = self.index[move.port]
            self.undo.append(lambda i=index: _forget_port(t, i))
            _zero_counters(t, index)
            t.dataplane.configure(index, ports[move.port])
            nic = next(n for n in vm.nics if n.index == move.index)
            fwplan.install_vnic(t.fw, index, nic, fwplan.vnic_settings(self.new, vm, nic))
        _uplinks(t, self.new)
        self.undo.append(lambda: _uplinks(t, self.old))

    def _mirror(self) -> None:
        t = self.target
        old_ids = mirror_live.read_ids(self.live.lab)
        new_ids = mirror_plan.assign_ids((s.name for s in mirror_plan.sessions(self.new)), old_ids)
        before, after = mirror_plan.plan(self.old)[t.host], mirror_plan.plan(self.new)[t.host]
        known = {**t.ifindexes, **self.index}
        mirror_live.install(
            t.dataplane.mirrors, after, new_ids, known.__getitem__, old=before, old_ids=old_ids
        )
        self.undo.append(
            lambda: mirror_live.install(
                t.dataplane.mirrors, before, old_ids, known.__getitem__, old=after, old_ids=new_ids
            )
        )

    def _conntrack(self) -> None:
        s, t = self.source, self.target
        for move in self.plan.nics:
            _move_link(self.live.lab, move.port, s.host, t.host, self.index[move.port])
            self.undo.append(lambda m=move: self._back(m))
            t.ifindexes[move.port] = self.index[move.port]
        items = conntrack.entries(s.fw, self.plan.endpoints)
        self.copied = conntrack.adopt(t.fw, items)
        self.undo.append(lambda: conntrack.forget(t.fw, self.copied))

    def _port(self) -> None:
        with Netlink(names.namespace(self.live.lab, self.target.host)) as nl:
            for move in self.plan.nics:
                _bring_up(nl, self.target, move.port, self.index[move.port], move.vswitch_to)

    def _announce(self) -> None:
        """The VM's MACs first (switches learn the new path at once), then the model: the
        transaction's work on the target is already done, the source's policy loses the VM,
        the overlay's VTEP tables follow it."""
        self._garp()
        self.live.apply(self.new, self.new_text)
        self.undo.append(lambda: self.live.apply(self.old, self.old_text))

    def _garp(self) -> None:
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
        s = self.source
        parts: list[tuple[str, Callable[[], None]]] = [
            ("connections", lambda: _forget_entries(s, self.plan.endpoints)),
            ("uplinks", lambda: _uplinks(s, self.new)),
        ]
        for move in self.plan.nics:
            parts.append((f"port {move.port}", lambda i=s.ifindexes[move.port]: _forget_port(s, i)))
        if os.environ.get(FAIL_ENV) == "cleanup":
            parts.insert(0, ("(injected)", _injected))
        for what, part in parts:
            try:
                part()
            except Exception as err:  # the VM runs on the target: say what the source still holds
                self.problems.append(f"{s.host}: {what} not cleaned: {err}")
                log.exception("%s: cleanup of %s", s.host, what)

    # -- rollback ------------------------------------------------------------------------------
    def _roll_back(self, phase: str, err: BaseException) -> None:
        log.info("%s: migrating %s failed at %s: %s; rolling back", self.live.lab, self.plan.vm, phase, err)
        t = time.monotonic()
        for undo in reversed(self.undo):
            try:
                undo()
            except Exception:
                log.exception("%s: a rollback step failed", self.live.lab)
        self.undo = []
        self._event("rolled-back", (time.monotonic() - t) * 1000)

    def _back(self, move: NicMove) -> None:
        """The port back on the source under its old ifindex, whose entries never left."""
        s, t = self.source, self.target
        index = s.ifindexes[move.port]
        if move.port in _ifindexes(self.live.lab, t.host):
            _move_link(self.live.lab, move.port, t.host, s.host, index)
        t.ifindexes.pop(move.port, None)
        with Netlink(names.namespace(self.live.lab, s.host)) as nl:
            _bring_up(nl, s, move.port, index, move.vswitch_from)


def _injected() -> None:
    raise RuntimeError(f"injected failure at phase cleanup (${FAIL_ENV})")


# -- the kernel side ---------------------------------------------------------------------------
def _ifindexes(lab: str, host: str) -> dict[str, int]:
    with Netlink(names.namespace(lab, host)) as nl:
        return {link.name: link.index for link in nl.links()}


def _free_ifindexes(source: HostPlane, target: HostPlane, ports: list[str]) -> dict[str, int]:
    """An ifindex for each port in the target: its own if free there, else the next free one."""
    used = set(target.ifindexes.values())
    chosen = {}
    for port in ports:
        index = source.ifindexes[port]
        while index in used:
            index = max(used) + 1
        if not 0 < index < abi.MAX_IFINDEX:
            raise RuntimeError(
                f"{target.host}: no ifindex below NLAB_MAX_IFINDEX {abi.MAX_IFINDEX} for {port}"
            )
        chosen[port] = index
        used.add(index)
    return chosen


def _move_link(lab: str, ifname: str, src: str, dst: str, ifindex: int) -> None:
    """Move `ifname` from host `src`'s namespace into `dst`'s as `ifindex`. The kernel takes it
    down, out of its bridge, and its clsact qdisc (and so its programs) away on the way."""
    fd = os.open(netns.path(names.namespace(lab, dst)), os.O_RDONLY)
    try:
        with Netlink(names.namespace(lab, src)) as nl:
            where = nlwire.u32(rtnl.IFLA_NET_NS_FD, fd) + nlwire.u32(IFLA_NEW_IFINDEX, ifindex)
            body = rtnl.ifinfo(nl.index(ifname), False, where)
            nl.request(rtnl.RTM_NEWLINK, 0, body, f"cannot move {ifname!r} to {dst} as ifindex {ifindex}")
    finally:
        os.close(fd)
    with Netlink(names.namespace(lab, dst)) as nl:
        if nl.index(ifname) != ifindex:
            raise RuntimeError(f"{dst}: {ifname} arrived as ifindex {nl.index(ifname)}, not {ifindex}")


def _bring_up(nl: Netlink, h: HostPlane, port: str, ifindex: int, vswitch: str) -> None:
    """A port whose entries are written: programs attached, enslaved, then up (in that order:
    it carries no frame before its programs run)."""
    h.dataplane.attach(nl.tc_socket(), ifindex, vm=True)
    nl.enslave(port, vswitch)
    nl.up(port)


def _zero_counters(h: HostPlane, ifindex: int) -> None:
    """A port's drop counters from zero (an earlier port of that ifindex may have left some)."""
    zero = (abi.Counter * syscalls.num_possible_cpus())()
    for direction in abi.Direction:
        for reason in abi.Reason:
            key = ctypes.c_uint32(abi.counter_index(ifindex, direction, reason))
            syscalls.map_update(h.dataplane.maps["counters"], key, zero)


def _forget_entries(h: HostPlane, endpoints: frozenset[int]) -> None:
    conntrack.forget(h.fw, [key for key, _ in conntrack.entries(h.fw, endpoints)])


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
