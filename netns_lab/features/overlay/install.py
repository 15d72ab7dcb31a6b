"""The overlay in the kernel of a lab being built or running: each hosted segment's VXLAN device,
the tables of each mode, the controller process, and live plan changes.

Per segment mode, how the VXLAN device `vx-<vni>` on `sg-<vni>` is set up and who fills it:

    mode        vxlan learning   bridge port flags               tables filled by
    flood       on               (bridge defaults)               head-end replication entries
                                                                 written once here; the rest learned
    controller  off              neigh_suppress on, learning off the lab's controller process
    evpn        off              learning off                    BGP (FRR's zebra)

EVPN runs zebra + bgpd in each host namespace that hosts an evpn segment, and in the route
reflector's (a router or a host; configs from `evpn.from_topology`), every file in the lab's
state dir (`frr.py`); teardown ends the daemons with the lab's other processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netns_lab.features.overlay import controller
from netns_lab.features.overlay import plan as overlay_plan
from netns_lab.features.overlay.plan import Plan
from netns_lab.features.overlay.reconcile import apply, read_host
from netns_lab.kernel import fdb
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.state import pin_dir, state_dir
from netns_lab.topology import names
from netns_lab.topology.model import PNic, Segment, Topology

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

log = logging.getLogger(__name__)


def plan_of(topo: Topology) -> Plan:
    """The tables the controller (or the builder, in flood mode) keeps: evpn segments left out."""
    return overlay_plan.plan(overlay_plan.from_topology(topo))


def hosted(topo: Topology) -> dict[str, list[int]]:
    """Per host, the VNIs of every segment it hosts, whatever their mode."""
    return overlay_plan.hosted(overlay_plan.from_topology(topo))


def routed_pnics(topo: Topology, host: str) -> list[PNic]:
    """The host's pNICs with an address of their own: VXLAN may arrive at any of them (the
    kernel's vxlan socket listens on every address), so each gets the underlay guard."""
    return [p for p in topo.host(host).pnics if p.ip is not None]


def peers(topo: Topology, host: str) -> list[str]:
    """The VTEP addresses of the hosts that share a segment with `host`: the only senders of
    VXLAN it accepts."""
    whole = topo.lab_wide  # one machine's part: the other machines' VTEPs too
    spans = whole.segment_spans()
    mine = {s.name for s in whole.host_segments(host)}
    others = {h for name in mine for h in spans.get(name, []) if h != host}
    return sorted(str(whole.vtep_ip(h)) for h in others if whole.vtep_ip(h) is not None)


def guard(dp: SwitchDataplane, nl: Netlink, topo: Topology, host: str) -> None:
    """The underlay guard on every routed pNIC of a VTEP host, its tables filled first (from
    then on, VXLAN from an unregistered VTEP or for a VNI not hosted here is dropped, counted)."""
    overlay = dp.overlay
    pnics = routed_pnics(topo, host)
    overlay.set_local([p.ip for p in pnics if p.ip is not None])
    for address in peers(topo, host):
        overlay.add_peer(address)
    for segment in topo.host_segments(host):
        overlay.add_vni(segment.vni)
    for pnic in pnics:
        overlay.attach_underlay(nl.tc_socket(), nl.index(pnic.name))


def guard_counts(lab: str, topo: Topology) -> dict[str, Any]:
    """Per VTEP host: what the guard on each routed pNIC decided (by reason) and the frames
    accepted per hosted VNI."""
    from dataplane.switch import SwitchDataplane

    found: dict[str, Any] = {}
    for host in hosted(topo):
        pnics = routed_pnics(topo, host)
        with SwitchDataplane.open(pin_dir(lab) / host) as dp, Netlink(names.namespace(lab, host)) as nl:
            counts = {p.name: dp.overlay.counters(nl.index(p.name)) for p in pnics}
        found[host] = {
            "pnics": {name: {r.label: n for r, n in c.reasons.items()} for name, c in counts.items()},
            "vnis": {
                str(vni): {"packets": v.packets, "bytes": v.bytes}
                for vni, v in (next(iter(counts.values())).vnis.items() if counts else ())
            },
        }
    return found


def make_device(tables: fdb.Tables, segment: Segment, local: str) -> None:
    """The segment's VXLAN device, down and not yet a port (its programs attach first)."""
    vx = names.vxlan_dev(segment.vni)
    tables.vxlan(vx, segment.vni, local, None, learning=segment.mode == "flood")


def join_bridge(tables: fdb.Tables, segment: Segment) -> None:
    """The device into its segment's bridge, its port flags set for the mode, then up."""
    vx, bridge = names.vxlan_dev(segment.vni), names.segment_bridge(segment.vni)
    index = tables.index(vx)
    tables.ipr.link("set", index=index, master=tables.index(bridge))
    if segment.mode == "controller":
        tables.controller_port(vx)
    elif segment.mode == "evpn":
        tables.bgp_port(vx)
    tables.ipr.link("set", index=index, state="up")


