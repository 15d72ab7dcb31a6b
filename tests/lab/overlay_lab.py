"""A three-host VXLAN lab built directly with netns_lab.kernel (no builder), for the overlay
controller's lab tests and the BUM benchmark. Never imported by product code.

                         <p>-ul: bridge `fabric` (the flat underlay, 10.255.1.0/24)
              hv1 ─────────────── hv2 ─────────────── hv3          (ports named after hosts)
              │eth0 .11           │eth0 .12           │eth0 .13    (VTEP addresses)
    <p>-hv1   sg-10010 ─ vx-10010 sg-10010 ─ vx-10010 sg-10010 ─ vx-10010   blue (tenant blue)
              sg-10020 ─ vx-10020 sg-10020 ─ vx-10020 sg-10020 ─ vx-10020   red  (tenant red)
    VMs       a1 10.0.0.1 (blue)  a2 10.0.0.2 (blue)  a3 10.0.0.3 (blue)
              b1 10.0.0.1 (red)   b2 10.0.0.2 (red)   b3 10.0.0.3 (red)    overlapping addresses

Every namespace is `<p>-<node>` with a random prefix <p>; the lab's state dir (plan, controller
log) is /run/netns-lab/<p>. Everything is removed in `overlay_lab`'s finally. IPv6 is off in
every namespace unless asked for (`ipv6=True`: the VMs get fd00::N too): the VMs' and bridges'
MLD/ND chatter would otherwise cross the underlay and blur the BUM counts.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from netns_lab.features.overlay import controller
from netns_lab.features.overlay.plan import Member, OverlayData, Plan, SegmentSpec, plan
from netns_lab.kernel import fdb, netns
from netns_lab.kernel.netlink import Netlink, sysctl
from netns_lab.lab.state import STATE_ROOT, state_dir

HOSTS = {"hv1": "10.255.1.11", "hv2": "10.255.1.12", "hv3": "10.255.1.13"}
SEGMENTS = {"blue": 10010, "red": 10020}
VMS = {  # name: (host, segment, address)
    "a1": ("hv1", "blue", "10.0.0.1"),
    "a2": ("hv2", "blue", "10.0.0.2"),
    "a3": ("hv3", "blue", "10.0.0.3"),
    "b1": ("hv1", "red", "10.0.0.1"),
    "b2": ("hv2", "red", "10.0.0.2"),
    "b3": ("hv3", "red", "10.0.0.3"),
}
UNDERLAY = "ul"
VM_MTU = 1450  # 1500 on the underlay minus the VXLAN/UDP/IPv4/Ethernet overhead

Mode = Literal["flood", "controller"]


def vm_mac(vm: str) -> str:
    return f"02:0e:00:00:{ord(vm[0]):02x}:{int(vm[1:]):02x}"


def ipv6_of(ip: str) -> str:
    return "fd00::" + ip.rsplit(".", 1)[1]


def overlay_data(mode: Mode, ipv6: bool = False) -> OverlayData:
    segments = tuple(SegmentSpec(name, vni, name, mode) for name, vni in SEGMENTS.items())
    members = tuple(
        Member(host, vm, 0, seg, vm_mac(vm), (ip, ipv6_of(ip)) if ipv6 else (ip,))
        for vm, (host, seg, ip) in VMS.items()
    )
    return OverlayData(tuple(HOSTS.items()), segments, members)


@dataclass
class OverlayLab:
    lab: str
    mode: Mode
    plan: Plan
    ipv6: bool = False
    made: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ns(self, node: str) -> str:
        return f"{self.lab}-{node}"

    def start_controller(self, interval: float = 3600.0) -> subprocess.Popen[bytes]:
        """The controller, its first pass done. A long interval: repairs must come from events."""
        proc = controller.start(self.lab, self.ns("hv1"), self.plan, interval)
        self.procs.append(proc)
        controller.wait_ready(self.lab, proc)
        return proc

    def log(self) -> str:
        return (state_dir(self.lab) / controller.LOG).read_text()

    def ping(
        self, vm: str, ip: str, count: int = 1, interval: float = 0.2
    ) -> subprocess.CompletedProcess[str]:
        command = ["ip", "netns", "exec", self.ns(vm), "ping", "-n", "-q", "-c", str(count), "-W", "1"]
        return subprocess.run(
            [*command, "-i", str(interval), ip], capture_output=True, text=True, check=False
        )

    def tables(self, host: str) -> fdb.Tables:
        return fdb.Tables(self.ns(host))


def _create(lab: OverlayLab, node: str) -> str:
    name = lab.ns(node)
    netns.create(name)  # EEXIST on a clash: never adopt a namespace we did not make
    lab.made.append(name)
    if lab.ipv6:  # addresses usable at once: no duplicate address detection
        settings = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"}
    else:
        settings = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
    for key, value in settings.items():
        sysctl(name, key, value)
    with Netlink(name) as nl:
        nl.up("lo")
    return name


def _build(lab: OverlayLab) -> None:
    with Netlink(_create(lab, UNDERLAY)) as ul:
        ul.bridge("fabric")
        for host, vtep in HOSTS.items():
            ul.veth(host, "eth0", _create(lab, host), master="fabric", up=True)
            with Netlink(lab.ns(host)) as nl:
                nl.address("eth0", f"{vtep}/24")
                nl.up("eth0")
    for host, vtep in HOSTS.items():
        hosted = sorted({seg for h, seg, _ in VMS.values() if h == host})
        with Netlink(lab.ns(host)) as nl, fdb.Tables(lab.ns(host)) as tables:
            for seg in hosted:
                vni = SEGMENTS[seg]
                nl.bridge(f"sg-{vni}")
                tables.vxlan(f"vx-{vni}", vni, vtep, f"sg-{vni}", learning=lab.mode == "flood")
                if lab.mode == "controller":
                    tables.controller_port(f"vx-{vni}")
            for vm, (h, seg, ip) in VMS.items():
                if h == host:
                    _vm(lab, nl, vm, f"sg-{SEGMENTS[seg]}", ip)


def _vm(lab: OverlayLab, host: Netlink, vm: str, bridge: str, ip: str, new: bool = True) -> None:
    """VM `vm` (its namespace made when `new`) plugged into `bridge` of `host`, addressed, up."""
    host.veth(
        f"{vm}-0", "eth0", _create(lab, vm) if new else lab.ns(vm), mac=vm_mac(vm), master=bridge, up=True
    )
    with Netlink(lab.ns(vm)) as nl:
        nl.iproute().link("set", index=nl.index("eth0"), mtu=VM_MTU)
        nl.address("eth0", f"{ip}/24")
        if lab.ipv6:
            nl.address("eth0", f"{ipv6_of(ip)}/64")
        nl.up("eth0")


def add_vm(lab: OverlayLab, vm: str, host: str, segment: str, ip: str) -> Member:
    """A new VM on a segment the host already has (the plan is the caller's to change)."""
    with Netlink(lab.ns(host)) as nl:
        _vm(lab, nl, vm, f"sg-{SEGMENTS[segment]}", ip)
    return Member(host, vm, 0, segment, vm_mac(vm), (ip,))


def move_vm(lab: OverlayLab, vm: str, old: str, new: str, segment: str, ip: str) -> Member:
    """Unplug `vm` from host `old` (its veth pair goes) and plug it into `new`, same MAC and IP."""
    with lab.tables(old) as t:
        t.ipr.link("del", index=t.index(f"{vm}-0"))
    with Netlink(lab.ns(new)) as nl:
        _vm(lab, nl, vm, f"sg-{SEGMENTS[segment]}", ip, new=False)
    return Member(new, vm, 0, segment, vm_mac(vm), (ip,))


@contextlib.contextmanager
def overlay_lab(mode: Mode, ipv6: bool = False) -> Iterator[OverlayLab]:
    """The lab above in `mode` (no controller running yet); everything removed afterwards.
    `ipv6`: IPv6 left on, and each VM has fd00::N/64 too (N as in its 10.0.0.N)."""
    lab = OverlayLab("ov" + secrets.token_hex(3), mode, plan(overlay_data(mode, ipv6)), ipv6)
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    state_dir(lab.lab).mkdir()
    try:
        _build(lab)
        yield lab
    finally:
        for proc in lab.procs:
            if proc.poll() is None:
                controller.stop(proc)
        inodes = {i for i in (netns.inode(n) for n in lab.made) if i is not None}
        netns.kill_processes(inodes)  # pings a failed test left behind; only ours (by inode)
        for name in reversed(lab.made):
            netns.delete(name)
        shutil.rmtree(state_dir(lab.lab), ignore_errors=True)
