"""ebpf/include/abi/*.h and dataplane/abi/*.py describe one ABI, header by header: every value
and every struct agree, and neither side has what the other lacks.

The values and the names of the structs are read from the headers as text (no root needed). The
struct layouts are taken from the compiler: for each header alone, a tiny program declares maps
whose values are the header's structs, and bcc hands back their layout as ctypes types (root:
creating maps needs CAP_BPF). Compiling each header alone also proves it includes what it needs.
"""

from __future__ import annotations

import ast
import ctypes
import enum
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

from dataplane import abi, lpm
from dataplane.abi import fw, mirror, overlay, port, reasons, team
from tests.bpf.conftest import require_kernel

INCLUDE = Path(__file__).resolve().parents[2] / "ebpf" / "include"
DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(NLAB_\w+)[ \t]+([^\n]*?)[ \t]*(?:/\*.*)?$", re.MULTILINE)
STRUCT = re.compile(r"^struct\s+(nlab_\w+)\s*\{", re.MULTILINE)
GUARD = re.compile(r"NLAB_ABI_\w+_H")

# header under ebpf/include/abi/ -> the module that mirrors it
SECTIONS: dict[str, ModuleType] = {
    "reasons.h": reasons,
    "port.h": port,
    "fw.h": fw,
    "mirror.h": mirror,
    "team.h": team,
    "overlay.h": overlay,
}
# prefix of a family of defines -> the enum of the module that mirrors it
ENUMS: dict[str, tuple[str, type[enum.IntEnum]]] = {
    "NLAB_DROP_": ("reasons.h", abi.Reason),
    "NLAB_DIR_": ("port.h", abi.Direction),
    "NLAB_MODE_": ("port.h", abi.Mode),
    "NLAB_FW_": ("fw.h", abi.FwDirection),
    "NLAB_VERDICT_": ("fw.h", abi.Verdict),
    "NLAB_CT_": ("fw.h", abi.CtState),
}
# Python structs with no C struct behind them, and why
PYTHON_ONLY_STRUCTS = {"IpcacheValue": "the ipcache map's value is a bare __u32 identity"}
# Reason numbers as counters, tests and saved outputs know them: never renumbered, never reused.
STABLE_REASONS = [
    "PASS",
    "NO_PORT",
    "MALFORMED",
    "TAGGED_ON_ACCESS",
    "QINQ",
    "CONTROL_FRAME",
    "VLAN_MISMATCH",
    "VLAN_NOT_ALLOWED",
    "UNTAGGED",
    "VLAN_HELPER",
    "SPOOF_MAC",
    "SPOOF_IP",
    "SPOOF_ARP",
    "DHCP_SERVER",
    "ROUTER_ADVERT",
    "POLICY",
    "CT_INVALID",
    "CT_FULL",
    "CT_QUOTA",
    "ICMP_UNRELATED",
    "FRAG_TINY",
    "FRAG_ORPHAN",
    "FRAG_OVERLAP",
    "FRAG_DUP",
    "L3_MALFORMED",
    "UNSUPPORTED",
    "ANALYZER_TX",
    "ANALYZER_RX",
    "IPV6_CHAIN",
    "SPOOF_ND",
    "DST_MAC",
    "FRAG_REORDERED",
]
# Reasons handed out from a feature's range: (range start, names from it in order)
RANGE_REASONS = {
    reasons.REASONS_TEAM: ["TEAM_STANDBY_RX", "TEAM_STANDBY_TX", "FAULT_SILENT", "FAULT_LOSS"],
    reasons.REASONS_OVERLAY: ["VXLAN_UNKNOWN_VTEP", "VXLAN_UNKNOWN_VNI", "VXLAN_MALFORMED", "VXLAN_FRAGMENT"],
}


def header_defines(header: str) -> dict[str, int]:
    """Every NLAB_* define of one header with its value; an expression may use earlier defines."""
    found: dict[str, int] = {}
    known = {name: value for other in SECTIONS if other != header for name, value in _literals(other).items()}
    for name, text in DEFINE.findall((INCLUDE / "abi" / header).read_text()):
        expr = re.sub(r"\bNLAB_\w+\b", lambda m: str({**known, **found}[m.group()]), text)
        assert re.fullmatch(r"[\s()0-9a-fA-Fx*+<|-]+", expr), f"{header}: {name} = {text!r} is not a number"
        value = eval(expr)  # digits and operators only (checked above)
        assert found.get(name, value) == value, f"{header}: {name} defined twice, differently"
        found[name] = value
    return found


