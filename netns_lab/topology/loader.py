"""Load a topology file: YAML text -> a validated :class:`~netns_lab.topology.model.Topology`.

Three passes, each collecting every issue it can before the next one runs:

1. YAML. A syntax error stops here; duplicate keys are reported and loading goes on. Scalars are
   read with the YAML 1.2 core schema, so ``0000:03:00.0``, ``12:34:56:78:9a:bc`` and ``no``
   stay strings (YAML 1.1 reads the first two as base-60 numbers and the last as false).
2. Structure, against ``schema/topology.schema.json``; each schema error becomes one issue with
   a reason chosen by its kind. A node (switch, network, host or VM), a VLAN, a security group
   or a firewall rule with a structural error is left out of pass 3, but its name still counts
   as declared, so references to it are not reported a second time as dangling.
3. Semantics (:mod:`netns_lab.topology.validate`), on the model built from the nodes that passed; a
   check that would read a node left out does not run (one typo, one error).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from netns_lab.topology import validate
from netns_lab.topology.convert import KEYED_SECTIONS, Converter
from netns_lab.topology.convert_firewall import RULES
from netns_lab.topology.errors import Issue, TopologyError, did_you_mean
from netns_lab.topology.model import Topology

SCHEMA_PATH = Path(__file__).with_name("schema") / "topology.schema.json"

KeyPath = tuple[str | int, ...]


def load(path: str | Path, lab: str | None = None) -> Topology:
    """Load the topology file at ``path``; ``lab`` replaces its ``lab:`` key (``--name``)."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as err:
        raise TopologyError([Issue(source, "(file)", f"cannot read the file: {err.strerror}")]) from None
    except UnicodeDecodeError as err:
        reason = f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})"
        raise TopologyError([Issue(source, "(file)", reason)]) from None
    return load_text(text, source, lab)


def load_text(text: str, source: str, lab: str | None = None) -> Topology:
    """Load a topology from its text; ``source`` names it in messages and in the model."""
    data, issues = parse_yaml(text, source)
    if data is None:
        raise TopologyError([*issues, Issue(source, "(file)", "the file is empty")])
    if not isinstance(data, dict):
        raise TopologyError([Issue(source, "(top)", f"expected a mapping, got {kind_of(data)}")])
    structural, broken = check_structure(data, source)
    issues += structural
    if lab is not None:
        issues += [Issue(source, "--name", reason) for reason in lab_name_problems(lab)]
    name = lab if lab is not None else data.get("lab")
    converter = Converter(source, name if isinstance(name, str) else "")
    topo = converter.topology(data, broken)
    issues += converter.issues
    issues += validate.check(topo, declared_names(data))
    if issues:
        raise TopologyError(issues)
    return topo


def lab_name_problems(lab: str) -> list[str]:
    """Why ``lab`` cannot name a lab (nothing when it can), in the words used for the key."""
    schema = _validator().schema["$defs"]["labName"]
    return [_reason(error) for error in Draft202012Validator(schema).iter_errors(lab)]


def declared_names(data: dict[str, Any]) -> dict[str, tuple[str, ...] | None]:
    """Every name declared per section; ``None`` for a section that is not a mapping."""
    found: dict[str, tuple[str, ...] | None] = {}
    for section in KEYED_SECTIONS:
        value = data.get(section)
        found[section] = tuple(value) if isinstance(value, dict) else () if value is None else None
    return found


# -- pass 1: YAML --------------------------------------------------------------------------------
class _CoreResolver(BaseResolver):
    """Plain scalars as the YAML 1.2 core schema reads them (plus ``<<`` merge keys)."""


_CORE_SCALARS = (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+.0123456789"),
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^(?:<<)$", ["<"]),
)
for _tag, _regexp, _first in _CORE_SCALARS:
    _CoreResolver.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_regexp), _first)


class _Constructor(SafeConstructor):
    """Keys are kept as written (always strings); duplicate keys are noted, not silently merged."""

    def __init__(self) -> None:
        super().__init__()
        self.duplicates: list[tuple[yaml.Mark, str]] = []

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[str, Any]:
        self._note_duplicates(node)
        self.flatten_mapping(node)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    "a key must be a plain name",
                    key_node.start_mark,
                )
            mapping[key_node.value] = self.construct_object(value_node, deep=deep)
        return mapping

    def _note_duplicates(self, node: MappingNode) -> None:
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first:
                reason = f"duplicate key {key_node.value!r} (first on line {first[key_node.value]})"
                self.duplicates.append((key_node.start_mark, reason))
            first.setdefault(key_node.value, line)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        text = self.construct_scalar(node)
        if text[:2] in ("0o", "0x"):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)


_Constructor.add_constructor("tag:yaml.org,2002:int", _Constructor.construct_yaml_int)


