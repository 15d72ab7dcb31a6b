"""Injected faults of a running lab (`nlab fail`, `nlab heal`), and the team state `nlab status`
shows.

A link is named from either end: ``HOST.PNIC`` or ``SWITCH.PORT`` (a switch's ports are named
as `netns_lab.topology.names` makes them: ``hv1-eth0``, a network's, a router NIC's, ``tor2`` for
tor1's end of the link to tor2; a fault on an inter-switch link is made at the end named). Its faults:

    carrier   the switch's end of the cable set down: both ends lose carrier, as with a pulled
              cable (what link-state detection sees)
    silent    frames dropped both ways at the switch's end, in its dataplane, beacons too, carrier
              up: a host's packet sockets see frames before its own TC ingress, so a silence
              made at the host's end would still let the monitor hear the beacons
    loss P    a random fraction P of the frames dropped there, both ways (this kernel has no netem)
    flap HZ   a lab process in the switch's namespace toggling the carrier HZ times a second

Active faults are the lab's record ``faults`` (a list, one entry per link); `nlab down` ends
them all with the namespaces they live in.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from netns_lab.kernel.netlink import Netlink
from netns_lab.lab import processes
from netns_lab.lab.state import pin_dir, read_record, write_record
from netns_lab.topology import names
from netns_lab.topology.errors import unknown
from netns_lab.topology.model import Topology

RECORD = "faults"
MODES = ("carrier", "silent", "loss", "flap")


@dataclass(frozen=True)
class Link:
    name: str  # as the user typed it: NODE.IFNAME
    node: str  # the end it names (host or switch)
    ifname: str
    switch: str  # the switch's end of the cable
    port: str


def links(topo: Topology) -> dict[str, Link]:
    """Every cable of the lab under both of its names."""
    found: dict[str, Link] = {}

    def cable(node: str, ifname: str, switch: str, port: str, switching: bool) -> None:
        if switching:  # a host's pNIC: the host end may be named too
            found[f"{node}.{ifname}"] = Link(f"{node}.{ifname}", node, ifname, switch, port)
        found[f"{switch}.{port}"] = Link(f"{switch}.{port}", switch, port, switch, port)

    for h in topo.hosts:
        for p in h.pnics:
            cable(h.name, p.name, p.switch, names.switch_port(h.name, p.name), True)
    for n in topo.networks:
        cable(n.name, names.NETWORK_IFNAME, n.switch, names.network_port(n.name), False)
    for r in topo.routers:
        for nic in r.nics:
            cable(r.name, nic.name, nic.switch, names.router_port(r.name, nic.name), False)
    for link in topo.switch_links():  # an inter-switch link, from either switch: its own end
        for switch, port in link.ends():
            cable(switch, port, switch, port, False)
    return found


def resolve(topo: Topology, text: str) -> Link:
    """The link named ``text``, or a ValueError naming it with a did-you-mean."""
    known = links(topo)
    if text not in known:
        raise ValueError(unknown("link", "links", text, sorted(known)))
    return known[text]


def active(lab: str) -> list[dict[str, Any]]:
    return list(read_record(lab, RECORD) or [])


def fail(
    topo: Topology, link: Link, mode: str, p: float | None = None, hz: float | None = None
) -> dict[str, Any]:
    """Inject `mode` on `link` (one fault per link: heal it first to change it)."""
    lab = topo.lab
    faults = active(lab)
    held = next((f for f in faults if _same(f, link)), None)
    if held is not None:
        raise ValueError(f"{link.name}: already failed ({held['mode']}); `nlab heal {held['link']}` first")
    entry: dict[str, Any] = {
        "link": link.name,
        "mode": mode,
        "node": link.node,
        "ifname": link.ifname,
        "switch": link.switch,
        "port": link.port,
        "since": time.time(),
    }
    if mode == "carrier":
        with Netlink(names.namespace(lab, link.switch)) as nl:
            nl.down(link.port)
    elif mode in ("silent", "loss"):
        with _dataplane(lab, link.switch) as dp, Netlink(names.namespace(lab, link.switch)) as nl:
            if mode == "silent":
                dp.team.set_fault(nl.index(link.port), "silent")
            else:
                assert p is not None
                dp.team.set_fault(nl.index(link.port), "loss", p)
                entry["p"] = p
    elif mode == "flap":
        assert hz is not None
        ns = names.namespace(lab, link.switch)
        proc = processes.spawn(
            lab,
            "netns_lab.features.team.flap",
            ["--lab", lab, "--netns", ns, "--ifname", link.port, "--hz", str(hz)],
            f"flap-{link.switch}-{link.port}",
        )
        entry.update(hz=hz, pid=proc.pid, start=_start_time(proc.pid))
    else:
        raise ValueError(f"fault mode {mode!r} is not one of {', '.join(MODES)}")
    write_record(lab, RECORD, [*faults, entry])
    return entry


def heal(topo: Topology, link: Link | None) -> list[dict[str, Any]]:
    """End the fault on `link` (None: every fault); the healed entries."""
    lab = topo.lab
    faults = active(lab)
    healed = [f for f in faults if link is None or _same(f, link)]
    if link is not None and not healed:
        raise ValueError(f"{link.name}: no fault is injected on it")
    remaining = list(faults)
    for f in healed:
        _end(lab, f)
        remaining.remove(f)
        write_record(lab, RECORD, remaining)
    return healed


def _end(lab: str, f: dict[str, Any]) -> None:
    ours = f["mode"] == "flap" and f.get("start") is not None and _start_time(f["pid"]) == f["start"]
    if ours:
        os.kill(f["pid"], signal.SIGTERM)  # the same pid and start time as recorded: ours
        for _ in range(200):
            if _start_time(f["pid"]) != f["start"]:
                break
            time.sleep(0.01)
    if f["mode"] in ("carrier", "flap"):
        with Netlink(names.namespace(lab, f["switch"])) as nl:
            nl.up(f["port"])
    else:
        with _dataplane(lab, f["switch"]) as dp, Netlink(names.namespace(lab, f["switch"])) as nl:
            dp.team.clear_fault(nl.index(f["port"]))


def _same(f: dict[str, Any], link: Link) -> bool:
    return (f["switch"], f["port"]) == (link.switch, link.port)


def _dataplane(lab: str, node: str):  # type: ignore[no-untyped-def]
    from dataplane.switch import SwitchDataplane

    return SwitchDataplane.open(pin_dir(lab) / node)


def _start_time(pid: int) -> int | None:
    from netns_lab.lab.state import _proc_start_time

    return _proc_start_time(pid)


# -- team state for `nlab status` -----------------------------------------------------------------
def teams_doc(topo: Topology, host: str) -> list[dict[str, Any]]:
    """The host's teams, the active member read from its dataplane's team map (None if unreadable),
    and the team's latest move as its monitor recorded it (None before the first)."""
    from netns_lab.features.team import events
    from netns_lab.features.team.plan import teams

    plans = teams(topo, host)
    if not plans:
        return []
    members: dict[int, bool] = {}
    index: dict[str, int] = {}
    try:
        with _dataplane(topo.lab, host) as dp, Netlink(names.namespace(topo.lab, host)) as nl:
            members = dp.team.members()
            index = {link.name: link.index for link in nl.links()}
    except OSError:
        pass
    return [
        {
            "vswitch": p.vswitch,
            "members": list(p.members),
            "active": next((m for m in p.members if members.get(index.get(m, 0))), None),
            "policy": p.team.policy,
            "failback": p.team.failback,
            "detection": list(p.team.detection),
            "beacon_interval": f"{p.team.beacon_interval_ms}ms",
            "last_failover": events.last_move(topo.lab, host, p.name),
        }
        for p in plans
    ]
