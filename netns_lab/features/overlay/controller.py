"""The overlay controller of a lab: keeps every VTEP's FDB and neighbour tables equal to the plan.

One process per lab, started by `nlab up` in the lab's first host namespace (so `nlab down`
ends it with the lab's other processes, also after a crash), logging to the lab's state dir:

    python -m netns_lab.features.overlay.controller --lab nist --netns nist-hv1
    /run/netns-lab/<lab>/overlay-plan.json   the plan it enforces (SIGHUP: read it again)
    /run/netns-lab/<lab>/controller.log      what it changed, one line per repair
    /run/netns-lab/<lab>/controller.ready    its pid, once the first pass is done

It reconciles each host when that host's neighbour/FDB tables change (a netlink event: drift is
repaired at once) and every `--interval` seconds as a safety net. It writes only what differs
(reconcile.py), so a restart disturbs nothing. Fail static: every entry it writes is permanent,
so the dataplane keeps working while it is dead; it ends by itself once the lab's state is gone.

`check` and `show` are the read-only halves used by `nlab overlay check` / `nlab overlay show`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from netns_lab.features.overlay.plan import Plan, segment_bridge, vxlan_dev
from netns_lab.features.overlay.reconcile import Change, apply, read_host
from netns_lab.kernel import fdb, netns
from netns_lab.lab import processes, state
from netns_lab.lab.state import state_dir
from netns_lab.topology import names

log = logging.getLogger("netns_lab.overlay.controller")

PLAN, LOG, READY = "overlay-plan", "controller.log", "controller.ready"
INTERVAL = 30.0  # seconds between two full passes when nothing changes
SETTLE = 0.05  # after a change, wait this long for its siblings before reading the tables
WAKE = 1.0  # longest sleep: the lab's end is noticed within it


def plan_file(lab: str) -> Path:
    return state_dir(lab) / f"{PLAN}.json"


def write_plan(lab: str, plan: Plan) -> None:
    """Replace the plan the controller enforces (atomically: it may be reading); SIGHUP it after."""
    state.write_record(lab, PLAN, plan.to_dict())


def start(lab: str, namespace: str, plan: Plan, interval: float = INTERVAL) -> subprocess.Popen[bytes]:
    """The lab's controller in `namespace`, detached from our session (a Ctrl-C must not reach it)."""
    write_plan(lab, plan)
    with contextlib.suppress(FileNotFoundError):
        (state_dir(lab) / READY).unlink()
    args = ["--lab", lab, "--netns", namespace, "--interval", str(interval)]
    return processes.spawn(lab, "netns_lab.features.overlay.controller", args, "controller")


stop = processes.stop


