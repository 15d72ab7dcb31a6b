"""FRR daemons in lab namespaces, the process half of BGP EVPN (config text: `evpn`).

Each EVPN node (VTEP host or route reflector) runs zebra + bgpd inside its namespace. FRR 8.4
(Debian 12) needs nothing else for BGP EVPN: no mgmtd (9.0+), no staticd (no static routes),
no watchfrr (a dead daemon is a failed lab, not something to restart behind the tests' backs).

Everything a node's daemons use lives in the lab's state dir, so labs share nothing and
`nlab down` (which removes the state dir) removes it:

    /run/netns-lab/<lab>/frr/<node>/zebra.conf, bgpd.conf  their configs (-f)
                                   zserv.api         zebra <-> bgpd socket (-z)
                                   zebra.vty, bgpd.vty  vty sockets (--vty_socket), for vtysh
                                   zebra.pid, bgpd.pid  FRR's own pid files (-i)
                                   daemons.json      pid + start time of each, as we started them
                                   zebra.log, bgpd.log  their logs (--log, from the first line)
                                   zebra.out, bgpd.out  their stdout/stderr

No `-N <pathspace>`: with every path overridden it only adds an empty /var/run/frr/<pathspace>
that outlives the lab. FRR still keeps a crash-log directory /var/tmp/frr/<daemon>.<pid>
(hard-wired), unique per process and removed by the daemon's exit on SIGTERM, which is what
both `stop()` and teardown send first.

The daemons run in the foreground (no -d) as children detached from our session: the pid we
get is the daemon's. `nlab down` ends them like any process of the lab's namespaces; `stop()`
ends them by recorded pid + start time, never by name.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from netns_lab.features.overlay import evpn
from netns_lab.kernel import netns
from netns_lab.lab.state import state_dir
from netns_lab.topology import names

log = logging.getLogger(__name__)

FRR_BIN = Path("/usr/lib/frr")
VTYSH = "vtysh"
DAEMONS = ("zebra", "bgpd")  # start order; stopped in reverse
FRR_USER = FRR_GROUP = "frr"  # vtysh needs the vty sockets in FRR's vty group: not as root
RECORD = "daemons.json"
POLL_S = 0.05
CONFIG_ERROR = "on config line"  # FRR's "No such command on config line 3: ..." and its siblings


class FrrError(RuntimeError):
    """A daemon did not start, answer or stop (the text names the node and the file to read)."""


@dataclass(frozen=True)
class Node:
    """Where one EVPN node's daemons live: its namespace and its directory of files."""

    lab: str
    name: str

    @property
    def ns(self) -> str:
        return names.namespace(self.lab, self.name)

    @property
    def dir(self) -> Path:
        return state_dir(self.lab) / "frr" / self.name

    def __str__(self) -> str:
        return f"{self.lab}/{self.name}"


def available() -> str | None:
    """None if FRR can run here, else why not (for skips and errors)."""
    for daemon in DAEMONS:
        if not os.access(FRR_BIN / daemon, os.X_OK):
            return f"{FRR_BIN / daemon} missing (apt-get install frr)"
    if shutil.which(VTYSH) is None:
        return "vtysh missing (apt-get install frr)"
    if shutil.which("nsenter") is None:
        return "nsenter missing (apt-get install util-linux)"
    try:
        pwd.getpwnam(FRR_USER)
    except KeyError:
        return f"no user {FRR_USER} (installed with the frr package)"
    return None