def _literals(header: str) -> dict[str, int]:
    text = (INCLUDE / "abi" / header).read_text()
    return {n: int(v, 0) for n, v in DEFINE.findall(text) if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", v)}


def header_structs(header: str) -> list[str]:
    return STRUCT.findall((INCLUDE / "abi" / header).read_text())


def python_struct(c_name: str) -> str:
    return "".join(part.capitalize() for part in c_name.removeprefix("nlab_").split("_"))


def python_value(header: str, name: str) -> int | None:
    """The value `name` has in the module that mirrors `header`, or None when it is not there."""
    module = SECTIONS[header]
    for prefix, (owner, mirror_enum) in ENUMS.items():
        if (
            name.startswith(prefix)
            and owner == header
            and name.removeprefix(prefix) in mirror_enum.__members__
        ):
            return int(mirror_enum[name.removeprefix(prefix)])
    if name == "NLAB_PASS" and header == "reasons.h":
        return int(abi.Reason.PASS)
    value = getattr(module, name.removeprefix("NLAB_"), None)
    return int(value) if isinstance(value, int) and _defined_in(module, name.removeprefix("NLAB_")) else None


def _defined_in(module: ModuleType, name: str) -> bool:
    """`name` is assigned at the top of `module` itself, not imported into it."""
    return name in _own_constants(module)


def _own_constants(module: ModuleType) -> set[str]:
    tree = ast.parse(inspect.getsource(module))
    return {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id.isupper()
    }


def _cases() -> list[tuple[str, str]]:
    return [
        (header, name)
        for header in SECTIONS
        for name in sorted(header_defines(header))
        if not GUARD.fullmatch(name)
    ]


@pytest.mark.parametrize(("header", "name"), _cases(), ids=[f"{h}:{n}" for h, n in _cases()])
def test_define_is_mirrored(header: str, name: str) -> None:
    expected = header_defines(header)[name]
    module = SECTIONS[header].__name__
    assert python_value(header, name) == expected, (
        f"abi/{header}: {name} = {expected}, not mirrored by {module}"
    )


@pytest.mark.parametrize("header", SECTIONS)
def test_every_python_constant_is_in_its_header(header: str) -> None:
    defines = header_defines(header)
    module = SECTIONS[header]
    missing = sorted(n for n in _own_constants(module) if f"NLAB_{n}" not in defines and n != "REASON_TEXT")
    assert not missing, f"in {module.__name__} but not in abi/{header}: {missing}"


@pytest.mark.parametrize(("prefix", "owner"), [(p, o) for p, (o, _) in ENUMS.items()], ids=list(ENUMS))
def test_every_python_member_is_in_the_header(prefix: str, owner: str) -> None:
    defines = header_defines(owner)
    mirror_enum = ENUMS[prefix][1]
    missing = [m.name for m in mirror_enum if m.name != "PASS" and f"{prefix}{m.name}" not in defines]
    assert not missing, f"in dataplane/abi but not in abi/{owner}: {missing}"


@pytest.mark.parametrize("header", SECTIONS)
def test_structs_match_by_name(header: str) -> None:
    module = SECTIONS[header]
    ours = {
        name
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, ctypes.Structure) and obj.__module__ == module.__name__
    }
    theirs = {python_struct(c) for c in header_structs(header)}
    assert theirs - ours == set(), f"abi/{header} has structs {module.__name__} lacks"
    assert ours - theirs - set(PYTHON_ONLY_STRUCTS) == set(), (
        f"{module.__name__} has structs abi/{header} lacks"
    )


def test_umbrella_header_includes_every_section() -> None:
    text = (INCLUDE / "abi.h").read_text()
    assert sorted(re.findall(r'#include "abi/(\w+\.h)"', text)) == sorted(SECTIONS)
    assert sorted(p.name for p in (INCLUDE / "abi").glob("*.h")) == sorted(SECTIONS)


