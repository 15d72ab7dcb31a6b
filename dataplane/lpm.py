"""The NIC firewall's maps seen from user space: what they hold, in which bytes, and how to update them.

`Compiled` is the contents `fwpolicy.compile` produces; `encode` turns it into ctypes pairs for
the kernel; `Maps` replays the same bytes through `LpmTrie`, a model of the kernel's LPM lookup,
so `Compiled.lookup` decides exactly as the program will; `diff` lists the writes between two. Also here:
the cover of a port range by aligned power-of-two blocks and the partition of ranked ranges.

Every LPM key starts with `__u32 prefixlen` in host order (struct bpf_lpm_trie_key_hdr); the
kernel matches the first `prefixlen` bits of the bytes that follow, most significant bit of the
first byte first. So everything after it is in network order, and the port is last: a port
prefix is then a bit prefix of the key. The layouts are those of ebpf/include/abi/fw.h (packed),
mirrored in dataplane/abi/fw.py:

    IpcacheKey   22 bytes  prefixlen | gen u8 | family u8 (4|6) | addr u8[16]
                           prefixlen = 16 + CIDR length; IPv4 in addr[0..3], the rest zero
    IpcacheValue  4 bytes  identity u32 (host order: values are not matched)
    PolicyKey    16 bytes  prefixlen | gen u8 | direction u8 | proto u8 | pad u8 | endpoint be16
                           | identity be32 | port be16          prefixlen = 80 + port bits (80..96)
    PolicyValue  16 bytes  rule u32 | verdict u8 | pad u8[3] | rank u64   (host order)

Rules whose peer is anyone are not repeated under every identity: their rows carry the WILDCARD
identity, the program looks up the peer's identity and the wildcard, and the row of lower
`rank` wins. A rank is the rule's precedence as one number (`rank_of`), the same in every
compile, so rows of an old and a new policy compare as their rules do.

`gen` is the generation bit of the double-buffered policy: the program looks up only keys of the
live generation, so a whole new policy can be written beside it and switched on by one write.
IPv4 and IPv6 share one ipcache trie: the family byte sits inside the prefix, so a v4 entry never
matches a v6 address (one map and one lookup in the program).
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import NamedTuple, TypeVar

from dataplane.abi.fw import (
    IDENTITY_ANY,
    IPCACHE_FIXED_BITS,
    POLICY_FIXED_BITS,
    FwDirection,
    IpcacheKey,
    IpcacheValue,
    PolicyKey,
    PolicyValue,
    Verdict,
)

IPAddress = IPv4Address | IPv6Address

FAMILY_V4 = 4
FAMILY_V6 = 6
PORT_BITS = 16
DIRECTIONS = {"out": int(FwDirection.OUT), "in": int(FwDirection.IN)}  # seen from the endpoint
ACTIONS = {"deny": int(Verdict.DENY), "allow": int(Verdict.ALLOW)}  # a zeroed defaults slot fails closed
ACTION_NAMES = {code: name for name, code in ACTIONS.items()}
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
PROTO_OTHER = 0  # the key's proto for every other IP protocol, with port 0
WILDCARD = IDENTITY_ANY  # the identity of rows that hold for any peer
MAX_PRIORITY = 0xFFFF
KEY_PROTOS = (PROTO_OTHER, *PROTOCOLS.values())


def rank_of(priority: int, action: str, rule_id: int) -> int:
    """A rule's precedence (priority, deny before allow, id) as one number: lower wins."""
    return priority << 33 | ACTIONS[action] << 32 | rule_id


def ipcache_key(network: IPv4Network | IPv6Network, gen: int = 0) -> IpcacheKey:
    """The key of an ipcache entry for `network`."""
    key = IpcacheKey(prefixlen=IPCACHE_FIXED_BITS + network.prefixlen, gen=gen)
    key.family = FAMILY_V4 if network.version == 4 else FAMILY_V6
    packed = network.network_address.packed
    ctypes.memmove(key.addr, packed, len(packed))
    return key


def ipcache_lookup_key(ip: IPv4Address | IPv6Address, gen: int = 0) -> IpcacheKey:
    """The key the program looks up for a packet's peer address (all address bits)."""
    return ipcache_key(IPv4Network(ip) if ip.version == 4 else IPv6Network(ip), gen)


