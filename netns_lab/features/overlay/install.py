"""The overlay in the kernel of a lab being built or running: each hosted segment's VXLAN device,
the tables of each mode, the controller process, and live plan changes.

Per segment mode, how the VXLAN device `vx-<vni>` on `sg-<vni>` is set up and who fills it:

    mode        vxlan learning   bridge port flags               tables filled by
    flood       on               (bridge defaults)               head-end replication entries
                                                                 written once here; the rest learned
    controller  off              neigh_suppress on, learning off the lab's controller process
    evpn        off              learning off                    BGP (FRR's zebra)
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
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
    spans = topo.segment_spans()
    mine = {s.name for s in topo.host_segments(host)}
    others = {h for name in mine for h in spans.get(name, []) if h != host}
    return sorted(str(topo.vtep_ip(h)) for h in others if topo.vtep_ip(h) is not None)


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
    return any(s.mode == "controller" for s in topo.segments if topo.segment_hosts(s.name))


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