def wait_ready(lab: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until `proc` has done its first pass; RuntimeError naming its log if it ends or hangs."""
    ready = state_dir(lab) / READY
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            if int(ready.read_text()) == proc.pid:
                return
        time.sleep(0.02)
    raise RuntimeError(f"the overlay controller did not start (see {state_dir(lab) / LOG})")


# -- read-only views ---------------------------------------------------------------------------
def check(lab: str, plan: Plan) -> list[Change]:
    """Every difference between the plan and the kernel tables of the lab's hosts (empty: none)."""
    drifts: list[Change] = []
    for host in plan.hosts:
        with fdb.Tables(names.namespace(lab, host.host)) as tables:
            drifts += read_host(tables, host)
    return drifts


def show(lab: str, hosted: Mapping[str, Iterable[int]]) -> dict[str, Any]:
    """Per host, per VNI hosted there: the vxlan device's and bridge's FDB entries and the segment
    bridge's neighbours, each with its origin (any mode: BGP's entries too)."""
    found: dict[str, Any] = {}
    for host, vnis in hosted.items():
        with fdb.Tables(names.namespace(lab, host)) as tables:
            present = tables.refresh()
            entries, neighbours = tables.all_fdb(), tables.all_neighbours()
            found[host] = [
                {
                    "vni": vni,
                    "present": vxlan_dev(vni) in present and segment_bridge(vni) in present,
                    "fdb": [e.as_dict() for e in entries.get(vxlan_dev(vni), [])],
                    "neighbours": [n.as_dict() for n in neighbours.get(segment_bridge(vni), [])],
                }
                for vni in sorted(vnis)
            ]
    return found


# -- the process -------------------------------------------------------------------------------
class Controller:
    def __init__(self, lab: str, interval: float) -> None:
        self.lab, self.interval = lab, interval
        self.plan = Plan.from_dict(json.loads(plan_file(lab).read_text()))
        self.tables: dict[str, fdb.Tables] = {}
        self.events: dict[int, tuple[str, Any]] = {}  # fd -> (host, socket)
        self.reload = False
        self.repairs = 0

    def open(self) -> None:
        """Sockets per host; the event sockets first, so no change falls between them and a read."""
        for host in self.plan.hosts:
            ns = names.namespace(self.lab, host.host)
            if host.host in self.tables:
                continue
            sock = fdb.neigh_events(ns)
            self.events[sock.fileno()] = (host.host, sock)
            self.tables[host.host] = fdb.Tables(ns)

    def close(self) -> None:
        for t in self.tables.values():
            t.close()
        for _, sock in self.events.values():
            sock.close()

    def reconcile(self, hosts: Iterable[str]) -> int:
        """Bring `hosts` to the plan; the number of entries changed."""
        changed = 0
        for name in hosts:
            host = next((h for h in self.plan.hosts if h.host == name), None)
            if host is None:
                continue
            for change in read_host(self.tables[name], host):
                if change.action == "missing":
                    log.warning("%s: cannot program it (not built)", change)
                    continue
                try:
                    apply(self.tables[name], change)
                except NetlinkError as err:
                    log.error("%s: failed: %s", change, err)
                    continue
                log.info("%s", change)
                changed += 1
        self.repairs += changed
        return changed

    def run(self) -> None:
        self.open()
        first = self.reconcile(self.tables)
        log.info("first pass over %d hosts: %d entries changed", len(self.tables), first)
        (state_dir(self.lab) / READY).write_text(str(os.getpid()))
        poller = select.poll()
        for fd in self.events:
            poller.register(fd, select.POLLIN)
        # A signal alone does not end poll() (Python restarts it): its byte on this socket does.
        wake, wake_w = socket.socketpair()
        wake.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        poller.register(wake.fileno(), select.POLLIN)
        next_pass = time.monotonic() + self.interval
        while plan_file(self.lab).exists():
            if self.reload:
                self._reload(poller)
            ready = {fd for fd, _ in poller.poll(min(WAKE, max(0.0, next_pass - time.monotonic())) * 1000)}
            if wake.fileno() in ready:
                with contextlib.suppress(BlockingIOError):
                    wake.recv(4096)
            if ready - {wake.fileno()}:
                time.sleep(SETTLE)  # one hand edit or BGP update is often several messages
                self.reconcile(sorted({h for h in map(self._drained, self.events) if h}))
            if time.monotonic() >= next_pass:
                self.reconcile(self.tables)
                next_pass = time.monotonic() + self.interval

    def _drained(self, fd: int) -> str | None:
        host, sock = self.events[fd]
        return host if fdb.drain(sock, self._devices(host)) else None

    def _devices(self, name: str) -> set[int] | None:
        """The ifindexes of `name`'s planned devices (changes elsewhere, such as the underlay's
        ARP or a VM port's learning, are not ours); None, all, while one is still missing."""
        host = next((h for h in self.plan.hosts if h.host == name), None)
        tables = self.tables[name]
        try:
            return {tables.index(d) for s in host.segments for d in (s.vxlan, s.bridge)} if host else set()
        except NetlinkError:
            return None

    def _reload(self, poller: select.poll) -> None:
        self.reload = False
        self.plan = Plan.from_dict(json.loads(plan_file(self.lab).read_text()))
        known = set(self.events)
        self.open()
        for fd in set(self.events) - known:
            poller.register(fd, select.POLLIN)
        log.info(
            "plan reloaded: %d hosts; %d entries changed", len(self.plan.hosts), self.reconcile(self.tables)
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m netns_lab.features.overlay.controller", description=__doc__.splitlines()[0]
    )
    p.add_argument("--lab", required=True)
    p.add_argument("--netns", required=True, help="the lab namespace to live in (its first host)")
    p.add_argument("--interval", type=float, default=INTERVAL, help="seconds between two full passes")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s controller %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    controller = None
    try:
        netns.enter(args.netns)
        controller = Controller(args.lab, args.interval)
        signal.signal(signal.SIGHUP, lambda *_: setattr(controller, "reload", True))
        controller.run()
    except (OSError, NetlinkError, KeyboardInterrupt) as err:
        if plan_file(args.lab).exists():  # the lab is still up: say why we stop
            log.error("stopped: %s", err)
            return 1
    finally:
        if controller is not None:
            controller.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
