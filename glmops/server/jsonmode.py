"""response_format: is the model's answer the JSON the client asked for? (a small JSON-schema subset)"""

from __future__ import annotations

import json
from typing import Any

KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf", "description",
            "title", "default", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "$schema", "strict"}
TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,), "integer": (int,),
                                      "number": (int, float), "boolean": (bool,), "null": (type(None),)}


class SchemaError(ValueError):
    """A schema that uses what this checker does not implement."""


def check_schema(schema: Any, where: str = "schema") -> None:
    """Refuse, naming it, any keyword this module cannot check (so none is silently ignored)."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be an object")
    unknown = sorted(set(schema) - KEYWORDS)
    if unknown:
        raise SchemaError(f"{where} uses {', '.join(unknown)}, which this server cannot enforce; supported: {', '.join(sorted(KEYWORDS))}")
    kinds = schema.get("type")
    for kind in kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []:
        if kind not in TYPES:
            raise SchemaError(f"{where}.type {kind!r} is not a JSON-schema type")
    for name, sub in (schema.get("properties") or {}).items():
        check_schema(sub, f"{where}.properties.{name}")
    if isinstance(schema.get("items"), dict):
        check_schema(schema["items"], f"{where}.items")
    if isinstance(schema.get("additionalProperties"), dict):
        check_schema(schema["additionalProperties"], f"{where}.additionalProperties")
    for index, sub in enumerate(schema.get("anyOf") or []):
        check_schema(sub, f"{where}.anyOf[{index}]")


def problems(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """What is wrong with `value` under `schema` (empty: it conforms)."""
    if "anyOf" in schema and not any(not problems(value, sub, where) for sub in schema["anyOf"]):
        return [f"{where} matches none of anyOf"]
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        ok = any(isinstance(value, TYPES[k]) and not (k in ("integer", "number") and isinstance(value, bool)) for k in kinds)
        if not ok:
            return [f"{where} is not {' or '.join(kinds)}"]
    found: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        found.append(f"{where} is not {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
            found.append(f"{where} is out of range")
    if isinstance(value, str) and not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
        found.append(f"{where} has the wrong length")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            found.append(f"{where} has the wrong number of items")
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                found += problems(item, schema["items"], f"{where}[{index}]")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        found += [f"{where}.{name} is missing" for name in schema.get("required", []) if name not in value]
        for name, item in value.items():
            if name in properties:
                found += problems(item, properties[name], f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{where}.{name} is not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                found += problems(item, schema["additionalProperties"], f"{where}.{name}")
    return found


def output_problem(text: str, response_format: dict[str, Any]) -> str | None:
    """Why `text` is not the JSON response_format asks for (None: it is)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return "the answer is not valid JSON"
    if response_format["type"] == "json_object":
        return None if isinstance(value, dict) else "the answer is JSON but not an object"
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    found = problems(value, schema)
    return "; ".join(found[:5]) if found else None
