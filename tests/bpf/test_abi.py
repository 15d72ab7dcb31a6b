"""ebpf/include/abi.h and dataplane/abi.py describe one ABI: every value and every struct agree.

The values are read from the headers as text (no root needed). The struct layouts are taken
from the compiler: a tiny program declares maps whose values are the header's structs, and
bcc hands back their layout as ctypes types (root: creating maps needs CAP_BPF).
"""

from __future__ import annotations

import ctypes
import enum
import re
from pathlib import Path

import pytest

from dataplane import abi, lpm
from tests.bpf.conftest import require_kernel

INCLUDE = Path(__file__).resolve().parents[2] / "ebpf" / "include"
DEFINE = re.compile(r"^\s*#\s*define\s+(NLAB_\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", re.MULTILINE)

# prefix of a family of defines -> the Python enum that mirrors it
ENUMS: dict[str, type[enum.IntEnum]] = {
    "NLAB_DROP_": abi.Reason,
    "NLAB_DIR_": abi.Direction,
    "NLAB_MODE_": abi.Mode,
    "NLAB_FW_": abi.FwDirection,
    "NLAB_VERDICT_": abi.Verdict,
    "NLAB_CT_": abi.CtState,
}
# single defines -> their Python constant
CONSTANTS = {
    "NLAB_PASS": abi.Reason.PASS,
    "NLAB_MAX_IFINDEX": abi.MAX_IFINDEX,
    "NLAB_NR_REASONS": abi.NR_REASONS,
    "NLAB_NR_DIRS": abi.NR_DIRS,
    "NLAB_CB_VLAN": abi.CB_VLAN,
    "NLAB_NO_VLAN": abi.NO_VLAN,
    "NLAB_PORT_F_UNTAGGED": abi.PORT_F_UNTAGGED,
    "NLAB_PORT_F_GUARD": abi.PORT_F_GUARD,
    "NLAB_MAX_ENDPOINTS": abi.MAX_ENDPOINTS,
    "NLAB_PEER_BUCKETS": abi.PEER_BUCKETS,
    "NLAB_MAX_RULES": abi.MAX_RULES,
    "NLAB_CT_SIZE": abi.CT_SIZE,
    "NLAB_POLICY_SIZE": abi.POLICY_SIZE,
    "NLAB_IPCACHE_SIZE": abi.IPCACHE_SIZE,
    "NLAB_POLICY_FIXED_BITS": lpm.POLICY_FIXED_BITS,
    "NLAB_IPCACHE_FIXED_BITS": lpm.IPCACHE_FIXED_BITS,
    "NLAB_IDENTITY_ANY": lpm.WILDCARD,
    "NLAB_VNIC_F_PORTSEC": abi.VNIC_F_PORTSEC,
    "NLAB_VNIC_F_FIREWALL": abi.VNIC_F_FIREWALL,
    "NLAB_VNIC_F_ANY_SOURCE": abi.VNIC_F_ANY_SOURCE,
    "NLAB_VNIC_F_DHCP_SERVER": abi.VNIC_F_DHCP_SERVER,
    "NLAB_FRAG_PENDING": abi.FRAG_PENDING,
    "NLAB_IPV6_MAX_EXT": abi.IPV6_MAX_EXT,
    "NLAB_CB_MIRROR": abi.CB_MIRROR,
    "NLAB_MAX_MIRRORS": abi.MAX_MIRRORS,
    "NLAB_MIRROR_PER_PORT": abi.MIRROR_PER_PORT,
    "NLAB_TAP_OUT_BEFORE": abi.TAP_OUT_BEFORE,
    "NLAB_TAP_OUT_AFTER": abi.TAP_OUT_AFTER,
    "NLAB_TAP_IN_BEFORE": abi.TAP_IN_BEFORE,
    "NLAB_TAP_IN_AFTER": abi.TAP_IN_AFTER,
    "NLAB_MIRROR_PORT_ANALYZER": abi.MIRROR_PORT_ANALYZER,
    "NLAB_MIRROR_F_PROMISC": abi.MIRROR_F_PROMISC,
    "NLAB_MIRROR_MARK": abi.MIRROR_MARK,
    "NLAB_MIRROR_MARK_MASK": abi.MIRROR_MARK_MASK,
    "NLAB_MIRROR_DELIVER": abi.MIRROR_DELIVER,
    "NLAB_MIRROR_F_ENCAP": abi.MIRROR_F_ENCAP,
    "NLAB_MIRROR_F_RX": abi.MIRROR_F_RX,
    "NLAB_MIRROR_ETHERTYPE": abi.MIRROR_ETHERTYPE,
    "NLAB_MIRROR_MAGIC": abi.MIRROR_MAGIC,
    "NLAB_MIRROR_VERSION": abi.MIRROR_VERSION,
    "NLAB_MIRROR_DIR_OUT": abi.MIRROR_DIR_OUT,
    "NLAB_MIRROR_DIR_IN": abi.MIRROR_DIR_IN,
}
# structs of abi.h -> their Python mirror
STRUCTS = {
    "nlab_port": abi.Port,
    "nlab_counter": abi.Counter,
    "nlab_mirror_port": abi.MirrorPort,
    "nlab_mirror_session": abi.MirrorSession,
    "nlab_mirror_stats": abi.MirrorStats,
    "nlab_mirror_trailer": abi.MirrorTrailer,
    "nlab_vnic": abi.Vnic,
    "nlab_addr_key": abi.AddrKey,
    "nlab_ct_key": abi.CtKey,
    "nlab_ct_reap": abi.CtReap,
    "nlab_ct_entry": abi.CtEntry,
    "nlab_frag_key": abi.FragKey,
    "nlab_frag": abi.Frag,
    "nlab_fw_config": abi.FwConfig,
    "nlab_policy_key": lpm.PolicyKey,
    "nlab_policy_value": lpm.PolicyValue,
    "nlab_ipcache_key": lpm.IpcacheKey,
    "nlab_fw_event": abi.FwEvent,
}