def test_reason_numbers_are_stable() -> None:
    assert [(r.name, r.value) for r in abi.Reason][: len(STABLE_REASONS)] == [
        (name, number) for number, name in enumerate(STABLE_REASONS)
    ]
    assert len(set(abi.Reason.__members__.values())) == len(abi.Reason.__members__), "a number is reused"
    for start, names in RANGE_REASONS.items():
        assert [abi.Reason[name].value for name in names] == list(range(start, start + len(names)))
    listed = {name for names in RANGE_REASONS.values() for name in names}
    assert {r.name for r in abi.Reason if r >= len(STABLE_REASONS)} == listed, "a ranged reason is not listed"


def test_reason_labels_of_the_team() -> None:
    labels = [r.label for r in abi.Reason if reasons.REASONS_TEAM <= r < reasons.REASONS_FREE]
    assert labels == ["team-standby-rx", "team-standby-tx", "fault-silent", "fault-loss"]


def test_beacon_magic_spells_its_name() -> None:
    assert team.BEACON_MAGIC.to_bytes(8, "big") == b"NLABTEAM"
    assert team.BEACON_MIN_LEN == 14 + 8


def test_reason_ranges() -> None:
    starts = [reasons.REASONS_SWITCH, reasons.REASONS_PORTSEC, reasons.REASONS_FIREWALL]
    starts += [reasons.REASONS_MIRROR, reasons.REASONS_OVERLAY, reasons.REASONS_TEAM, reasons.REASONS_FREE]
    assert starts == sorted(set(starts)), "ranges in order, none empty"
    assert starts[0] == len(STABLE_REASONS), "the first range starts after the reasons handed out before"
    assert starts[-1] < abi.NR_REASONS
    assert abi.NR_REASONS & (abi.NR_REASONS - 1) == 0, "NR_REASONS must be a power of two (the index masks)"
    assert max(abi.Reason) < abi.NR_REASONS
    assert max(abi.Direction) < abi.NR_DIRS


def test_lpm_takes_its_layout_from_the_abi() -> None:
    assert (lpm.PolicyKey, lpm.PolicyValue, lpm.IpcacheKey) == (
        abi.PolicyKey,
        abi.PolicyValue,
        abi.IpcacheKey,
    )
    assert lpm.POLICY_FIXED_BITS == abi.POLICY_FIXED_BITS and lpm.IPCACHE_FIXED_BITS == abi.IPCACHE_FIXED_BITS
    assert lpm.WILDCARD == abi.IDENTITY_ANY
    assert lpm.DIRECTIONS == {"out": abi.FwDirection.OUT, "in": abi.FwDirection.IN}
    assert lpm.ACTIONS == {"deny": abi.Verdict.DENY, "allow": abi.Verdict.ALLOW}


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
    """The value types of maps declared with each header's structs, as the compiler laid them out,
    each header compiled alone."""
    require_kernel()
    from bcc import BPF  # the layout comes from bcc's view of clang's types

    leaves = {}
    for header in SECTIONS:
        names = header_structs(header)
        probe_text = f'#include <uapi/linux/bpf.h>\n#include "abi/{header}"\n' + "".join(
            f"BPF_ARRAY({name}_probe, struct {name}, 1);\n" for name in names
        )
        probe = BPF(text=probe_text.encode(), cflags=[f"-I{INCLUDE}"])
        try:
            leaves.update({name: probe[f"{name}_probe".encode()].Leaf for name in names})
        finally:
            probe.cleanup()
    return leaves


def _struct_cases() -> list[tuple[str, str]]:
    return [(header, name) for header in SECTIONS for name in header_structs(header)]


@pytest.mark.parametrize(("header", "leaf"), _struct_cases(), ids=[f"{h}:{n}" for h, n in _struct_cases()])
def test_struct_layout(compiled_leaves: dict[str, type[ctypes.Structure]], header: str, leaf: str) -> None:
    mirror_struct = getattr(SECTIONS[header], python_struct(leaf))
    compiled = compiled_leaves[leaf]
    assert ctypes.sizeof(compiled) == ctypes.sizeof(mirror_struct)
    ours = [
        (name.removesuffix("_be"), getattr(mirror_struct, name).offset, getattr(mirror_struct, name).size)
        for name, *_ in mirror_struct._fields_
    ]
    theirs = [
        (name, getattr(compiled, name).offset, getattr(compiled, name).size)
        for name, *_ in compiled._fields_
        if not name.startswith("__pad")  # bcc's own names for the padding it found
    ]
    assert ours == theirs
