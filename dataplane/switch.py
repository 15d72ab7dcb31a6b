"""The VLAN dataplane of one switching namespace (a hypervisor's vSwitches or a physical switch).

    port ──TC ingress: vlan_from_port──> bridge ──TC egress: vlan_to_port──> port

`SwitchDataplane.load` compiles and pins; `SwitchDataplane.open` reopens the pins from any
process (the CLI), so a live dataplane can be read and changed without a daemon.
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dataplane import abi, bpf, syscalls, tc
from dataplane.abi import Direction, Reason
from dataplane.firewall import FIREWALL_MAPS, Firewall
from dataplane.mirror import Mirrors
from dataplane.overlay import MAPS as OVERLAY_MAPS
from dataplane.overlay import PROGRAM as OVERLAY_PROGRAM
from dataplane.overlay import Overlay
from dataplane.team import TEAM_MAPS, Team

SOURCE = "vswitch.c"
PROGRAMS = (
    "vlan_from_port",
    "vlan_to_port",
    "port_from_vm",
    "port_to_vm",
    "mirror_port_rx",
    "ct_reap",
    "nlab_empty",
)
# Compiled with the others, loaded and pinned only where first used (`program`): the kernel
# verifies a program at each load, and only a VTEP host needs the underlay guard.
ON_DEMAND = (OVERLAY_PROGRAM,)
MIRROR_MAPS = ("mirror_ports", "mirror_sessions", "mirror_stats")
MAPS = ("ports", "counters", *TEAM_MAPS, *FIREWALL_MAPS, *MIRROR_MAPS, *OVERLAY_MAPS)
# a physical switch has no VM ports: no port security, no firewall (-DNLAB_SWITCH_ONLY)
SWITCH_PROGRAMS = ("vlan_from_port", "vlan_to_port", "nlab_empty")
SWITCH_MAPS = ("ports", "counters", *TEAM_MAPS)


class PortError(ValueError):
    pass


@dataclass(frozen=True)
class PortVlans:
    """A port's VLAN policy in dataplane terms (the topology's PortProfile, flattened)."""

    access: int | None = None
    allowed: frozenset[int] = frozenset()
    untagged: bool = True
    guard: bool = False  # an edge port: refuse switch-control frames from the device

    def to_abi(self) -> abi.Port:
        port = abi.Port()
        if self.access is not None:
            port.mode, port.access_vid = abi.Mode.ACCESS, self.access
        else:
            port.mode = abi.Mode.TRUNK
            for vid in self.allowed:
                port.allowed[vid >> 6] |= 1 << (vid & 63)
        port.flags = (abi.PORT_F_UNTAGGED if self.untagged else 0) | (abi.PORT_F_GUARD if self.guard else 0)
        return port


@dataclass(frozen=True)
class Counts:
    packets: int
    bytes: int


class SwitchDataplane:
    def __init__(
        self,
        programs: dict[str, int],
        maps: dict[str, int],
        owned: bpf.Loaded | None,
        pin_dir: Path | None = None,
    ) -> None:
        self.programs = programs
        self.maps = maps
        self._owned = owned
        self._pin_dir = pin_dir
        self._ncpu = syscalls.num_possible_cpus()

    @classmethod
    def load(
        cls, pin_dir: Path | None = None, vm_ports: bool = True, like: SwitchDataplane | None = None
    ) -> SwitchDataplane:
        """Compile and load; `vm_ports` False for a physical switch (VLAN programs only). With
        `like` (a dataplane of the same kind this process loaded), no compile: the same programs
        with maps of their own (one dataplane per switching namespace, as each kernel has its own)."""
        defines = {"NLAB_MAX_IFINDEX": abi.MAX_IFINDEX}
        if like is not None:
            kind = PROGRAMS if vm_ports else SWITCH_PROGRAMS
            if like._owned is None or set(like.programs) - set(ON_DEMAND) != set(kind):
                raise ValueError("`like` must be a dataplane of the same kind loaded by this process")
            loaded = bpf.instantiate(like._owned, kind)
        elif vm_ports:
            loaded = bpf.load(SOURCE, PROGRAMS, MAPS, defines, later=ON_DEMAND)
        else:
            loaded = bpf.load(SOURCE, SWITCH_PROGRAMS, SWITCH_MAPS, {**defines, "NLAB_SWITCH_ONLY": 1})
        if pin_dir is not None:
            try:
                bpf.pin(loaded, pin_dir)
            except BaseException:
                loaded.close()  # pins already made stay for the owner of pin_dir to remove
                raise
        return cls(loaded.programs, loaded.maps, loaded, pin_dir)

    @classmethod
    def open(cls, pin_dir: Path) -> SwitchDataplane:
        """Reopen the pins of a loaded dataplane (either kind), with the programs loaded on demand
        that were."""
        vm_ports = (pin_dir / "prog_port_from_vm").exists()
        programs = {
            name: syscalls.obj_get(pin_dir / f"prog_{name}")
            for name in (PROGRAMS if vm_ports else SWITCH_PROGRAMS)
        }
        programs |= {
            name: syscalls.obj_get(pin_dir / f"prog_{name}")
            for name in ON_DEMAND
            if vm_ports and (pin_dir / f"prog_{name}").exists()
        }
        maps = {name: syscalls.obj_get(pin_dir / name) for name in (MAPS if vm_ports else SWITCH_MAPS)}
        return cls(programs, maps, None)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
        else:
            for fd in (*self.programs.values(), *self.maps.values()):
                os.close(fd)
        self.programs, self.maps = {}, {}

    def __enter__(self) -> SwitchDataplane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def program(self, name: str) -> int:
        """A program's fd; one of ON_DEMAND is loaded (and pinned beside the others) at its first use,
        by the process that loaded this dataplane."""
        if name not in self.programs:
            if name not in ON_DEMAND or self._owned is None:
                raise bpf.LoadError(f"program {name} is not loaded (only the process that loaded it can)")
            fd = bpf.load_later(self._owned, name)
            if self._pin_dir is not None:
                syscalls.obj_pin(fd, self._pin_dir / f"prog_{name}")
        return self.programs[name]

    # -- ports -----------------------------------------------------------------------------------
    def configure(self, ifindex: int, vlans: PortVlans) -> None:
        """Write a port's policy; one map update, so a packet sees the old or the new, never half."""
        if not 0 < ifindex < abi.MAX_IFINDEX:
            raise PortError(f"ifindex {ifindex} is outside 1..{abi.MAX_IFINDEX - 1} (NLAB_MAX_IFINDEX)")
        bad = [v for v in vlans.allowed | ({vlans.access} if vlans.access else set()) if not 1 <= v <= 4094]
        if bad:
            raise PortError(f"VLAN {bad[0]} is not in 1..4094")
        syscalls.map_update(self.maps["ports"], ctypes.c_uint32(ifindex), vlans.to_abi())

    def unconfigure(self, ifindex: int) -> None:
        syscalls.map_update(self.maps["ports"], ctypes.c_uint32(ifindex), abi.Port())

    def port(self, ifindex: int) -> abi.Port:
        value = abi.Port()
        syscalls.map_lookup(self.maps["ports"], ctypes.c_uint32(ifindex), value)
        return value

    def attach(self, sock: socket.socket, ifindex: int, vm: bool = False) -> None:
        """Both hooks of a port; configure it first, or it drops everything (fail closed).

        `sock` is a NETLINK_ROUTE socket opened in the port's namespace. A VM's port (`vm`) gets
        the programs that add port security and the firewall to the VLAN policy.
        """
        ingress, egress = ("port_from_vm", "port_to_vm") if vm else ("vlan_from_port", "vlan_to_port")
        tc.add_clsact(sock, ifindex)
        tc.attach(sock, ifindex, "ingress", self.programs[ingress], ingress)
        tc.attach(sock, ifindex, "egress", self.programs[egress], egress)

    @property
    def firewall(self) -> Firewall:
        return Firewall(self.maps, self.programs["ct_reap"])

    @property
    def mirrors(self) -> Mirrors:
        return Mirrors(self.maps)

    @property
    def team(self) -> Team:
        """Team members and port faults (either kind of dataplane)."""
        return Team(self.maps)

    @property
    def overlay(self) -> Overlay:
        """The underlay guard of a VTEP host (a hypervisor's dataplane only)."""
        return Overlay(self.maps, lambda: self.program(OVERLAY_PROGRAM), self.counters)

    def attach_mirror_port(self, sock: socket.socket, ifindex: int) -> None:
        """The far end of a host's mirror port (a veth pair): truncates copies, sends them on."""
        tc.add_clsact(sock, ifindex)
        tc.attach(sock, ifindex, "ingress", self.programs["mirror_port_rx"], "mirror_port_rx")

    @staticmethod
    def detach(sock: socket.socket, ifindex: int) -> None:
        tc.detach(sock, ifindex)

    # -- counters --------------------------------------------------------------------------------
    def counters(self, ifindex: int) -> dict[tuple[Direction, Reason], Counts]:
        """Non-zero counters of a port, summed over CPUs."""
        values = (abi.Counter * self._ncpu)()
        result = {}
        for direction in Direction:
            for reason in Reason:
                key = ctypes.c_uint32(abi.counter_index(ifindex, direction, reason))
                if not syscalls.map_lookup(self.maps["counters"], key, values):
                    continue
                packets = sum(v.packets for v in values)
                if packets:
                    result[(direction, reason)] = Counts(packets, sum(v.bytes for v in values))
        return result

    def all_counters(self, ifindexes: Iterable[int]) -> dict[int, dict[tuple[Direction, Reason], Counts]]:
        return {ifindex: self.counters(ifindex) for ifindex in ifindexes}