def _proc_start(pid: int) -> int | None:
    """The start time of a live process (field 22 of its stat); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _reap(pid: int) -> None:
    """Collect the exit status if the daemon is our own child (started by this process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _prepare(node: Node, configs: evpn.Config) -> None:
    missing = set(DAEMONS) - set(configs)
    if missing:
        raise FrrError(f"{node}: no config for {', '.join(sorted(missing))}")
    node.dir.mkdir(parents=True, exist_ok=True)
    # The daemons run as frr: every directory above theirs must let others through (a umask
    # of 077 when the lab was made would stop them with nothing in their logs).
    node.dir.parent.chmod(0o755)
    for parent in node.dir.parents:
        if parent.stat().st_mode & 0o001 == 0:
            raise FrrError(
                f"{node}: {parent} is not searchable by others, FRR (user {FRR_USER}) cannot reach {node.dir}"
            )
        if parent == state_dir(node.lab).parent:
            break
    # sockets of daemons that died (a crash, a KILL): start() waits for fresh ones to appear
    for stale in ("zserv.api", *(f"{d}.{ext}" for d in DAEMONS for ext in ("vty", "pid"))):
        (node.dir / stale).unlink(missing_ok=True)
    uid, gid = pwd.getpwnam(FRR_USER).pw_uid, grp.getgrnam(FRR_GROUP).gr_gid
    os.chown(node.dir, uid, gid)  # the daemons run as frr and make their sockets here
    for daemon in DAEMONS:
        conf = node.dir / f"{daemon}.conf"
        conf.write_text(configs[daemon])
        os.chown(conf, uid, gid)
        conf.chmod(0o640)


def _command(node: Node, daemon: str) -> list[str]:
    d = node.dir
    return [
        "nsenter",
        f"--net={netns.path(node.ns)}",  # nsenter execs (no fork): the pid stays the daemon's
        str(FRR_BIN / daemon),
        "-f", str(d / f"{daemon}.conf"),
        "-z", str(d / "zserv.api"),
        "-i", str(d / f"{daemon}.pid"),
        "--vty_socket", str(d),
        "-u", FRR_USER,
        "-g", FRR_GROUP,
        "-P", "0",  # no TCP vty: vtysh goes through the unix sockets above
        "--log", f"file:{d / daemon}.log",
        "--log-level", "info",
    ]  # fmt: skip


def start(node: Node, configs: evpn.Config, timeout: float = 10.0) -> None:
    """Write the daemons' `configs`, start zebra then bgpd in the node's namespace; return once
    both answer.

    On failure the daemons already started are stopped again (the caller's rollback need not
    know them).
    """
    if reason := available():
        raise FrrError(f"{node}: FRR cannot run: {reason}")
    if alive := running(node):
        raise FrrError(f"{node}: FRR already runs here ({', '.join(f'{d} {p}' for d, p in alive.items())})")
    _prepare(node, configs)
    started: list[dict[str, Any]] = []
    try:
        for daemon in DAEMONS:
            with open(node.dir / f"{daemon}.out", "ab") as out:
                proc = subprocess.Popen(
                    _command(node, daemon),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,  # a Ctrl-C of the builder must not reach it
                )
            started.append({"daemon": daemon, "pid": proc.pid, "start": _proc_start(proc.pid)})
            _record(node, started)
            _wait_socket(node, daemon, proc, timeout)
    except BaseException:
        stop(node)
        raise
    log.info("%s: FRR up (%s)", node, ", ".join(f"{d['daemon']} {d['pid']}" for d in started))


def _wait_socket(node: Node, daemon: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    sock = node.dir / f"{daemon}.vty"
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if proc.poll() is not None:
            raise FrrError(f"{node}: {daemon} exited {proc.returncode}: see {node.dir / daemon}.out")
        if time.monotonic() > deadline:
            raise FrrError(f"{node}: {daemon} has no {sock} after {timeout:g} s")
        time.sleep(POLL_S)
    proc.returncode = 0  # we never wait() on it: it outlives us; silence Popen's ResourceWarning
    # The vty socket opens once the config was read, and a daemon runs on past lines it could
    # not parse: a lab with half its config would fail later and far from the cause.
    log_file = node.dir / f"{daemon}.log"
    errors = [line for line in _read(log_file).splitlines() if CONFIG_ERROR in line]
    if errors:
        raise FrrError(f"{node}: {daemon} rejected its config ({log_file}): {errors[0]}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _record(node: Node, daemons: list[dict[str, Any]]) -> None:
    tmp = node.dir / f"{RECORD}.tmp"
    tmp.write_text(json.dumps({"ns": node.ns, "daemons": daemons}, indent=2))
    tmp.replace(node.dir / RECORD)


def running(node: Node) -> dict[str, int]:
    """daemon -> pid of the recorded daemons still alive (same pid and start time)."""
    try:
        record = json.loads((node.dir / RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {d["daemon"]: d["pid"] for d in record["daemons"] if _proc_start(d["pid"]) == d["start"]}


def stop(node: Node, grace: float = 5.0) -> list[int]:
    """TERM (then KILL after `grace`) the node's recorded daemons, bgpd first; returns their pids.

    A pid whose start time differs is another process by now: left alone.
    """
    alive = running(node)
    pids = [alive[d] for d in reversed(DAEMONS) if d in alive]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while running(node) and time.monotonic() < deadline:
            for pid in pids:
                _reap(pid)
            time.sleep(POLL_S)
        if not running(node):
            break
    return pids


# -- asking the daemons --------------------------------------------------------------------------
def vtysh(node: Node, *commands: str, daemon: str | None = None, timeout: float = 10.0) -> str:
    """Run vtysh commands against the node's daemons (their vty sockets, not /var/run/frr)."""
    argv = [VTYSH, "--vty_socket", str(node.dir)]
    if daemon is not None:
        argv += ["-d", daemon]
    for command in commands:
        argv += ["-c", command]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise FrrError(
            f"{node}: vtysh {' '.join(commands)!r} exited {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def show_json(node: Node, command: str, daemon: str = "bgpd") -> Any:
    text = vtysh(node, f"{command} json", daemon=daemon)
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        raise FrrError(f"{node}: {command!r} is not JSON: {err}: {text[:200]!r}") from None


def sessions(node: Node) -> dict[str, Any]:
    """`show bgp l2vpn evpn summary json`: the EVPN sessions of the node."""
    return show_json(node, "show bgp l2vpn evpn summary")


def wait_established(node: Node, peers: list[IPv4Address], timeout: float = 30.0) -> float:
    """Poll until every session to `peers` is Established; returns the seconds it took."""
    began = time.monotonic()
    while True:
        states = evpn.established(sessions(node), peers)
        if all(state == "Established" for state in states.values()):
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise FrrError(f"{node}: BGP sessions not established after {timeout:g} s: {states}")
        time.sleep(POLL_S * 2)


def routes(node: Node) -> list[evpn.EvpnRoute]:
    """The type-2/type-3 routes bgpd holds on the node (best paths), for `nlab overlay show`."""
    return evpn.parse_routes(show_json(node, "show bgp l2vpn evpn route"))


def macs(node: Node) -> dict[str, Any]:
    """zebra's `show evpn mac vni all json`: per VNI, each MAC local or remote (with its VTEP)."""
    return show_json(node, "show evpn mac vni all", daemon="zebra")


def programmed(node: Node) -> dict[int, set[tuple[str, IPv4Address]]]:
    """Per VNI, the FDB entries zebra installed from BGP (origin `bgp` for `nlab overlay show`)."""
    return evpn.zebra_fdb(macs(node), show_json(node, "show evpn vni", daemon="zebra"))
