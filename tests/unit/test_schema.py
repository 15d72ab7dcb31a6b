"""The JSON Schema of topology files: valid draft 2020-12, strict, and in agreement with the
loader's files. Bad files are named for the pass that rejects them: ``yaml-*`` before the schema,
``schema-*`` by the schema alone, ``sem-*`` only by the semantic checks (so the schema must
accept them), ``mixed-*`` by both. A table of small bad fragments, each applied to one valid
document, pins the keyword that rejects it and the path it is reported at; and every schema
object maps onto its model dataclass key for field, so schema and loader cannot drift apart.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, ValidationError

from netns_lab.topology.convert_firewall import CONNECTIONS
from netns_lab.topology.loader import SCHEMA_PATH, parse_yaml
from netns_lab.topology.model import (
    PROTOS,
    ROLES,
    FirewallSettings,
    FwRule,
    Host,
    MirrorSession,
    MirrorSource,
    Network,
    Nic,
    OverlaySettings,
    PNic,
    PortProfile,
    Route,
    Router,
    RouterNic,
    Segment,
    Switch,
    Topology,
    Vm,
    VmkNic,
    VSwitch,
)

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
GOOD = sorted((HERE / "good").glob("*.yaml")) + sorted((ROOT / "labs").glob("*.yaml"))
BAD = sorted((HERE / "bad").glob("*.yaml"))


def _data(path: Path) -> Any:
    data, _ = parse_yaml(path.read_text(), str(path))
    return data


def _subschemas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _subschemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _subschemas(value)


def test_schema_is_valid_draft_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)


def test_every_object_is_closed() -> None:
    """Unknown keys are errors everywhere: records say false, name-keyed maps give the value schema."""
    objects = [s for s in _subschemas(SCHEMA) if "object" in s.get("type", ()) or "properties" in s]
    assert objects
    for schema in objects:
        assert "additionalProperties" in schema, schema


def test_every_pattern_reads_well() -> None:
    """The loader words a pattern error with the schema's title and x-hint."""
    for schema in _subschemas(SCHEMA):
        if "pattern" in schema:
            assert schema.get("title") and schema.get("x-hint"), schema


def test_roles_match_the_model() -> None:
    assert tuple(SCHEMA["$defs"]["vm"]["properties"]["role"]["enum"]) == ROLES


def test_firewall_keys_match_the_model() -> None:
    rule = SCHEMA["$defs"]["rule"]["properties"]
    assert tuple(rule["proto"]["enum"]) == PROTOS
    connections = SCHEMA["$defs"]["connections"]["properties"]
    assert list(connections) == list(CONNECTIONS)
    defaults = FirewallSettings()
    for key, field in CONNECTIONS.items():
        assert connections[key]["default"] == getattr(defaults, field), key
    assert rule["priority"]["default"] == 100


@pytest.mark.parametrize("name", ["a", "nist", "lab12345"])
def test_lab_name_pattern_accepts(name: str) -> None:
    assert re.fullmatch(SCHEMA["$defs"]["labName"]["pattern"], name)


@pytest.mark.parametrize("name", ["", "1a", "Nist", "nist-lab", "lab123456"])
def test_lab_name_pattern_rejects(name: str) -> None:
    assert not re.fullmatch(SCHEMA["$defs"]["labName"]["pattern"], name)


@pytest.mark.parametrize("path", GOOD, ids=lambda path: path.stem)
def test_good_files_validate(path: Path) -> None:
    assert [error.message for error in VALIDATOR.iter_errors(_data(path))] == []


@pytest.mark.parametrize(
    "path", [p for p in BAD if p.name.startswith(("schema-", "mixed-"))], ids=lambda p: p.stem
)
def test_structural_bad_files_are_rejected(path: Path) -> None:
    assert list(VALIDATOR.iter_errors(_data(path)))


@pytest.mark.parametrize("path", [p for p in BAD if p.name.startswith("sem-")], ids=lambda p: p.stem)
def test_semantic_bad_files_pass_the_schema(path: Path) -> None:
    assert [error.message for error in VALIDATOR.iter_errors(_data(path))] == []


def test_bad_files_are_named_for_their_pass() -> None:
    assert all(path.name.startswith(("yaml-", "schema-", "sem-", "mixed-")) for path in BAD)


