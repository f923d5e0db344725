"""A small JSON Schema subset for an eval case's ``json_schema``.

Why not the ``jsonschema`` package: it is not in the project's locks, and an eval case
needs only a handful of keywords. Why refuse the others: a keyword that is silently
ignored would let a user believe it is enforced. So the eval set reader refuses (exit 2,
naming the line) any keyword outside this list:

    type (a name or a list of names: string number integer boolean object array null),
    enum, const, properties, required, additionalProperties (true/false or a schema),
    items (one schema), minItems, maxItems, minLength, maxLength, minimum, maximum,
    exclusiveMinimum, exclusiveMaximum (numbers, as in draft 2020-12), pattern (a regex
    searched with a time limit, ``components/user_input.py``), anyOf, allOf, oneOf, not,
    and the annotations title, description, $schema, $id, default, examples (ignored).

Meaning as in JSON Schema draft 2020-12 for these keywords; ``true`` and ``false`` are
schemas too. Booleans are never numbers (``True`` is not an integer here).
"""

from __future__ import annotations

import math
from typing import Any

from tune2serve.components import user_input

TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
ANNOTATIONS = ("title", "description", "$schema", "$id", "default", "examples", "$comment")
SCHEMA_KEYS = ("additionalProperties", "items", "not")
SCHEMA_LISTS = ("anyOf", "allOf", "oneOf")
COUNTS = ("minItems", "maxItems", "minLength", "maxLength")
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
KEYWORDS = frozenset(("type", "enum", "const", "properties", "required", "pattern", *SCHEMA_KEYS, *SCHEMA_LISTS,
                      *COUNTS, *BOUNDS, *ANNOTATIONS))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def schema_problem(node: Any, path: str = "$") -> str:
    """Why ``node`` is not a schema of the subset ("" when it is one)."""
    if isinstance(node, bool):
        return ""
    if not isinstance(node, dict):
        return f"at {path}: a schema must be an object or true/false, got {type(node).__name__}"
    unknown = sorted(set(node) - KEYWORDS)
    if unknown:
        return (f"at {path}: keyword(s) {', '.join(unknown)} not supported by tune2serve's JSON Schema subset "
                "(see components/quality_gate/schema.py)")
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    if not all(isinstance(k, str) and k in TYPES for k in kinds) or (isinstance(kind, list) and not kind):
        return f"at {path}: \"type\" must be one of {', '.join(TYPES)} or a non-empty list of them"
    if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
        return f"at {path}: \"enum\" must be a non-empty list"
    if "required" in node and (not isinstance(node["required"], list)
                               or not all(isinstance(r, str) for r in node["required"])):
        return f"at {path}: \"required\" must be a list of strings"
    for key in COUNTS:
        value = node.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"at {path}: \"{key}\" must be a whole number of at least 0"
    for key in BOUNDS:
        if key in node and not _is_number(node[key]):
            return f"at {path}: \"{key}\" must be a finite number"
    if "pattern" in node:
        try:
            user_input.compile_pattern(node["pattern"])
        except user_input.BadPattern as e:
            return f"at {path}: \"pattern\" {e}"
    properties = node.get("properties", {})
    if not isinstance(properties, dict):
        return f"at {path}: \"properties\" must be an object"
    children = [(f"{path}.properties.{k}", v) for k, v in properties.items()]
    children += [(f"{path}.{k}", node[k]) for k in SCHEMA_KEYS if k in node]
    for key in SCHEMA_LISTS:
        if key in node:
            if not isinstance(node[key], list) or not node[key]:
                return f"at {path}: \"{key}\" must be a non-empty list of schemas"
            children += [(f"{path}.{key}[{i}]", s) for i, s in enumerate(node[key])]
    return next((p for child_path, child in children if (p := schema_problem(child, child_path))), "")


def _type_matches(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return _is_number(value) and float(value).is_integer()
    if kind == "number":
        return _is_number(value)
    return isinstance(value, {"string": str, "object": dict, "array": list}[kind])


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if a != b:
        return False
    return type(a) is type(b) or (_is_number(a) and _is_number(b))


def _bound_problems(node: dict[str, Any], value: Any, path: str) -> list[str]:
    out = []
    if _is_number(value):
        checks = (("minimum", lambda b: value >= b), ("maximum", lambda b: value <= b),
                  ("exclusiveMinimum", lambda b: value > b), ("exclusiveMaximum", lambda b: value < b))
        out += [f"{path}: {value} breaks {key} {node[key]}" for key, ok in checks if key in node and not ok(node[key])]
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0) or len(value) > node.get("maxLength", math.inf):
            out.append(f"{path}: a string of {len(value)} characters is outside its minLength/maxLength")
        if "pattern" in node:
            try:
                if not user_input.compile_pattern(node["pattern"]).search(value):
                    out.append(f"{path}: does not match the pattern /{user_input.shown(node['pattern'])}/")
            except user_input.PatternTimeout as e:
                out.append(f"{path}: the pattern {e}")
    if isinstance(value, list) and not node.get("minItems", 0) <= len(value) <= node.get("maxItems", math.inf):
        out.append(f"{path}: {len(value)} items is outside its minItems/maxItems")
    return out


def _object_problems(node: dict[str, Any], value: dict[str, Any], path: str) -> list[str]:
    out = [f"{path}: the required key {k!r} is missing" for k in node.get("required", []) if k not in value]
    properties = node.get("properties", {})
    extra = node.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            out += problems(properties[key], item, f"{path}.{key}")
        elif extra is False:
            out.append(f"{path}: the key {key!r} is not allowed (additionalProperties is false)")
        else:
            out += problems(extra, item, f"{path}.{key}")
    return out


def problems(node: Any, value: Any, path: str = "$") -> list[str]:
    """Every way ``value`` breaks schema ``node`` (a schema ``schema_problem`` accepted);
    empty when it fits. Messages name the JSON path, never more than a number of the value."""
    if node is True:
        return []
    if node is False:
        return [f"{path}: no value is allowed here (the schema is false)"]
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    if kinds and not any(_type_matches(value, k) for k in kinds):
        return [f"{path}: expected {' or '.join(kinds)}, got {_json_type(value)}"]
    out: list[str] = []
    if "enum" in node and not any(_same(value, e) for e in node["enum"]):
        out.append(f"{path}: not one of the enum's {len(node['enum'])} values")
    if "const" in node and not _same(value, node["const"]):
        out.append(f"{path}: not the const value")
    out += _bound_problems(node, value, path)
    if isinstance(value, dict):
        out += _object_problems(node, value, path)
    if isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            out += problems(node["items"], item, f"{path}[{i}]")
    if "allOf" in node:
        out += [p for s in node["allOf"] for p in problems(s, value, path)]
    if "anyOf" in node and all(problems(s, value, path) for s in node["anyOf"]):
        out.append(f"{path}: fits none of anyOf's {len(node['anyOf'])} schemas")
    if "oneOf" in node and sum(not problems(s, value, path) for s in node["oneOf"]) != 1:
        out.append(f"{path}: does not fit exactly one of oneOf's {len(node['oneOf'])} schemas")
    if "not" in node and not problems(node["not"], value, path):
        out.append(f"{path}: fits the schema under \"not\"")
    return out


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "integer" if float(value).is_integer() else "number"
    return {str: "string", dict: "object", list: "array"}.get(type(value), type(value).__name__)


__all__ = ["KEYWORDS", "problems", "schema_problem"]
