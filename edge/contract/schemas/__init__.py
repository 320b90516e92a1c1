"""JSON Schemas of every payload of the MQTT contract (docs/mqtt.md), version 1.

``validate(kind, payload)`` raises :class:`SchemaError` listing every problem;
``problems(kind, payload)`` returns them. The ``jsonschema`` package is used
when it is installed (it is a dev/test dependency); the device does not need
it: a small built-in validator covers the subset of JSON Schema these files
use (type, required, properties, additionalProperties (a schema), maxProperties,
items, enum, const, minimum, minLength, minItems, maxItems, pattern, local ``$ref``, allOf, if/then/else), so
``edge-watch`` on a Pi checks messages the same way.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from edge.errors import EdgeError
from edge.transport.topics import OUTPUTS
from edge.transport.topics import split_topic as split_topic  # re-exported: subscribers parse topics here
from edge.transport.topics import topic_for as topic_for

SCHEMA_VERSION = 1

KINDS: tuple[str, ...] = tuple(OUTPUTS)


class SchemaError(EdgeError):
    """A payload does not follow the MQTT contract."""


def schema(kind: str) -> dict[str, Any]:
    """The parsed JSON Schema of one payload kind (a fresh copy)."""
    return json.loads(_schema_text(kind))


@cache
def _schema_text(kind: str) -> str:
    if kind not in OUTPUTS:
        raise SchemaError(f"unknown payload kind {kind!r}", f"use one of: {', '.join(KINDS)}")
    # Imported here: importlib.resources pulls in tempfile, shutil, bz2, lzma and random, and the agent
    # imports this module (Home Assistant discovery needs topic names) without ever reading a schema.
    from importlib import resources

    return resources.files(__name__).joinpath(f"{kind}.json").read_text(encoding="utf-8")


@cache
def _cached_schema(kind: str) -> dict[str, Any]:
    return schema(kind)


def backend() -> str:
    """Which validator is in use: ``jsonschema`` or ``builtin``."""
    return "jsonschema" if _jsonschema_validator("status") is not None else "builtin"


@cache
def _jsonschema_validator(kind: str) -> Any:
    try:
        import jsonschema  # optional: a dev/test dependency, never needed on the device
    except ImportError:
        return None
    return jsonschema.Draft202012Validator(_cached_schema(kind))


def problems(kind: str, payload: Any, *, builtin: bool = False) -> list[str]:
    """Every way ``payload`` breaks the schema of ``kind``; empty when valid.

    ``builtin=True`` forces the built-in validator (the tests compare both)."""
    sch = _cached_schema(kind)
    validator = None if builtin else _jsonschema_validator(kind)
    if validator is not None:
        found = sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
        return [f"{_where(list(e.absolute_path))}: {e.message}" for e in found]
    out: list[str] = []
    _check(payload, sch, sch, [], out)
    return out


def validate(kind: str, payload: Any) -> None:
    """Raise :class:`SchemaError` when ``payload`` is not a valid ``kind`` message."""
    found = problems(kind, payload)
    if found:
        raise SchemaError(
            f"{kind} payload does not follow schema v{SCHEMA_VERSION}: "
            + "; ".join(found[:5])
            + (f" (+{len(found) - 5} more)" if len(found) > 5 else ""),
            f"see edge/contract/schemas/{kind}.json and docs/mqtt.md",
        )


def _where(path: list[Any]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    # JSON has no separate bool/int, Python does: True must not pass as an integer
    "integer": lambda v: (
        isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _equal(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (_TYPES["number"](a) and _TYPES["number"](b) and a == b)


def _check(value: Any, sch: dict[str, Any], root: dict[str, Any], path: list[Any], out: list[str]) -> None:
    """The built-in subset of JSON Schema 2020-12 used by edge/contract/schemas/*.json."""
    if "$ref" in sch:
        ref = sch["$ref"]
        node: Any = root
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        _check(value, node, root, path, out)
    where = _where(path)
    if "type" in sch:
        types = sch["type"] if isinstance(sch["type"], list) else [sch["type"]]
        if not any(_TYPES[t](value) for t in types):
            out.append(f"{where}: {value!r:.60} is not of type {' or '.join(types)}")
            return
    if "const" in sch and not _equal(value, sch["const"]):
        out.append(f"{where}: {sch['const']!r} was expected, got {value!r:.60}")
    if "enum" in sch and not any(_equal(value, e) for e in sch["enum"]):
        out.append(f"{where}: {value!r:.60} is not one of {sch['enum']!r}")
    if isinstance(value, str):
        if len(value) < sch.get("minLength", 0):
            out.append(f"{where}: {value!r} is too short")
        if "pattern" in sch and not re.search(sch["pattern"], value):
            out.append(f"{where}: {value!r:.60} does not match {sch['pattern']!r}")
    if _TYPES["number"](value) and "minimum" in sch and value < sch["minimum"]:
        out.append(f"{where}: {value!r} is less than the minimum of {sch['minimum']}")
    if _TYPES["number"](value) and "maximum" in sch and value > sch["maximum"]:
        out.append(f"{where}: {value!r} is greater than the maximum of {sch['maximum']}")
    if isinstance(value, dict):
        for key in sch.get("required", []):
            if key not in value:
                out.append(f"{where}: {key!r} is a required property")
        for key, sub in sch.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, root, [*path, key], out)
        if "maxProperties" in sch and len(value) > sch["maxProperties"]:
            out.append(f"{where}: {value!r:.60} should have at most {sch['maxProperties']} properties")
        extra = sch.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value.keys() - sch.get("properties", {}).keys():
                _check(value[key], extra, root, [*path, key], out)
    if isinstance(value, list):
        if len(value) < sch.get("minItems", 0):
            out.append(f"{where}: {value!r:.60} should have at least {sch['minItems']} items")
        if "maxItems" in sch and len(value) > sch["maxItems"]:
            out.append(f"{where}: {value!r:.60} should have at most {sch['maxItems']} items")
        if "items" in sch:
            for i, item in enumerate(value):
                _check(item, sch["items"], root, [*path, i], out)
    for sub in sch.get("allOf", []):
        _check(value, sub, root, path, out)
    if "anyOf" in sch:
        tries = []
        for sub in sch["anyOf"]:
            probe_any: list[str] = []
            _check(value, sub, root, path, probe_any)
            if not probe_any:
                break
            tries.append("; ".join(probe_any))
        else:
            out.append(f"{where}: matches none of the alternatives ({' | '.join(tries)})")
    if "if" in sch:
        probe: list[str] = []
        _check(value, sch["if"], root, path, probe)
        branch = sch.get("then") if not probe else sch.get("else")
        if branch is not None:
            _check(value, branch, root, path, out)
