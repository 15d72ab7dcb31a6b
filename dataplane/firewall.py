"""The NIC firewall of one hypervisor's dataplane, from user space: vNIC settings, policy
installs with an atomic generation flip, connection table, rule hits, settings.

Works on the maps of a loaded or reopened `SwitchDataplane` (its `maps` dict of fds), so the
builder and any later `nlab fw` command use the same code on the same pinned maps.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from dataplane import abi, lpm, syscalls, testrun
from dataplane.events import now_ns
from dataplane.fwpolicy import Compiled

FIREWALL_MAPS = (
    "vnics",
    "vnic_addrs",
    "fw_config",
    "ipcache",
    "policy",
    "defaults",
    "conntrack",
    "ct_count",
    "ct_peer_count",
    "ct_epoch",
    "flow_cache",
    "policy_cache",
    "frags",
    "rule_hits",
    "fw_events",
    "events_lost",
)
NS = 1_000_000_000


@dataclass(frozen=True)
class Settings:
    ct_quota: int = 4096  # entries of flows one VM opened
    tcp_timeout: int = 3600  # seconds
    tcp_open_timeout: int = 60
    udp_timeout: int = 60
    icmp_timeout: int = 30
    frag_timeout: int = 10
    tcp_close_timeout: int = 10  # after a FIN or RST (Linux conntrack's CLOSE is 10 s too)
    ct_quota_in: int = 4096  # entries of flows opened towards one VM
    ct_quota_peer: int | None = None  # of those, entries of flows opened by one peer bucket; None: ct_quota


@dataclass(frozen=True)
class Connection:
    endpoint: int
    proto: int
    src: str
    dst: str
    sport: int
    dport: int
    state: str
    origin: str
    rule: int
    age_s: float


def addr_key(ifindex: int, ip: IPv4Address | IPv6Address) -> abi.AddrKey:
    """The `vnic_addrs` key of an address a vNIC may send from."""
    key = abi.AddrKey(ifindex=ifindex, family=ip.version)
    ctypes.memmove(key.addr, _addr16(ip), 16)
    return key


def vnic_entry(
    mac: str,
    endpoint: int,
    port_security: bool,
    any_source: bool,
    firewall: bool,
    addresses: list[IPv4Address | IPv6Address],
    dhcp_server: bool = False,
) -> abi.Vnic:
    """The `vnics` value of a vNIC (what `Firewall.set_vnic` writes; verify compares with it)."""
    vnic = abi.Vnic(endpoint=endpoint)
    ctypes.memmove(vnic.mac, _mac_bytes(mac), 6)
    for ip in addresses:  # the first of each family, checked before the hash (portsec.h)
        if ip.version == 4 and not any(vnic.ip4):
            ctypes.memmove(vnic.ip4, ip.packed, 4)
        elif ip.version == 6 and not any(vnic.ip6):
            ctypes.memmove(vnic.ip6, ip.packed, 16)
    vnic.flags = (
        (abi.VNIC_F_PORTSEC if port_security else 0)
        | (abi.VNIC_F_ANY_SOURCE if any_source else 0)
        | (abi.VNIC_F_FIREWALL if firewall else 0)
        | (abi.VNIC_F_DHCP_SERVER if dhcp_server else 0)
    )
    return vnic


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def _addr16(ip: IPv4Address | IPv6Address) -> bytes:
    return ip.packed.ljust(16, b"\0")


class Firewall:
    def __init__(self, maps: dict[str, int], reap_prog: int) -> None:
        self.maps = maps
        self._reap = reap_prog  # ct_reap (vswitch.c): deletes entries in the kernel
        self._ncpu = syscalls.num_possible_cpus()

    # -- vNICs -----------------------------------------------------------------------------------
    def set_vnic(
        self,
        ifindex: int,
        mac: str,
        endpoint: int,
        port_security: bool,
        any_source: bool,
        firewall: bool,
        addresses: Iterable[IPv4Address | IPv6Address],
        *,
        dhcp_server: bool = False,
    ) -> None:
        """Addresses first, flags last: a vNIC never checks against a half-written address list.
        `dhcp_server`: the VM may send DHCP and DHCPv6 server messages (port security refuses them
        from every other VM)."""
        addresses = list(addresses)
        for ip in addresses:
            syscalls.map_update(self.maps["vnic_addrs"], addr_key(ifindex, ip), ctypes.c_uint8(1))
        vnic = vnic_entry(mac, endpoint, port_security, any_source, firewall, addresses, dhcp_server)
        syscalls.map_update(self.maps["vnics"], ctypes.c_uint32(ifindex), vnic)

    # -- settings and policy -----------------------------------------------------------------------
    def config(self) -> abi.FwConfig:
        cfg = abi.FwConfig()
        syscalls.map_lookup(self.maps["fw_config"], ctypes.c_uint32(0), cfg)
        return cfg

    def set_settings(self, s: Settings) -> None:
        cfg = self.config()
        cfg.ct_quota = s.ct_quota
        cfg.ct_quota_in = s.ct_quota_in
        cfg.ct_quota_peer = s.ct_quota if s.ct_quota_peer is None else s.ct_quota_peer
        cfg.timeout_tcp, cfg.timeout_tcp_open = s.tcp_timeout * NS, s.tcp_open_timeout * NS
        cfg.timeout_udp, cfg.timeout_icmp, cfg.timeout_frag = (
            s.udp_timeout * NS,
            s.icmp_timeout * NS,
            s.frag_timeout * NS,
        )
        cfg.timeout_tcp_close = s.tcp_close_timeout * NS
        syscalls.map_update(self.maps["fw_config"], ctypes.c_uint32(0), cfg)

    def install(self, compiled: Compiled, previous: Compiled | None = None) -> int:
        """Write `compiled` as the next generation beside the live one, flip, then remove the old.

        Rows, ipcache entries and defaults all carry the generation bit, so one write of
        `fw_config.generation` switches every packet from the whole old policy to the whole new
        one; a packet never sees half of either. The spare half is emptied first, whatever an
        earlier install left there, so no stale row or default (of an endpoint that left the
        policy, say) can go live with the new one. `previous`, the policy live until now, only
        frees its entries early. Returns the new generation."""
        generation = self.stage(compiled)
        self.flip(generation, previous)
        return generation

    def stage(self, compiled: Compiled) -> int:
        """The first half of `install`: `compiled` written into the spare half, not live yet.
        Returns the generation that `flip` makes live."""
        too_big = sorted({ep for ep, _ in compiled.defaults if not 0 <= ep < abi.MAX_ENDPOINTS})
        if too_big:
            raise ValueError(f"endpoints {too_big[:5]} are not below NLAB_MAX_ENDPOINTS {abi.MAX_ENDPOINTS}")
        generation = self.config().generation + 1
        gen_bit = generation & 1
        self._clear_generation(gen_bit)
        encoded = lpm.encode(compiled, gen=gen_bit)
        for key, value in encoded["ipcache"]:
            syscalls.map_update(self.maps["ipcache"], key, value)
        for key, value in encoded["policy"]:
            syscalls.map_update(self.maps["policy"], key, value)
        self._write_defaults(gen_bit, dict(encoded["defaults"]))  # type: ignore[arg-type]
        return generation

    def flip(self, generation: int, previous: Compiled | None = None) -> None:
        """The second half of `install`: one write makes the staged `generation` live (every
        connection is checked against it at its next packet, flow cache slots included)."""
        cfg = self.config()
        cfg.generation = generation
        syscalls.map_update(self.maps["fw_config"], ctypes.c_uint32(0), cfg)
        if previous is not None:
            old = lpm.encode(previous, gen=(generation & 1) ^ 1)
            for key, _ in old["ipcache"]:
                syscalls.map_delete(self.maps["ipcache"], key)
            for key, _ in old["policy"]:
                syscalls.map_delete(self.maps["policy"], key)

    def _clear_generation(self, gen_bit: int) -> None:
        """Delete every row and ipcache entry of generation `gen_bit` (not the live one)."""
        tables = (("policy", lpm.PolicyKey, lpm.PolicyValue), ("ipcache", lpm.IpcacheKey, lpm.IpcacheValue))
        for name, key_type, value_type in tables:
            fd = self.maps[name]
            stale = [key for key, _ in syscalls.map_items(fd, key_type, value_type) if key.gen == gen_bit]
            for key in stale:
                syscalls.map_delete(fd, key)

    def _write_defaults(self, gen_bit: int, defaults: dict[int, ctypes.c_uint8]) -> None:
        """Every default slot of generation `gen_bit`: those of `defaults` (keyed endpoint * 2 +
        direction), deny for every other endpoint. The program reads slot
        (gen * NLAB_MAX_ENDPOINTS + endpoint) * 2 + direction."""
        deny, base = ctypes.c_uint8(0), gen_bit * abi.MAX_ENDPOINTS * 2
        for slot in range(abi.MAX_ENDPOINTS * 2):
            value = defaults.get(slot, deny)
            syscalls.map_update(self.maps["defaults"], ctypes.c_uint32(base + slot), value)

    # -- state -----------------------------------------------------------------------------------
    def connections(self) -> Iterator[Connection]:
        now = now_ns()
        for key, entry in syscalls.map_items(self.maps["conntrack"], abi.CtKey, abi.CtEntry):
            size = 4 if key.family == 4 else 16
            yield Connection(
                endpoint=key.endpoint,
                proto=key.proto,
                src=str(ip_address(bytes(key.saddr[:size]))),
                dst=str(ip_address(bytes(key.daddr[:size]))),
                sport=int.from_bytes(bytes(key.sport.to_bytes(2, "little")), "big"),
                dport=int.from_bytes(bytes(key.dport.to_bytes(2, "little")), "big"),
                state=abi.CtState(entry.state).name.lower() if entry.state in (1, 2, 3) else str(entry.state),
                origin="out" if entry.origin == abi.FwDirection.OUT else "in",
                rule=entry.rule,
                age_s=max(0.0, (now - entry.last_seen) / NS),
            )

    def quota_counts(self, endpoint: int) -> tuple[int, int, int]:
        """The entries endpoint `endpoint` holds against its quotas: opened by it, opened to it,
        and the latter once more as counted in its peer buckets."""
        counts = []
        shares = [("ct_count", endpoint * 2 + origin) for origin in abi.FwDirection]
        shares += [("ct_peer_count", endpoint * abi.PEER_BUCKETS + b) for b in range(abi.PEER_BUCKETS)]
        for name, index in shares:
            count = ctypes.c_uint32()
            syscalls.map_lookup(self.maps[name], ctypes.c_uint32(index), count)
            counts.append(count.value)
        return counts[0], counts[1], sum(counts[2:])

    def gc(self) -> int:
        """Delete expired connection entries (the program deletes those it meets); returns how many.

        The candidates are picked here, but the kernel checks each one again as it deletes it:
        a flow refreshed meanwhile stays."""
        cfg, now = self.config(), now_ns()
        table = syscalls.map_items(self.maps["conntrack"], abi.CtKey, abi.CtEntry)
        expired = [k for k, e in table if now - e.last_seen > _timeout(cfg, k.proto, e.state)]
        return sum(self.reap(key, force=False) for key in expired)

    def forget(self, key: abi.CtKey) -> bool:
        """Delete one connection entry, alive or not, and give back its quota share; False if it
        was gone."""
        return self.reap(key, force=True)

    def reap(self, key: abi.CtKey, force: bool = False) -> bool:
        """Through `ct_reap`, which deletes and releases the VM's quota share in one place with
        the datapath's atomic count: a read-modify-write from here would race the program."""
        request = abi.CtReap(key=key, force=int(force))
        return testrun.run(self._reap, bytes(request)).retval == 1

    def rewritten(self, key: abi.CtKey) -> None:
        """Tell the dataplane that the entry of `key` was written in place (or deleted) by user
        space, not through `reap`: the flow cache stops passing packets on what it was."""
        testrun.run(self._reap, bytes(abi.CtReap(key=key, force=abi.REAP_REWRITTEN)))

    def rule_hits(self, rules: Iterable[int]) -> dict[int, tuple[int, int]]:
        values = (abi.Counter * self._ncpu)()
        result = {}
        for rule in rules:
            if syscalls.map_lookup(self.maps["rule_hits"], ctypes.c_uint32(rule), values):
                result[rule] = (sum(v.packets for v in values), sum(v.bytes for v in values))
        return result

    def events_lost(self) -> int:
        values = (ctypes.c_uint64 * self._ncpu)()
        syscalls.map_lookup(self.maps["events_lost"], ctypes.c_uint32(0), values)
        return sum(values)


def _timeout(cfg: abi.FwConfig, proto: int, state: int) -> int:
    if proto == 6:
        if state == abi.CtState.ESTABLISHED:
            return cfg.timeout_tcp
        return cfg.timeout_tcp_close if state == abi.CtState.CLOSING else cfg.timeout_tcp_open
    if proto in (1, 58):
        return cfg.timeout_icmp
    return cfg.timeout_udp
