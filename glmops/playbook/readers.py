"""Typed readers for playbook mappings: keyword sets, positions, and errors that point at a line."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from typing import Any

from glmops.errors import LoadError, Pos
from glmops.playbook.yamlpos import PosDict, load_yaml
from glmops.values import is_bool_like, is_template, to_bool

PLAY_KEYWORDS = {
    "name", "hosts", "vars", "vars_files", "roles", "pre_tasks", "tasks", "post_tasks", "handlers",
    "gather_facts", "become", "become_user", "environment", "connection", "tags", "host_key_checking",
}
COMMON_KEYWORDS = {"name", "when", "tags", "become", "become_user", "environment", "vars", "ignore_errors", "no_log", "check_mode"}
TASK_KEYWORDS = COMMON_KEYWORDS | {
    "register", "loop", "with_items", "loop_control", "notify", "listen", "changed_when", "failed_when",
    "retries", "until", "delay", "args", "async", "poll",
}
BLOCK_KEYWORDS = COMMON_KEYWORDS | {"block", "rescue", "always"}
LOOP_CONTROL_KEYS = {"loop_var", "index_var", "label"}
INCLUDE_ACTIONS = {"include_tasks", "import_tasks", "include_role", "import_role"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _pos(node: Any, default: Pos) -> Pos:
    return getattr(node, "pos", None) or default


def _key_pos(node: Any, key: Any, default: Pos) -> Pos:
    return node.pos_of(key) if isinstance(node, PosDict) else _pos(node, default)


def _nearest_hint(word: str, choices: Iterable[str], what: str) -> str:
    near = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"did you mean: {', '.join(near)}?" if near else f"valid {what}: " + ", ".join(sorted(choices))


# -- typed keyword readers ------------------------------------------------------------------------
class _Reader:
    """Reads the keywords of one mapping, with errors that point at the keyword's line."""

    def __init__(self, node: PosDict, what: str):
        self.node = node
        self.what = what

    def pos(self, key: str) -> Pos:
        return self.node.pos_of(key)

    def error(self, key: str, message: str, hint: str | None = None) -> LoadError:
        return LoadError(message, pos=self.pos(key), field=key, hint=hint)

    def str(self, key: str, default: str | None = None) -> str | None:
        value = self.node.get(key, default)
        if value is None:
            return default
        if isinstance(value, (dict, list)):
            raise self.error(key, f"expected a string, got a {type(value).__name__}")
        return str(value)

    def bool_or_template(self, key: str) -> Any:
        value = self.node.get(key)
        if value is None or isinstance(value, bool) or is_template(value):
            return value
        if is_bool_like(value):
            return to_bool(value)
        raise self.error(key, f"expected a boolean (true/false), got {value!r}")

    def bool(self, key: str, default: bool | None = None) -> bool | None:
        value = self.bool_or_template(key)
        if is_template(value):
            raise self.error(key, "a template is not allowed here; write true or false")
        return default if value is None else value

    def str_list(self, key: str, *, comma: bool = False) -> list[str]:
        value = self.node.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()] if comma else [value]
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            return [str(v) for v in value]
        raise self.error(key, f"expected a string or a list of strings, got {value!r}")

    def conditions(self, key: str) -> list[Any] | None:
        value = self.node.get(key)
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, (str, bool, int)):
                raise self.error(key, f"expected a condition (a Jinja expression or a boolean), got {item!r}",
                                 hint="write conditions as bare expressions, e.g. when: result.rc == 0")
        return list(items)

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.node.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping (key: value), got {type(value).__name__}")
        return value

    def environment(self) -> dict[str, Any] | str:
        """`environment:` is a mapping, or one template that gives a mapping (`"{{ proxy_env }}"`)."""
        value = self.node.get("environment")
        if isinstance(value, str) and "{{" in value:
            return value
        return self.mapping("environment")

    def variables(self, key: str) -> dict[str, Any]:
        """A `vars:` mapping: its keys must be valid variable names."""
        value = self.mapping(key)
        for name in value:
            if not isinstance(name, str) or not _IDENTIFIER.match(name):
                raise LoadError(f"invalid variable name {name!r}", pos=_key_pos(value, name, self.pos(key)), field=f"{key}.{name}",
                                hint="variable names are letters, digits and underscores, not starting with a digit")
        return value

    def int_or_template(self, key: str) -> Any:
        value = self.node.get(key)
        if value is None or is_template(value) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return value
        if isinstance(value, str):
            try:
                return float(value) if "." in value else int(value)
            except ValueError:
                pass
        raise self.error(key, f"expected a number, got {value!r}")

    def unknown(self, allowed: set[str], extra_allowed: Iterable[str] = ()) -> None:
        allowed_all = set(allowed) | set(extra_allowed)
        for key in self.node:
            if key not in allowed_all:
                raise self.error(str(key), f"unknown {self.what} keyword '{key}'", hint=_nearest_hint(str(key), allowed, "keywords"))


def load_vars_file(path: str, pos: Pos | None = None) -> dict[str, Any]:
    """Load a YAML/JSON file of variables (vars_files, -e @file, group_vars)."""
    if not os.path.isfile(path):
        raise LoadError(f"vars file not found: {path}", pos=pos or Pos(path), hint="check the path; relative paths are taken from the playbook's directory")
    data = load_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LoadError("a vars file must be a mapping of variable names to values", pos=_pos(data, Pos(path)))
    for key in data:
        if not isinstance(key, str) or not _IDENTIFIER.match(key):
            raise LoadError(f"invalid variable name {key!r}", pos=_key_pos(data, key, Pos(path)),
                            hint="variable names are letters, digits and underscores, not starting with a digit")
    return data