def policy_key(
    endpoint: int,
    direction: int,
    proto: int,
    identity: int,
    port: int,
    port_bits: int = PORT_BITS,
    gen: int = 0,
) -> PolicyKey:
    """A policy key; `port_bits` leading bits of the port are significant (all 16 for a lookup)."""
    key = PolicyKey(POLICY_FIXED_BITS + port_bits, gen, direction, proto)
    key.endpoint, key.identity, key.port = endpoint, identity, port
    return key


def range_cover(lo: int, hi: int, bits: int = PORT_BITS) -> list[tuple[int, int]]:
    """Cover [lo, hi] exactly with the fewest aligned blocks, as (base, significant bits).

    Greedy from lo: the largest block aligned at lo that stays inside the range. Each block is
    then maximal (its parent block sticks out of the range), which makes the cover minimal.
    """
    if not 0 <= lo <= hi < 1 << bits:
        raise ValueError(f"[{lo}, {hi}] is not a range of {bits}-bit values")
    cover = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << bits
        while size > hi - lo + 1:
            size >>= 1
        cover.append((lo, bits - size.bit_length() + 1))
        lo += size
    return cover


T = TypeVar("T", bound=Hashable)


def paint(ranges: Sequence[tuple[int, int, T]]) -> list[tuple[int, int, T]]:
    """Partition the union of ranked inclusive ranges into maximal runs of the same winner.

    `ranges[i]` beats `ranges[j]` where they overlap when i < j. A sweep over range ends with a
    heap of the ranges open at each point: O(n log n). Adjacent runs with equal values merge.
    """
    starts = sorted((lo, rank) for rank, (lo, _, _) in enumerate(ranges))
    points = sorted({p for lo, hi, _ in ranges for p in (lo, hi + 1)})
    open_ranks: list[int] = []
    runs: list[tuple[int, int, T]] = []
    nxt = 0
    for a, b in itertools.pairwise(points):
        while nxt < len(starts) and starts[nxt][0] <= a:
            heapq.heappush(open_ranks, starts[nxt][1])
            nxt += 1
        while open_ranks and ranges[open_ranks[0]][1] < a:
            heapq.heappop(open_ranks)
        if not open_ranks:
            continue
        value = ranges[open_ranks[0]][2]
        if runs and runs[-1][2] == value and runs[-1][1] == a - 1:
            runs[-1] = (runs[-1][0], b - 1, value)
        else:
            runs.append((a, b - 1, value))
    return runs


