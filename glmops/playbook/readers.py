"""Typed readers for playbook mappings: keyword sets, positions, and errors that point at a line."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from typing import Any

from glmops.errors import LoadError, Pos
from glmops.loop_keywords import WITH_LOOPS
from glmops.values import is_bool_like, is_template, to_bool
from glmops.yamlpos import PosDict, load_yaml

PLAY_KEYWORDS = {
    "name", "hosts", "vars", "vars_files", "roles", "pre_tasks", "tasks", "post_tasks", "handlers",
    "gather_facts", "become", "become_user", "environment", "connection", "tags", "host_key_checking",
    "strategy", "serial", "any_errors_fatal", "force_handlers", "max_fail_percentage", "become_method",
}
COMMON_KEYWORDS = {"name", "when", "tags", "become", "become_user", "environment", "vars", "ignore_errors", "no_log", "check_mode",
                   "delegate_to", "delegate_facts", "run_once", "diff", "become_method"}
TASK_KEYWORDS = COMMON_KEYWORDS | {
    "register", "loop", "with_items", "loop_control", "notify", "listen", "changed_when", "failed_when",
    "retries", "until", "delay", "args", "async", "poll",
} | {"with_" + kind for kind in WITH_LOOPS}
BLOCK_KEYWORDS = COMMON_KEYWORDS | {"block", "rescue", "always", "notify"}
LOOP_CONTROL_KEYS = {"loop_var", "index_var", "label", "extended", "extended_allitems", "pause", "break_when"}
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


def _become_method(reader: _Reader) -> str | None:
    """become_method: glmops becomes with sudo; 'sudo' is accepted, another method is an error."""
    method = reader.str("become_method")
    if method is not None and method != "sudo" and not is_template(method):
        raise reader.error("become_method", f"become_method '{method}' is not supported", hint="glmops becomes with sudo (become_method: sudo)")
    return method


def _action_node(node: PosDict) -> PosDict:
    """`action: copy src=a dest=b` / `action: {module: copy, src: a}` (and `local_action:`, which also
    delegates to localhost) rewritten as the ordinary `copy: ...` form, with positions kept."""
    if "action" in node and "local_action" in node:
        raise LoadError("a task has either 'action' or 'local_action'", pos=node.pos_of("local_action"), field="local_action")
    key = "action" if "action" in node else "local_action"
    value = node[key]
    pos = node.pos_of(key)
    if isinstance(value, str):
        module, _, rest = value.strip().partition(" ")
        args: Any = rest.strip() or None
    elif isinstance(value, dict) and isinstance(value.get("module"), str):
        module = value["module"]
        args = PosDict({k: v for k, v in value.items() if k != "module"})
        args.pos, args.key_pos = getattr(value, "pos", pos), dict(getattr(value, "key_pos", {}))
    else:
        raise LoadError(f"'{key}' needs a module: '{key}: MODULE ARGS' or '{key}: {{module: MODULE, ...}}'", pos=pos, field=key)
    if not module or is_template(module):
        raise LoadError(f"'{key}' needs a literal module name", pos=pos, field=key)
    out = PosDict({k: v for k, v in node.items() if k != key})
    out.pos, out.key_pos = node.pos, {k: p for k, p in node.key_pos.items() if k != key}
    out[module] = args
    out.key_pos[module] = pos
    if key == "local_action":
        out["delegate_to"] = "localhost"
        out.key_pos["delegate_to"] = pos
    return out