def test_docs_describe_every_key() -> None:
    docs = (ROOT / "docs" / "topology.md").read_text()
    keys = {key for schema in _subschemas(SCHEMA) for key in schema.get("properties", {})}
    assert keys
    for key in keys:
        assert f"`{key}`" in docs, f"docs/topology.md does not describe `{key}`"


# -- schema content: bad fragments rejected for the right reason at the right place -------------
# One small document with every section, valid on its own; each case below breaks one thing in it.
BASE: dict[str, Any] = {
    "lab": "t",
    "vlans": {"web": 110},
    "switches": {"tor1": {"ports": {"hv1-eth0": {"trunk": ["web"]}}}},
    "hosts": {
        "hv1": {
            "pnics": {"eth0": {"switch": "tor1", "driver": "ixgbe", "pci_bus": "0000:03:00.0"}},
            "vswitches": {"vs1": {"uplinks": ["eth0"]}, "vsmon": {}},
            "vmknics": {"mgmt0": {"vswitch": "vs1", "vlan": "web", "ip": "10.10.0.1/24"}},
        }
    },
    "vms": {
        "web1": {"host": "hv1", "nics": [{"vswitch": "vs1", "vlan": "web", "ip": "10.20.0.11/24"}]},
        "ids": {"host": "hv1", "role": "analyzer", "nics": [{"vswitch": "vsmon"}]},
    },
    "firewall": {
        "rules": [
            {
                "id": 10,
                "apply": "web1",
                "direction": "in",
                "peer": "any",
                "proto": "tcp",
                "ports": [80],
                "action": "allow",
            }
        ]
    },
    "mirrors": {"m1": {"source": "web1", "dest": "ids"}},
}
DELETE = object()
WEB1 = ("vms", "web1")
NIC0 = (*WEB1, "nics", 0)
RULE0 = ("firewall", "rules", 0)
PNIC = ("hosts", "hv1", "pnics", "eth0")