class LpmTrie:
    """What BPF_MAP_TYPE_LPM_TRIE does with update, delete and lookup, for one key type.

    Entries are kept by (prefixlen, covered bits); a lookup tries the stored prefix lengths from
    the longest down, as many probes as there are distinct lengths (at most 17 for the policy).
    """

    def __init__(self, key_type: type[ctypes.Structure]) -> None:
        self.data_bits = (ctypes.sizeof(key_type) - 4) * 8
        self._entries: dict[tuple[int, int], bytes] = {}
        self._lengths: Counter[int] = Counter()

    def _slot(self, key: ctypes.Structure) -> tuple[int, int]:
        plen = key.prefixlen  # type: ignore[attr-defined]
        if not 0 <= plen <= self.data_bits:
            raise ValueError(f"prefixlen {plen} exceeds {self.data_bits} data bits")
        data = int.from_bytes(bytes(key)[4:], "big")
        return plen, data >> (self.data_bits - plen)

    def update(self, key: ctypes.Structure, value: ctypes.Structure) -> None:
        slot = self._slot(key)
        if slot not in self._entries:
            self._lengths[slot[0]] += 1
        self._entries[slot] = bytes(value)

    def delete(self, key: ctypes.Structure) -> None:
        slot = self._slot(key)
        del self._entries[slot]  # KeyError where the kernel says ENOENT
        self._lengths[slot[0]] -= 1
        if not self._lengths[slot[0]]:
            del self._lengths[slot[0]]

    def lookup(self, key: ctypes.Structure) -> bytes | None:
        """The value bytes of the longest stored prefix of `key`, or None."""
        plen, data = self._slot(key)
        for length in sorted(self._lengths, reverse=True):
            if length <= plen:
                found = self._entries.get((length, data >> (plen - length)))
                if found is not None:
                    return found
        return None

    def snapshot(self) -> dict[tuple[int, int], bytes]:
        return dict(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def proto_number(proto: int | str) -> int:
    """An IP protocol number from a number or one of the names tcp, udp, icmp, icmpv6."""
    number = PROTOCOLS.get(proto, proto) if isinstance(proto, str) else proto
    if not isinstance(number, int) or not 0 <= number <= 255:
        raise ValueError(f"{proto!r} is not an IP protocol")
    return number


def policy_proto(version: int, number: int) -> int:
    """The protocol a packet is keyed under (policy.h policy_proto): TCP, UDP, and ICMP of the
    packet's own IP version (1 in IPv4, 58 in IPv6); every other protocol, ICMP of the other
    version included, is PROTO_OTHER, which only rules for any protocol match."""
    own_icmp = PROTOCOLS["icmpv6" if version == 6 else "icmp"]
    if number in (PROTOCOLS["tcp"], PROTOCOLS["udp"], own_icmp):
        return number
    return PROTO_OTHER


@dataclass(frozen=True)
class Verdict:
    action: str  # "allow" | "deny"
    rule_id: int | None = None  # None: the endpoint's default for the direction
    rank: int = 0  # of a compiled row (rank_of); a decision carries 0

    @property
    def allowed(self) -> bool:
        return self.action == "allow"


class PolicyPrefix(NamedTuple):
    """A policy entry: exact endpoint, direction and proto codes, identity; `port_bits` bits of `port`."""

    endpoint: int
    direction: int
    proto: int
    identity: int
    port: int
    port_bits: int


@dataclass(frozen=True)
class Compiled:
    """The contents of the firewall's maps, readable.

    ipcache: prefix -> identity; identities: identity -> the selectors (fwpolicy.Cidr, Group) its
    addresses match, 0 -> none; policy: prefix -> verdict; defaults: (endpoint, direction) -> action.
    """

    ipcache: Mapping[IPv4Network | IPv6Network, int]
    identities: Mapping[int, frozenset[Hashable]]
    policy: Mapping[PolicyPrefix, Verdict]
    defaults: Mapping[tuple[int, str], str]

    @cached_property
    def _maps(self) -> Maps:
        maps = Maps()
        for write in _writes(EMPTY, self, upsert=True):
            maps.apply(write)
        return maps

    def lookup(
        self, endpoint: int, direction: str, ip: IPAddress | str, proto: int | str, port: int = 0
    ) -> Verdict:
        """What the program decides, by LPM lookups in the encoded maps."""
        return self._maps.lookup(endpoint, direction, ip, proto, port)

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in ("ipcache", "identities", "policy", "defaults")}


EMPTY = Compiled({}, {0: frozenset()}, {}, {})


@dataclass(frozen=True)
class Write:
    """One map write of an update. `value` None deletes (a defaults slot is then zeroed: deny);
    `old` is the value replaced or deleted, None for a new key."""

    map: str  # "ipcache" | "policy" | "defaults"
    key: IPv4Network | IPv6Network | PolicyPrefix | tuple[int, str]
    value: int | Verdict | str | None
    old: int | Verdict | str | None = None


Encoded = tuple[str, ctypes.Structure | int, ctypes.Structure | ctypes.c_uint8 | None]


def encode_write(write: Write, gen: int = 0) -> Encoded:
    """(map name, key, value or None to delete) as the kernel takes them, keys in generation
    `gen`. Defaults are an array indexed by endpoint * 2 + direction of one verdict byte."""
    if write.map == "ipcache":
        value = None if write.value is None else IpcacheValue(write.value)
        return "ipcache", ipcache_key(write.key, gen), value  # type: ignore[arg-type]
    if write.map == "policy":
        verdict = write.value
        value = (
            None
            if verdict is None
            else PolicyValue(verdict.rule_id, ACTIONS[verdict.action], rank=verdict.rank)  # type: ignore[union-attr]
        )
        return "policy", policy_key(*write.key, gen=gen), value  # type: ignore[arg-type]
    endpoint, direction = write.key  # type: ignore[misc]
    value = None if write.value is None else ctypes.c_uint8(ACTIONS[write.value])  # type: ignore[index]
    return "defaults", endpoint * 2 + DIRECTIONS[direction], value


def encode(compiled: Compiled, gen: int = 0) -> dict[str, list[tuple[object, object]]]:
    """Every entry of `compiled` as ctypes (key, value) pairs per map, ready for bcc."""
    maps: dict[str, list[tuple[object, object]]] = {"ipcache": [], "policy": [], "defaults": []}
    for write in _writes(EMPTY, compiled, upsert=True):
        name, key, value = encode_write(write, gen)
        maps[name].append((key, value))
    return maps