def program(lab: str, plan: Plan) -> int:
    """Write every host's planned entries once (flood mode's head-end replication, without a
    controller to keep them); the number of entries written."""
    written = 0
    for host in plan.hosts:
        with fdb.Tables(names.namespace(lab, host.host)) as tables:
            for change in read_host(tables, host):
                if change.action == "missing":
                    raise RuntimeError(f"overlay: {change.host}: {change.dev} was not built")
                apply(tables, change)
                written += 1
    return written


def needs_controller(topo: Topology) -> bool:
    """A segment in controller mode that some host hosts."""
    spans = topo.segment_spans()
    return any(s.mode == "controller" and s.name in spans for s in topo.segments)


def start_controller(lab: str, plan: Plan) -> subprocess.Popen[bytes]:
    """The lab's controller in its first VTEP host's namespace (teardown's sweep of the lab's
    namespaces ends it there), once its first pass is done."""
    proc = controller.start(lab, names.namespace(lab, plan.hosts[0].host), plan)
    try:
        controller.wait_ready(lab, proc)
    except BaseException:
        controller.stop(proc)
        raise
    return proc


def controller_pid(lab: str) -> int | None:
    """The pid of the lab's running controller (the one that wrote the ready file, still
    running as the lab's controller), else None."""
    try:
        pid = int((state_dir(lab) / controller.READY).read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    ours = b"netns_lab.features.overlay.controller" in argv and lab.encode() in argv
    return pid if ours else None


def reload_controller(lab: str, plan: Plan) -> bool:
    """Give the running controller a new plan (it reconciles at once); False: none runs, the
    plan is written for the next start."""
    controller.write_plan(lab, plan)
    pid = controller_pid(lab)
    if pid is None:
        log.warning("%s: no overlay controller runs: the new plan waits for its start", lab)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)
        return True
    return False


# -- EVPN --------------------------------------------------------------------------------------
EVPN_TIMEOUT = 30.0  # seconds for every session and every type-3 route to be in place


def evpn_hosts(topo: Topology) -> dict[str, IPv4Address]:
    """The VTEP hosts that host an evpn segment, with their VTEP address."""
    found = {}
    for h in topo.hosts:
        ip = topo.vtep_ip(h.name)
        if ip is not None and any(s.mode == "evpn" for s in topo.host_segments(h.name)):
            found[h.name] = ip
    return found


def evpn_refusal(topo: Topology) -> tuple[str, str] | None:
    """(path, reason) when the lab's EVPN cannot be built as declared, else None."""
    vteps = evpn_hosts(topo)
    for host in vteps:
        others = sorted(s.name for s in topo.host_segments(host) if s.mode != "evpn")
        if others:
            # zebra's advertise-all-vni exports every VXLAN device of the namespace: the other
            # mode's tables would be BGP's too
            return f"hosts.{host}", f"hosts evpn segments and {', '.join(others)} in another mode"
    return None


def start_evpn(lab: str, topo: Topology, started: Callable[[Any], None]) -> None:
    """FRR on the reflector, then on every evpn VTEP (`started` is told each node, for the
    caller's undo); returns once every session is established and every VTEP holds the
    replication entries of its segments' other VTEPs (type-3 routes)."""
    from netns_lab.features.overlay import evpn, frr

    # the reflector knows every VTEP of the lab; a machine's part runs only its own nodes' daemons
    built = set(topo.node_names())
    configs = {n: c for n, c in evpn.from_topology(topo.lab_wide).items() if n in built}
    rr_name = str(topo.overlay.route_reflector)
    for name in sorted(configs, key=lambda n: n != rr_name):  # the reflector first
        node = frr.Node(lab, name)
        frr.start(node, configs[name])
        started(node)
    clients = [ip for host, ip in evpn_hosts(topo).items() if host != rr_name]
    if rr_name in built:
        frr.wait_established(frr.Node(lab, rr_name), clients, EVPN_TIMEOUT)
    else:  # the reflector is another machine's: each VTEP here waits for its own session
        rr_ip = evpn.reflector_address(topo.lab_wide, rr_name)
        for host in (h for h in evpn_hosts(topo) if h != rr_name):
            frr.wait_established(frr.Node(lab, host), [rr_ip], EVPN_TIMEOUT)
    want = evpn_plan(topo)  # a part waits for its own VTEPs' routes only
    deadline = time.monotonic() + EVPN_TIMEOUT
    while drift := controller.check(lab, want):
        if time.monotonic() > deadline:
            raise RuntimeError(f"EVPN: after {EVPN_TIMEOUT:g} s still {drift[0]} (and {len(drift) - 1} more)")
        time.sleep(0.05)


def evpn_plan(topo: Topology) -> Plan:
    """What BGP must have put on every VTEP whatever the VMs did so far: a head-end replication
    entry per other VTEP of each evpn segment (type-3 routes); the MACs (type-2) follow traffic."""
    data = overlay_plan.from_topology(topo)
    segments = tuple(dataclasses.replace(s, mode="flood") for s in data.segments if s.mode == "evpn")
    names_ = {s.name for s in segments}
    members = tuple(m for m in data.members if m.segment in names_)
    return overlay_plan.plan(dataclasses.replace(data, segments=segments, members=members))