# (id, where to change, new value or DELETE, keyword that must reject it, path of the error)
FRAGMENTS: list[tuple[str, tuple[Any, ...], Any, str, tuple[Any, ...]]] = [
    ("host-unknown-key", ("hosts", "hv1", "cpus"), 8, "additionalProperties", ("hosts", "hv1")),
    ("host-bad-name", ("hosts", "HV2"), {}, "pattern", ("hosts",)),
    ("pnic-no-driver", (*PNIC, "driver"), DELETE, "required", PNIC),
    ("pnic-pci-bus", (*PNIC, "pci_bus"), "3:0.0", "pattern", (*PNIC, "pci_bus")),
    (
        "vswitch-uplinks",
        ("hosts", "hv1", "vswitches", "vs1", "uplinks"),
        "eth0",
        "type",
        ("hosts", "hv1", "vswitches", "vs1", "uplinks"),
    ),
    (
        "vmknic-vlan",
        ("hosts", "hv1", "vmknics", "mgmt0", "vlan"),
        4095,
        "maximum",
        ("hosts", "hv1", "vmknics", "mgmt0", "vlan"),
    ),
    (
        "vmknic-no-vswitch",
        ("hosts", "hv1", "vmknics", "mgmt0", "vswitch"),
        DELETE,
        "required",
        ("hosts", "hv1", "vmknics", "mgmt0"),
    ),
    ("vm-no-host", (*WEB1, "host"), DELETE, "required", WEB1),
    ("vm-role", (*WEB1, "role"), "switch", "enum", (*WEB1, "role")),
    ("vm-unknown-key", (*WEB1, "memory"), 512, "additionalProperties", WEB1),
    ("vm-nics-not-list", (*WEB1, "nics"), {"vswitch": "vs1"}, "type", (*WEB1, "nics")),
    ("vm-route-no-via", (*WEB1, "routes"), [{"to": "10.0.0.0/8"}], "required", (*WEB1, "routes", 0)),
    ("nic-no-vswitch", (*NIC0, "vswitch"), DELETE, "required", NIC0),
    ("nic-mac", (*NIC0, "mac"), "02:00:00:00:00", "pattern", (*NIC0, "mac")),
    ("nic-vlan-zero", (*NIC0, "vlan"), 0, "minimum", (*NIC0, "vlan")),
    ("nic-vlan-name", (*NIC0, "vlan"), "Web", "pattern", (*NIC0, "vlan")),
    ("nic-vni", (*NIC0, "vni"), 1 << 24, "maximum", (*NIC0, "vni")),
    ("nic-port-security", (*NIC0, "port_security"), "no", "type", (*NIC0, "port_security")),
    ("nic-promiscuous", (*NIC0, "promiscuous"), 1, "type", (*NIC0, "promiscuous")),
    ("nic-unknown-key", (*NIC0, "mtu"), 9000, "additionalProperties", NIC0),
    ("switch-unknown-key", ("switches", "tor1", "model"), "x", "additionalProperties", ("switches", "tor1")),
    (
        "switch-port-access",
        ("switches", "tor1", "ports", "p1"),
        {"access": 5000},
        "maximum",
        ("switches", "tor1", "ports", "p1", "access"),
    ),
    (
        "switch-port-trunk",
        ("switches", "tor1", "ports", "p1"),
        {"trunk": "web"},
        "type",
        ("switches", "tor1", "ports", "p1", "trunk"),
    ),
    (
        "switch-port-untagged",
        ("switches", "tor1", "ports", "p1"),
        {"untagged": "yes"},
        "type",
        ("switches", "tor1", "ports", "p1", "untagged"),
    ),
    ("rule-no-id", (*RULE0, "id"), DELETE, "required", RULE0),
    ("rule-action", (*RULE0, "action"), "reject", "enum", (*RULE0, "action")),
    ("rule-direction", (*RULE0, "direction"), "both", "enum", (*RULE0, "direction")),
    ("rule-proto", (*RULE0, "proto"), "sctp", "enum", (*RULE0, "proto")),
    ("rule-port", (*RULE0, "ports"), [65536], "maximum", (*RULE0, "ports", 0)),
    ("rule-port-range", (*RULE0, "ports"), ["80-"], "pattern", (*RULE0, "ports", 0)),
    ("rule-unknown-key", (*RULE0, "log"), True, "additionalProperties", RULE0),
    (
        "firewall-quota",
        ("firewall", "connections"),
        {"quota": 0},
        "minimum",
        ("firewall", "connections", "quota"),
    ),
    ("mirror-no-dest", ("mirrors", "m1", "dest"), DELETE, "required", ("mirrors", "m1")),
    ("mirror-direction", ("mirrors", "m1", "direction"), "up", "enum", ("mirrors", "m1", "direction")),
    ("mirror-tap", ("mirrors", "m1", "tap"), "middle", "enum", ("mirrors", "m1", "tap")),
    ("mirror-sample", ("mirrors", "m1", "sample"), 0, "minimum", ("mirrors", "m1", "sample")),
    ("mirror-snaplen", ("mirrors", "m1", "snaplen"), -1, "minimum", ("mirrors", "m1", "snaplen")),
    ("mirror-source", ("mirrors", "m1", "source"), "web1.nic0", "pattern", ("mirrors", "m1", "source")),
    ("mirror-unknown-key", ("mirrors", "m1", "filter"), "tcp", "additionalProperties", ("mirrors", "m1")),
]


