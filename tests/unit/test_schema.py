"""The JSON Schema of topology files: valid draft 2020-12, strict, and in agreement with the
loader's files. Bad files are named for the pass that rejects them: ``yaml-*`` before the schema,
``schema-*`` by the schema alone, ``sem-*`` only by the semantic checks (so the schema must
accept them), ``mixed-*`` by both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from netns_lab.convert_firewall import CONNECTIONS
from netns_lab.loader import SCHEMA_PATH, parse_yaml
from netns_lab.model import PROTOS, ROLES, FirewallSettings

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
