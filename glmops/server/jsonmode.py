"""response_format: is the model's answer the JSON the client asked for? (JSON Schema, checked with jsonschema)"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

# The keywords a schema may use. jsonschema enforces every standard keyword; this list keeps refusing the
# ones this server has not promised (docs/server.md), so a client learns at once instead of being surprised.
KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf", "description",
            "title", "default", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "$schema", "strict"}
SUBSCHEMAS = ("properties", "items", "additionalProperties", "anyOf")  # keywords whose values hold schemas
MAX_MESSAGE = 200  # characters of one problem (jsonschema's messages quote the offending value)


class SchemaError(ValueError):
    """A schema that is not valid JSON Schema, or that uses a keyword this server does not enforce."""

    def __init__(self, message: str, where: str, code: str = "invalid_value"):
        super().__init__(message)
        self.where = where  # e.g. schema.properties.age.type
        self.code = code  # invalid_value, or unsupported_value for a keyword this server does not enforce


def json_path(parts: Iterable[Any]) -> str:
    """`.name` and `[index]` steps, as in schema.properties.a or $.items[0]."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def validator_class(schema: dict[str, Any]) -> Any:
    """The validator of the draft that `$schema` names; 2020-12 when it names none."""
    return validator_for(schema, default=Draft202012Validator)


def check_schema(schema: Any, where: str = "schema") -> None:
    """Raise SchemaError unless `schema` passes its draft's meta-schema and uses only KEYWORDS."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be an object", where)
    if not isinstance(schema.get("$schema", ""), str):  # what picks the draft: jsonschema expects a string
        raise SchemaError(f"{where}.$schema: must be a string, the URI of a JSON Schema draft", f"{where}.$schema")
    kind = validator_class(schema)
    error = best_match(kind(kind.META_SCHEMA).iter_errors(schema))
    if error is not None:
        here = where + json_path(error.absolute_path)
        raise SchemaError(f"{here}: {error.message[:MAX_MESSAGE]} (not valid JSON Schema)", here)
    check_keywords(schema, where)


def check_keywords(schema: Any, where: str) -> None:
    """Refuse, naming it, any keyword outside KEYWORDS, at any depth (the schema is already valid)."""
    if isinstance(schema, bool):
        return
    unknown = sorted(set(schema) - KEYWORDS)
    if unknown:
        raise SchemaError(f"{where} uses {', '.join(unknown)}, which this server cannot enforce; supported: {', '.join(sorted(KEYWORDS))}",
                          f"{where}.{unknown[0]}", "unsupported_value")
    for keyword in SUBSCHEMAS:
        value = schema.get(keyword)
        if isinstance(value, dict) and keyword == "properties":
            for name, sub in value.items():
                check_keywords(sub, f"{where}.properties.{name}")
        elif isinstance(value, list):
            for index, sub in enumerate(value):
                check_keywords(sub, f"{where}.{keyword}[{index}]")
        elif value is not None:
            check_keywords(value, f"{where}.{keyword}")


def problems(value: Any, schema: dict[str, Any]) -> list[str]:
    """What is wrong with `value` under `schema` (empty: it conforms); the schema passed check_schema."""
    errors = validator_class(schema)(schema).iter_errors(value)
    return [f"${json_path(error.absolute_path)}: {error.message[:MAX_MESSAGE]}" for error in errors]


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
