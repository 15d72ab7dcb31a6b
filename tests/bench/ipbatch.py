"""The baseline of the scale benchmark: a lab's namespaces, bridges and veths made by one `ip -batch`.

    ip -force -batch FILE   (one process, started inside a helper namespace <lab>-ipb)

      netns add <lab>-tor1, <lab>-hv0.., <lab>-vm0..
      link add fabric  index 2   netns <lab>-tor1 up type bridge
      link add vs0     index 2   netns <lab>-hv0  up type bridge
      link add hv0-eth0 index 3  netns <lab>-tor1 master if2 up type veth peer name eth0 netns <lab>-hv0
      link add vm0-0   index 4   netns <lab>-hv0  master if2 up type veth peer name eth0 netns <lab>-vm0 \
          address <the MAC our builder gives vm0>

One ip process cannot reach inside several namespaces: `ip -batch` lines take no `-n`, and
`link set`/`addr add` resolve devices in the process's own namespace. So every link is created
directly where it lives (`netns` on the device and on the peer), each device gets an explicit
ifindex, and masters are named by that index (`if2`), which the kernel resolves in the new
device's own namespace. The process itself runs inside a lab-owned, empty helper namespace:
a name it resolves can never be a device of the root namespace.

What one process cannot do, and the baseline therefore leaves out (`OMITTED`): loopback up in
each namespace, the peer end of each veth up (`up` on a veth peer is refused with ENOTCONN),
the host pNIC enslaved to its vSwitch, and the VM addresses. Our builder does all of them, so the
baseline is a lower bound: it does fewer netlink requests than the lab needs.

`ip -n NS -batch` is no way out: `-n` gives ip a private mount namespace, and a `netns add`
made there never appears in /run/netns of anyone else.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from netns_lab.kernel import netns
from netns_lab.topology import names
from netns_lab.topology.model import Topology

OMITTED = (
    "lo up in every namespace",
    "the peer end of every veth up (host pNIC, VM NIC)",
    "host pNIC enslaved to its vSwitch",
    "VM addresses",
)


class BatchError(RuntimeError):
    pass


def helper_namespace(lab: str) -> str:
    """The empty namespace the `ip` process runs in (part of the lab: same prefix)."""
    return names.namespace(lab, "ipb")


def namespaces(topo: Topology) -> list[str]:
    """Every namespace the baseline makes, in creation order (the helper excluded)."""
    return [names.namespace(topo.lab, node) for node in topo.node_names()]


class _Indexes:
    """Explicit ifindexes per namespace (1 is lo), so masters can be named by index."""

    def __init__(self) -> None:
        self._next: dict[str, int] = defaultdict(lambda: 2)
        self._of: dict[tuple[str, str], int] = {}

    def new(self, ns: str, name: str) -> int:
        index = self._next[ns]
        self._next[ns] = index + 1
        self._of[ns, name] = index
        return index

    def of(self, ns: str, name: str) -> int:
        return self._of[ns, name]


def up_lines(topo: Topology) -> Iterator[str]:
    """The `ip -batch` lines that make the lab's namespaces, bridges and veths."""
    ns = functools.partial(names.namespace, topo.lab)
    idx = _Indexes()
    for name in namespaces(topo):
        yield f"netns add {name}"
    for switch in topo.switches:
        i = idx.new(ns(switch.name), names.SWITCH_BRIDGE)
        yield f"link add {names.SWITCH_BRIDGE} index {i} netns {ns(switch.name)} up type bridge"
    if topo.networks:
        raise BatchError("the baseline covers switches, hosts and VMs only (no networks)")
    for host in topo.hosts:
        for vswitch in host.vswitches:
            i = idx.new(ns(host.name), vswitch.name)
            yield f"link add {vswitch.name} index {i} netns {ns(host.name)} up type bridge"
        for pnic in host.pnics:
            sw = ns(pnic.switch)
            port = names.switch_port(host.name, pnic.name)
            i, master = idx.new(sw, port), idx.of(sw, names.SWITCH_BRIDGE)
            peer = idx.new(ns(host.name), pnic.name)
            yield (
                f"link add {port} index {i} netns {sw} master if{master} up"
                f" type veth peer name {pnic.name} index {peer} netns {ns(host.name)}"
            )
    for vm in topo.vms:
        hv = ns(vm.host)
        for nic in vm.nics:
            port = names.vm_port(vm.name, nic.index)
            i, master = idx.new(hv, port), idx.of(hv, nic.vswitch)
            peer = idx.new(ns(vm.name), nic.name)
            yield (
                f"link add {port} index {i} netns {hv} master if{master} up"
                f" type veth peer name {nic.name} index {peer} netns {ns(vm.name)} address {nic.mac}"
            )


def down_lines(topo: Topology) -> Iterator[str]:
    for name in reversed(namespaces(topo)):
        yield f"netns del {name}"


def write_script(lines: Iterator[str], directory: Path) -> Path:
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".ip", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    return Path(f.name)


def run(script: Path, inside: str | None = None) -> None:
    """One `ip -force -batch` process; inside `inside` (fork copies this thread's namespace)."""
    where = netns.inside(inside) if inside is not None else contextlib.nullcontext()
    with where:
        proc = subprocess.run(["ip", "-force", "-batch", str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BatchError(f"ip -batch {script.name} exited with {proc.returncode}: {proc.stderr.strip()}")