PROBE = '#include <uapi/linux/bpf.h>\n#include "abi.h"\n' + "".join(
    f"BPF_ARRAY({name}_probe, struct {name}, 1);\n" for name in STRUCTS
)


def header_defines() -> dict[str, int]:
    """Every numeric NLAB_* define of the headers; a name defined twice must keep its value."""
    found: dict[str, int] = {}
    for header in (INCLUDE / "abi.h",):  # the other headers are the programs' own business
        for name, value in DEFINE.findall(header.read_text()):
            assert found.get(name, int(value, 0)) == int(value, 0), f"{name} defined twice, differently"
            found[name] = int(value, 0)
    return found


def python_value(name: str) -> int | None:
    if name in CONSTANTS:
        return int(CONSTANTS[name])
    for prefix, mirror in ENUMS.items():
        if name.startswith(prefix):
            member = mirror.__members__.get(name.removeprefix(prefix))
            return None if member is None else int(member)
    return None


@pytest.mark.parametrize("name", sorted(header_defines()))
def test_define_is_mirrored(name: str) -> None:
    assert python_value(name) == header_defines()[name], f"{name}: dataplane/abi.py does not mirror it"


@pytest.mark.parametrize(("prefix", "mirror"), ENUMS.items(), ids=list(ENUMS))
def test_every_python_member_is_in_the_header(prefix: str, mirror: type[enum.IntEnum]) -> None:
    defines = header_defines()
    missing = [m.name for m in mirror if m.name != "PASS" and f"{prefix}{m.name}" not in defines]
    assert not missing, f"in dataplane/abi.py but not in abi.h: {missing}"


def test_reasons_fit_the_counter_mask() -> None:
    # verdict() masks the reason with NR_REASONS - 1 to keep the verifier happy
    assert abi.NR_REASONS & (abi.NR_REASONS - 1) == 0, "NR_REASONS must be a power of two"
    assert max(abi.Reason) < abi.NR_REASONS
    assert max(abi.Direction) < abi.NR_DIRS


def test_every_reason_has_a_text() -> None:
    assert set(abi.REASON_TEXT) == set(abi.Reason)
    assert all(text.strip() for text in abi.REASON_TEXT.values())


def test_counter_index_is_dense_and_in_range() -> None:
    indexes = {
        abi.counter_index(ifindex, d, r)
        for ifindex in (0, 1, abi.MAX_IFINDEX - 1)
        for d in abi.Direction
        for r in abi.Reason
    }
    assert len(indexes) == 3 * len(abi.Direction) * len(abi.Reason)
    assert max(indexes) < abi.MAX_IFINDEX * abi.NR_DIRS * abi.NR_REASONS


@pytest.fixture(scope="module")
def compiled_leaves() -> dict[str, type[ctypes.Structure]]:
    """The value types of maps declared with the header's structs, as the compiler laid them out."""
    require_kernel()
    from bcc import BPF  # the layout comes from bcc's view of clang's types

    probe = BPF(text=PROBE.encode(), cflags=[f"-I{INCLUDE}"])
    try:
        return {name: probe[f"{name}_probe".encode()].Leaf for name in STRUCTS}
    finally:
        probe.cleanup()


@pytest.mark.parametrize(("leaf", "mirror"), STRUCTS.items(), ids=list(STRUCTS))
def test_struct_layout(
    compiled_leaves: dict[str, type[ctypes.Structure]], leaf: str, mirror: type[ctypes.Structure]
) -> None:
    compiled = compiled_leaves[leaf]
    assert ctypes.sizeof(compiled) == ctypes.sizeof(mirror)
    ours = [
        (name.removesuffix("_be"), getattr(mirror, name).offset, getattr(mirror, name).size)
        for name, *_ in mirror._fields_
    ]
    theirs = [
        (name, getattr(compiled, name).offset, getattr(compiled, name).size)
        for name, *_ in compiled._fields_
        if not name.startswith("__pad")  # bcc's own names for the padding it found
    ]
    assert ours == theirs