def _changed(where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    node = doc
    for key in where[:-1]:
        node = node[key]
    if value is DELETE:
        del node[where[-1]]
    else:
        node[where[-1]] = value
    return doc


def _flat(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    for error in errors:
        yield error
        yield from _flat(error.context or ())


def test_the_base_document_is_valid() -> None:
    """The positive control of the fragments: each of them is the only thing wrong."""
    assert [e.message for e in VALIDATOR.iter_errors(BASE)] == []


@pytest.mark.parametrize(
    ("where", "value", "keyword", "path"), [c[1:] for c in FRAGMENTS], ids=[c[0] for c in FRAGMENTS]
)
def test_bad_fragment_is_rejected_for_its_reason_at_its_path(
    where: tuple[Any, ...], value: Any, keyword: str, path: tuple[Any, ...]
) -> None:
    errors = list(VALIDATOR.iter_errors(_changed(where, value)))
    found = {(e.validator, tuple(e.absolute_path)) for e in _flat(errors)}
    assert (keyword, path) in found, (
        f"expected {keyword} at {'.'.join(map(str, path))}; got {sorted(found, key=str)}"
    )
    elsewhere = [e.message for e in errors if tuple(e.absolute_path)[: len(path)] != path]
    assert not elsewhere, f"errors outside {'.'.join(map(str, path))}: {elsewhere}"


# -- schema and model cannot drift: every key the YAML can set is a field, and every field a key --
KEY = "the name it is listed under"


@dataclass(frozen=True)
class Mapping:
    """How one schema object becomes one model dataclass."""

    properties: tuple[str, ...]  # where its keys are, from the schema's root
    cls: type
    renamed: dict[str, str] = dataclasses.field(default_factory=dict)  # schema key -> dataclass field
    derived: dict[str, str] = dataclasses.field(
        default_factory=dict
    )  # field no key sets -> where it comes from
    unkept: dict[str, str] = dataclasses.field(default_factory=dict)  # key the model does not keep -> why


MAPPINGS = [
    Mapping(
        ("properties",),
        Topology,
        derived={
            "source": "the topology file's path",
            "machine": "nlab up --machine (topology/machines.py)",
            "whole": "the lab a machine's part is cut from",
        },
    ),
    Mapping(("$defs", "host", "properties"), Host, derived={"name": KEY}),
    Mapping(("$defs", "pnic", "properties"), PNic, derived={"name": KEY}),
    Mapping(
        ("$defs", "vswitch", "properties"),
        VSwitch,
        derived={"name": KEY, "segment": "set on the vSwitch the loader makes for a segment"},
    ),
    Mapping(("$defs", "vmknic", "properties"), VmkNic, derived={"name": KEY}),
    Mapping(
        ("$defs", "switch", "properties"),
        Switch,
        derived={"name": KEY},
        unkept={"description": "free text for the reader of the file"},
    ),
    Mapping(("$defs", "portProfile", "properties"), PortProfile),
    Mapping(("$defs", "network", "properties"), Network, derived={"name": KEY}),
    Mapping(("$defs", "vm", "properties"), Vm, derived={"name": KEY}),
    Mapping(("$defs", "nic", "properties"), Nic, derived={"index": "its place in the VM's nics"}),
    Mapping(("$defs", "segment", "properties"), Segment, derived={"name": KEY}),
    Mapping(("properties", "overlay", "properties"), OverlaySettings),
    Mapping(("$defs", "router", "properties"), Router, derived={"name": KEY}),
    Mapping(
        ("$defs", "routerNic", "properties"),
        RouterNic,
        derived={"name": KEY, "wire": "nlab up --machine M --link NAME=NETNS"},
    ),
    Mapping(("$defs", "route", "properties"), Route),
    Mapping(("$defs", "rule", "properties"), FwRule, renamed={"peer": "peers"}),
    Mapping(
        ("properties", "firewall", "properties"),
        FirewallSettings,
        derived={f: "firewall.connections (checked with CONNECTIONS)" for f in CONNECTIONS.values()},
        unkept={"connections": "a section: its keys are the fields named in CONNECTIONS"},
    ),
    Mapping(
        ("$defs", "mirror", "properties"),
        MirrorSession,
        renamed={"source": "sources"},
        derived={"name": KEY, "uplink": "dest: {uplink: ...}"},
    ),
    Mapping(
        ("$defs", "mirror", "properties", "source", "properties"),
        MirrorSource,
        renamed={"group": "name"},
        derived={"kind": "the form of the source", "nic": "VM.ethN in a source string"},
    ),
]


def _at(path: tuple[str, ...]) -> dict[str, Any]:
    node = SCHEMA
    for key in path:
        node = node[key]
    return node


@pytest.mark.parametrize("mapping", MAPPINGS, ids=lambda m: m.cls.__name__)
def test_schema_keys_and_model_fields_agree(mapping: Mapping) -> None:
    keys = set(_at(mapping.properties)) - set(mapping.unkept)
    from_keys = {mapping.renamed.get(k, k) for k in keys}
    fields = {f.name for f in dataclasses.fields(mapping.cls)} - set(mapping.derived)
    where = "/".join(mapping.properties)
    assert from_keys - fields == set(), f"{where}: keys the model {mapping.cls.__name__} has no field for"
    assert fields - from_keys == set(), f"{mapping.cls.__name__}: fields {where} has no key for"
    assert set(mapping.derived) <= {f.name for f in dataclasses.fields(mapping.cls)}, "a stale derived field"


def test_connection_keys_are_exactly_the_settings_fields() -> None:
    fields = {f.name for f in dataclasses.fields(FirewallSettings)} - {"rules", "placement", "placements"}
    assert set(CONNECTIONS.values()) == fields
    assert set(SCHEMA["$defs"]["connections"]["properties"]) == set(CONNECTIONS)
