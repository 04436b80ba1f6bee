"""report.json's JSON Schema (shipped as ``report.schema.json``) and a small validator for the subset it uses.

No dependency: the keywords are ``type`` ``enum`` ``const`` ``required`` ``properties``
``additionalProperties`` ``items`` ``minItems`` ``maxItems`` ``minimum`` ``maximum`` ``pattern`` ``$ref``
(local ``#/$defs/...``) ``allOf`` ``if``/``then``. An unknown keyword is an error, so the schema cannot
silently use something this validator ignores.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
SCHEMA_ID = "edgesr-report/1"

_ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "default", "examples"}
_KEYWORDS = {"type", "enum", "const", "required", "properties", "additionalProperties", "items", "minItems",
             "maxItems", "minimum", "maximum", "pattern", "$ref", "allOf", "if", "then"}


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validate(instance: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Every violation as 'path: message' (empty list: valid)."""
    root = load_schema() if schema is None else schema
    errors: list[str] = []
    _check(instance, root, root, "$", errors)
    return errors


def _type_ok(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise ValueError(f"schema: unknown type {name!r}")


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"schema: only local $ref are supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _check(v: Any, s: dict[str, Any], root: dict[str, Any], path: str, errors: list[str]) -> None:
    unknown = set(s) - _KEYWORDS - _ANNOTATIONS
    if unknown:
        raise ValueError(f"schema at {path}: unsupported keyword(s) {sorted(unknown)}")
    if "$ref" in s:
        _check(v, _resolve(s["$ref"], root), root, path, errors)
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_type_ok(v, t) for t in types):
            errors.append(f"{path}: expected {' or '.join(types)}, got {_show(v)}")
            return
    if "const" in s and v != s["const"]:
        errors.append(f"{path}: expected {s['const']!r}, got {_show(v)}")
    if "enum" in s and v not in s["enum"]:
        errors.append(f"{path}: {_show(v)} is not one of {s['enum']}")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in s and v < s["minimum"]:
            errors.append(f"{path}: {v} < minimum {s['minimum']}")
        if "maximum" in s and v > s["maximum"]:
            errors.append(f"{path}: {v} > maximum {s['maximum']}")
    if isinstance(v, str) and "pattern" in s and not re.search(s["pattern"], v):
        errors.append(f"{path}: {v!r} does not match {s['pattern']}")
    if isinstance(v, list):
        if "minItems" in s and len(v) < s["minItems"]:
            errors.append(f"{path}: {len(v)} items, fewer than {s['minItems']}")
        if "maxItems" in s and len(v) > s["maxItems"]:
            errors.append(f"{path}: {len(v)} items, more than {s['maxItems']}")
        if "items" in s:
            for i, item in enumerate(v):
                _check(item, s["items"], root, f"{path}[{i}]", errors)
    if isinstance(v, dict):
        for key in s.get("required", []):
            if key not in v:
                errors.append(f"{path}: missing required key {key!r}")
        props = s.get("properties", {})
        for key, value in v.items():
            if key in props:
                _check(value, props[key], root, f"{path}.{key}", errors)
            elif s.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected key {key!r}")
            elif isinstance(s.get("additionalProperties"), dict):
                _check(value, s["additionalProperties"], root, f"{path}.{key}", errors)
    for sub in s.get("allOf", []):
        _check(v, sub, root, path, errors)
    if "if" in s:
        probe: list[str] = []
        _check(v, s["if"], root, path, probe)
        if not probe and "then" in s:
            _check(v, s["then"], root, path, errors)


def _show(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["SCHEMA_PATH", "SCHEMA_ID", "load_schema", "validate"]