class Maps:
    """The program's maps as the kernel would hold them after the same encoded writes, written
    and read in generation `gen`."""

    def __init__(self, gen: int = 0) -> None:
        self.gen = gen
        self.ipcache = LpmTrie(IpcacheKey)
        self.policy = LpmTrie(PolicyKey)
        self.defaults: dict[int, int] = {}

    def apply(self, write: Write) -> None:
        name, key, value = encode_write(write, self.gen)
        if name == "defaults":
            self.defaults[key] = 0 if value is None else value.value  # type: ignore[index, union-attr]
        elif value is None:
            getattr(self, name).delete(key)
        else:
            getattr(self, name).update(key, value)

    def identity(self, ip: IPAddress | str) -> int:
        found = self.ipcache.lookup(ipcache_lookup_key(ip_address(ip), self.gen))
        return IpcacheValue.from_buffer_copy(found).identity if found else 0

    def lookup(
        self, endpoint: int, direction: str, ip: IPAddress | str, proto: int | str, port: int
    ) -> Verdict:
        """The program's path: ipcache, then policy with all port bits under the peer's identity
        and under the wildcard (the lower rank wins), then the default slot."""
        number = proto_number(proto)
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port {port} is not in 0..65535")
        number = policy_proto(ip_address(ip).version, number)
        port = 0 if number == PROTO_OTHER else port
        dir_code = DIRECTIONS[direction]
        peer = self.identity(ip)
        keys = [policy_key(endpoint, dir_code, number, i, port, gen=self.gen) for i in (peer, WILDCARD)]
        found = [PolicyValue.from_buffer_copy(raw) for key in keys if (raw := self.policy.lookup(key))]
        if found:
            value = min(found, key=lambda v: v.rank)
            return Verdict(ACTION_NAMES[value.verdict], value.rule)
        return Verdict(ACTION_NAMES[self.defaults.get(endpoint * 2 + dir_code, 0)])


def _writes(old: Compiled, new: Compiled, upsert: bool) -> list[Write]:
    """Upserts (new or changed keys) or deletes (keys gone), defaults and policy first on upsert,
    ipcache longest prefix first on upsert and shortest first on delete (see `Diff`)."""
    tables = [("defaults", old.defaults, new.defaults), ("policy", old.policy, new.policy)]
    writes = []
    for name, before, after in tables:
        if upsert:
            changed = [k for k in sorted(after) if before.get(k) != after[k]]
            writes += [Write(name, k, after[k], before.get(k)) for k in changed]
        else:
            writes += [Write(name, k, None, before[k]) for k in sorted(before) if k not in after]
    before, after = old.ipcache, new.ipcache
    if upsert:
        keys = sorted(
            (k for k in after if before.get(k) != after[k]), key=lambda n: (-n.prefixlen, _order(n))
        )
        return writes + [Write("ipcache", k, after[k], before.get(k)) for k in keys]
    keys = sorted((k for k in before if k not in after), key=lambda n: (n.prefixlen, _order(n)))
    return [Write("ipcache", k, None, before[k]) for k in keys] + writes


def _order(net: IPv4Network | IPv6Network) -> tuple[int, int]:
    return net.version, int(net.network_address)


class Diff(NamedTuple):
    """The writes that turn the old maps into the new ones: `upserts` (defaults, policy, then ipcache
    longest prefix first) and `deletes` (ipcache shortest prefix first, then policy, defaults).

    Those orders keep each address at its old or its new identity, never a third one, and write an
    identity's rows before any address points to it. Written one by one, the writes still let a
    packet meet a mix of old and new rows (with the wildcard identity, an old row under one identity
    against a new row under the other): a live update is written into the spare generation and
    switched on by one write instead (`dataplane.firewall.Firewall.install`).
    """

    upserts: tuple[Write, ...]
    deletes: tuple[Write, ...]


def diff(old: Compiled, new: Compiled) -> Diff:
    """The update from `old` to `new`; `new` must be `compile(policy, prev=old)` so that an identity
    number means the same selectors in both."""
    common = old.identities.keys() & new.identities.keys()
    clash = sorted(i for i in common if old.identities[i] != new.identities[i])
    if clash:
        raise ValueError(f"identities {clash[:5]} changed meaning: compile the new policy with prev=old")
    return Diff(tuple(_writes(old, new, upsert=True)), tuple(_writes(old, new, upsert=False)))
