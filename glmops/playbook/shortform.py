"""Module arguments as written in a task: a mapping, a list (free-form argv) or `k=v` short form."""

from __future__ import annotations

import re
import shlex
from typing import Any

from glmops.errors import ArgumentError, LoadError, Pos
from glmops.modules import get_module
from glmops.modules.base import validate_args
from glmops.yamlpos import PosDict

_RAW_TOKEN = re.compile(r"""(?:\{\{.*?\}\}|\{%.*?%\}|[^\s"'{]+|\{|"(?:\\.|[^"\\])*"|'[^']*')+""", re.S)
_OPTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)


def module_args(node: PosDict, key: str, module_name: str) -> dict[str, Any]:
    module = get_module(module_name)
    raw = node[key]
    pos = node.pos_of(key)
    if raw is None:
        args: dict[str, Any] = {}
    elif isinstance(raw, dict):
        args = raw
    elif isinstance(raw, str):
        args = parse_short_form(raw, module, pos)
    elif isinstance(raw, list) and module.free_form:
        args = {"argv": raw} if "argv" in module.args else {module.free_form: raw}
    else:
        raise LoadError(f"arguments of '{key}' must be a mapping or 'key=value' text, got {type(raw).__name__}", pos=pos, field=key)
    extra = node.get("args")
    if extra is not None:
        if not isinstance(extra, dict):
            raise LoadError("'args' must be a mapping", pos=node.pos_of("args"), field="args")
        args = {**extra, **args}
    try:
        return validate_args(module, args, final=False, pos=pos)
    except ArgumentError as exc:
        field_pos = pos
        for source, source_key in ((raw, key), (extra, "args")):
            if isinstance(source, PosDict) and exc.field in source:
                field_pos, key = source.pos_of(exc.field), source_key
                break
        raise LoadError(exc.message, pos=field_pos, field=f"{key}.{exc.field}" if exc.field else key, hint=exc.hint) from None


def parse_short_form(text: str, module: Any, pos: Pos) -> dict[str, Any]:
    """`k=v k2="v 2"` for ordinary modules; free text plus known k=v options for command/shell/raw."""
    if module.free_form:
        args: dict[str, Any] = {}
        options = set(module.args) - {module.free_form}
        for match in _RAW_TOKEN.finditer(text):
            option = _OPTION.match(match.group(0))
            if option and option.group(1) in options:
                args[option.group(1)] = _unquote(option.group(2))
        args[module.free_form] = _remove_options(text, args)
        return args
    args = {}
    for match in _RAW_TOKEN.finditer(text):
        option = _OPTION.match(match.group(0))
        if not option:
            raise LoadError(f"expected key=value, got {match.group(0)!r}", pos=pos, hint=f"module '{module.name}' takes: " + ", ".join(sorted(module.args)))
        args[option.group(1)] = _unquote(option.group(2))
    return args


def _unquote(value: str) -> str:
    """The value of a `key=value` token: surrounding quotes removed, as a shell would."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        try:
            return shlex.split(value)[0]
        except ValueError:
            return value[1:-1]
    return value


def _remove_options(text: str, options: dict[str, Any]) -> str:
    """The free-form text with the recognised `key=value` option tokens removed."""
    pieces: list[str] = []
    last = 0
    for match in _RAW_TOKEN.finditer(text):
        option = _OPTION.match(match.group(0))
        if option and option.group(1) in options:
            pieces.append(text[last : match.start()])
            last = match.end()
    pieces.append(text[last:])
    return re.sub(r"[ \t]{2,}", " ", "".join(pieces)).strip() if len(pieces) > 1 else text.strip()