class _Loader(Reader, Scanner, Parser, Composer, _Constructor, _CoreResolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Constructor.__init__(self)
        _CoreResolver.__init__(self)


def parse_yaml(text: str, source: str) -> tuple[Any, list[Issue]]:
    """The data of a single-document YAML text and its duplicate keys; raises on syntax errors."""
    try:
        loader = _Loader(text)  # checks every character at once
    except ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        column = err.position - text.rfind("\n", 0, err.position)
        reason = f"YAML syntax error: character #x{err.character:04x} is not allowed"
        raise TopologyError([Issue(source, f"line {line}, column {column}", reason)]) from None
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        raise TopologyError([_syntax_issue(source, err)]) from None
    except RecursionError:  # PyYAML composes recursively
        raise TopologyError([Issue(source, "(file)", _TOO_DEEP)]) from None
    finally:
        loader.dispose()
    problem = _shape_problem(data)
    if problem:
        raise TopologyError([Issue(source, "(file)", problem)])
    return data, [Issue(source, _at(mark), reason) for mark, reason in loader.duplicates]


_MAX_DEPTH = 32
_MAX_NODES = 100_000
_TOO_DEEP = f"mappings and lists are nested more than {_MAX_DEPTH} levels deep"


def _shape_problem(data: Any) -> str | None:
    """Aliases may share a node but not nest it in itself, nor multiply it without bound."""
    stack: list[tuple[Any, int, frozenset[int]]] = [(data, 0, frozenset())]
    count = 0
    while stack:
        node, depth, ancestors = stack.pop()
        if not isinstance(node, dict | list):
            continue
        count += 1
        if id(node) in ancestors:
            return "an alias refers to a node that contains it"
        if depth > _MAX_DEPTH:
            return _TOO_DEEP
        if count > _MAX_NODES:
            return f"more than {_MAX_NODES} mappings and lists once aliases are expanded"
        inside = ancestors | {id(node)}
        stack += [(child, depth + 1, inside) for child in (node.values() if isinstance(node, dict) else node)]
    return None


def _syntax_issue(source: str, err: yaml.MarkedYAMLError) -> Issue:
    mark = err.problem_mark or err.context_mark
    where = _at(mark) if mark else "(file)"
    kind = "YAML error" if isinstance(err, ConstructorError) else "YAML syntax error"
    problem, context = err.problem or "", err.context or ""
    if not (problem and context):
        return Issue(source, where, f"{kind}: {problem or context}")
    if problem.startswith("but "):  # the context is the first half of the sentence
        return Issue(source, where, f"{kind}: {context}, {problem}")
    since = f" that starts on line {err.context_mark.line + 1}" if err.context_mark else ""
    return Issue(source, where, f"{kind}: {problem} ({context}{since})")


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


# -- pass 2: structure ---------------------------------------------------------------------------
@functools.cache
def _validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def check_structure(data: dict[str, Any], source: str) -> tuple[list[Issue], set[tuple[str, str]]]:
    """Issues of the structure in document order, and the ``(section, name)`` nodes they break."""
    order = _document_order(data)
    found: list[tuple[int, Issue]] = []
    broken: set[tuple[str, str]] = set()
    for error in _validator().iter_errors(data):
        where = _where(error)
        if len(where) >= 2 and where[0] in KEYED_SECTIONS:
            broken.add((str(where[0]), str(where[1])))
        elif len(where) >= 3 and where[:2] == ("firewall", "rules"):
            broken.add((RULES, str(where[2])))
        found += [(order.get(path, len(order)), issue) for path, issue in _explain(error, where, source)]
    found.sort(key=lambda pair: pair[0])
    return list(dict.fromkeys(issue for _, issue in found)), broken


def _document_order(data: Any) -> dict[KeyPath, int]:
    order: dict[KeyPath, int] = {}
    stack: list[tuple[KeyPath, Any]] = [((), data)]
    while stack:
        path, node = stack.pop()
        order[path] = len(order)
        if isinstance(node, dict | list):
            children = node.items() if isinstance(node, dict) else enumerate(node)
            stack += reversed([((*path, key), child) for key, child in children])
    return order


def _where(error: ValidationError) -> KeyPath:
    """The key path of an error; a bad key (``propertyNames``) is located at the key itself."""
    path: KeyPath = tuple(error.absolute_path)
    return (*path, error.instance) if "propertyNames" in error.schema_path else path


def _explain(error: ValidationError, where: KeyPath, source: str) -> Iterator[tuple[KeyPath, Issue]]:
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        for key in error.instance:
            if key not in allowed:
                yield (*where, key), Issue(source, format_path((*where, key)), _unknown_key(key, allowed))
    elif error.validator == "required":
        for key in error.validator_value:
            if key not in error.instance:
                yield where, Issue(source, format_path(where), f"missing required key {key!r}")
    else:
        yield where, Issue(source, format_path(where), _reason(error))


def _unknown_key(key: str, allowed: list[str]) -> str:
    return f"unknown key ({did_you_mean(key, allowed)}allowed: {', '.join(allowed)})"


def _reason(error: ValidationError) -> str:
    schema, value = error.schema, error.instance
    match error.validator:
        case "type":
            return f"expected {_expected(error.validator_value)}, got {kind_of(value)}"
        case "pattern":
            hint = schema.get("x-hint", schema["pattern"])
            return f"{value!r} is not a valid {schema.get('title', 'value')}: {hint}"
        case "enum":
            return f"{value!r} is not one of: {', '.join(map(str, error.validator_value))}"
        case "minimum" | "maximum":
            return f"{value} is not in {schema['minimum']}..{schema['maximum']}"
        case "minItems" | "minLength" | "minProperties":
            return "must not be empty"
    return error.message


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _expected(types: str | list[str]) -> str:
    """``null`` is accepted in a few places for convenience only: leave it out of the message."""
    wanted = [types] if isinstance(types, str) else [t for t in types if t != "null"]
    return " or ".join(_TYPE_NAMES[t] for t in wanted)


def kind_of(value: Any) -> str:
    """How a YAML value reads in a message: ``a list``, ``an integer``, ..."""
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"))
    kinds += ((list, "a list"), (dict, "a mapping"), (type(None), "null"))
    return next((name for cls, name in kinds if isinstance(value, cls)), type(value).__name__)


def format_path(path: KeyPath) -> str:
    """``('vms', 'web1', 'nics', 0, 'vlan')`` -> ``vms.web1.nics[0].vlan``; ``()`` -> ``(top)``."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")
    return text or "(top)"
