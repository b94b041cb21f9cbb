"""The Jinja2 filters and tests playbooks use most, with Ansible's names and meaning."""

from __future__ import annotations

import base64
import json
import ntpath
import os
import posixpath
import re
import shlex
from collections.abc import Mapping
from typing import Any

import yaml
from jinja2 import Undefined
from jinja2.exceptions import FilterArgumentError

from glmops.errors import LoadError
from glmops.values import to_bool as _to_bool
from glmops.values import truthy as _truthy
from glmops.yamlpos import LimitedSafeLoader


def to_bool(value: Any) -> bool:
    """Ansible's `bool` filter: the boolean words (yes/no, true/false, on/off, 1/0...); anything else is False."""
    return _to_bool(value, strict=False)
    return False


_NO_DEFAULT: Any = object()


def to_int(value: Any, default: Any = _NO_DEFAULT, base: int = 10) -> int:
    """Jinja's `int`, except that a value that is not a number is an error unless a default is given."""
    try:
        if isinstance(value, str):
            return int(value.strip(), base)
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            if default is not _NO_DEFAULT:
                return default
            raise FilterArgumentError(f"int: cannot convert {value!r} to an integer") from None


def to_float(value: Any, default: Any = _NO_DEFAULT) -> float:
    """Jinja's `float`, except that a value that is not a number is an error unless a default is given."""
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        if default is not _NO_DEFAULT:
            return default
        raise FilterArgumentError(f"float: cannot convert {value!r} to a number") from None


def default(value: Any, fallback: Any = "", boolean: bool = False) -> Any:
    if isinstance(value, Undefined) or (boolean and not value):
        return fallback
    return value


def mandatory(value: Any, msg: str | None = None) -> Any:
    """Fail with `msg` (or one naming the variable) when `value` is undefined."""
    if isinstance(value, Undefined):
        name = getattr(value, "_undefined_name", None)
        raise FilterArgumentError(msg or (f"mandatory variable '{name}' is not defined" if name else "a mandatory variable is not defined"))
    return value


def ternary(value: Any, true_value: Any, false_value: Any, none_value: Any = None) -> Any:
    if value is None and none_value is not None:
        return none_value
    return true_value if value else false_value


def regex_replace(value: Any, pattern: str, replacement: str = "", ignorecase: bool = False, multiline: bool = False) -> str:
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    return re.sub(pattern, replacement, str(value), flags=flags)


def regex_search(value: Any, pattern: str, *groups: str, ignorecase: bool = False, multiline: bool = False) -> Any:
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    match = re.search(pattern, str(value), flags=flags)
    if not match:
        return None
    if not groups:
        return match.group(0)
    out = []
    for group in groups:
        if group.startswith("\\g<") and group.endswith(">"):
            out.append(match.group(group[3:-1]))
        elif group.startswith("\\"):
            out.append(match.group(int(group[1:])))
        else:
            raise FilterArgumentError(f"regex_search: bad group reference {group!r} (use '\\\\1' or '\\\\g<name>')")
    return out


def regex_findall(value: Any, pattern: str, ignorecase: bool = False, multiline: bool = False) -> list[Any]:
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    return re.findall(pattern, str(value), flags=flags)


def split(value: Any, sep: str | None = None, maxsplit: int = -1) -> list[str]:
    return str(value).split(sep, maxsplit)


def to_json(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, **kwargs)


def to_nice_json(value: Any, indent: int = 4, **kwargs: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=True, default=str, **kwargs)


def _plain(value: Any) -> Any:
    """PosDict/PosList/Unsafe and other subclasses -> plain dict/list/str, so yaml.safe_dump accepts them."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_yaml(value: Any, **kwargs: Any) -> str:
    return yaml.safe_dump(_plain(value), allow_unicode=True, default_flow_style=None, **kwargs)


def to_nice_yaml(value: Any, indent: int = 2, **kwargs: Any) -> str:
    return yaml.safe_dump(_plain(value), allow_unicode=True, indent=indent, default_flow_style=False, **kwargs)


def from_json(value: Any) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError) as exc:
        raise FilterArgumentError(f"from_json: not valid JSON: {exc}") from None


def from_yaml(value: Any) -> Any:
    try:
        return yaml.load(value, Loader=LimitedSafeLoader)  # noqa: S506 - a SafeLoader with the alias limit
    except yaml.YAMLError as exc:
        raise FilterArgumentError(f"from_yaml: not valid YAML: {exc}") from None
    except LoadError as exc:
        raise FilterArgumentError(f"from_yaml: {exc.message}") from None


def b64encode(value: Any, encoding: str = "utf-8") -> str:
    return base64.b64encode(str(value).encode(encoding)).decode("ascii")


def b64decode(value: Any, encoding: str = "utf-8") -> str:
    try:
        return base64.b64decode("".join(str(value).split()), validate=True).decode(encoding)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FilterArgumentError(f"b64decode: {exc}") from None


def quote(value: Any) -> str:
    return shlex.quote(str(value))


def first(value: Any) -> Any:
    return next(iter(value), None)


def last(value: Any) -> Any:
    items = list(value)
    return items[-1] if items else None


def flatten(value: Any, levels: int | None = None, skip_nulls: bool = True) -> list[Any]:
    """Ansible's `flatten`: nested lists into one list (`levels` deep; None and '' dropped)."""
    if not isinstance(value, (list, tuple)):
        return [value]
    out: list[Any] = []
    for item in value:
        if skip_nulls and item in (None, "None", "null"):
            continue
        if isinstance(item, (list, tuple)) and (levels is None or levels > 0):
            out.extend(flatten(item, None if levels is None else levels - 1, skip_nulls))
        else:
            out.append(item)
    return out


def unique(value: Any) -> list[Any]:
    out: list[Any] = []
    for item in value:
        if item not in out:
            out.append(item)
    return out


def combine(*dicts: Any, recursive: bool = False, list_merge: str = "replace") -> dict[str, Any]:
    def merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for key, value in b.items():
            if recursive and isinstance(out.get(key), Mapping) and isinstance(value, Mapping):
                out[key] = merge(dict(out[key]), value)
            elif list_merge == "append" and isinstance(out.get(key), list) and isinstance(value, list):
                out[key] = out[key] + value
            else:
                out[key] = value
        return out

    result: dict[str, Any] = {}
    for item in dicts:
        for one in item if isinstance(item, list) else [item]:
            if not isinstance(one, Mapping):
                raise FilterArgumentError(f"combine: expected mappings, got {type(one).__name__}")
            result = merge(result, one)
    return result


def dict2items(value: Any, key_name: str = "key", value_name: str = "value") -> list[dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise FilterArgumentError(f"dict2items: expected a mapping, got {type(value).__name__}")
    return [{key_name: k, value_name: v} for k, v in value.items()]


def items2dict(value: Any, key_name: str = "key", value_name: str = "value") -> dict[Any, Any]:
    try:
        return {item[key_name]: item[value_name] for item in value}
    except (KeyError, TypeError) as exc:
        raise FilterArgumentError(f"items2dict: each item needs '{key_name}' and '{value_name}': {exc}") from None


def human_readable(value: Any, isbits: bool = False, unit: str | None = None) -> str:
    """Bytes as Ansible shows them: 1.00 KB, 3.50 GB (powers of 1024)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FilterArgumentError(f"human_readable: {value!r} is not a number") from None
    suffix = "b" if isbits else "B"
    units = ["", "K", "M", "G", "T", "P", "E"]
    index = 0
    if unit:
        index = units.index(unit[0].upper()) if unit[0].upper() in units else 0
        number = number / (1024**index)
    else:
        while abs(number) >= 1024 and index < len(units) - 1:
            number /= 1024
            index += 1
    return f"{number:.2f} {units[index]}{suffix}" if index else f"{number:.2f} {'Bytes' if not isbits else 'bits'}"


def type_debug(value: Any) -> str:
    """Ansible's `type_debug`: the Python type name of a value (dict, list, str, int, bool, NoneType...)."""
    for plain in (bool, int, float, str, dict, list, tuple):
        if isinstance(value, plain):
            return plain.__name__  # PosDict/PosList/unsafe text read as the plain type, as in Ansible
    return type(value).__name__


def expanduser(value: Any) -> str:
    """Ansible's `expanduser`: `~` and `~user` expanded on the controller."""
    return os.path.expanduser(str(value))


def basename(value: Any) -> str:
    return posixpath.basename(str(value))


def dirname(value: Any) -> str:
    return posixpath.dirname(str(value))


FILTERS = {
    "default": default,
    "d": default,
    "bool": to_bool,
    "int": to_int,
    "float": to_float,
    "mandatory": mandatory,
    "ternary": ternary,
    "regex_replace": regex_replace,
    "regex_search": regex_search,
    "regex_findall": regex_findall,
    "split": split,
    "to_json": to_json,
    "to_nice_json": to_nice_json,
    "to_yaml": to_yaml,
    "to_nice_yaml": to_nice_yaml,
    "from_json": from_json,
    "from_yaml": from_yaml,
    "b64encode": b64encode,
    "b64decode": b64decode,
    "quote": quote,
    "first": first,
    "last": last,
    "unique": unique,
    "flatten": flatten,
    "combine": combine,
    "dict2items": dict2items,
    "items2dict": items2dict,
    "human_readable": human_readable,
    "basename": basename,
    "dirname": dirname,
    "win_basename": lambda v: ntpath.basename(str(v)),
    "type_debug": type_debug,
    "expanduser": expanduser,
}


# -- tests ------------------------------------------------------------------------------------
def _result(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FilterArgumentError("this test needs a registered task result")
    return value


def succeeded(value: Any) -> bool:
    return not _result(value).get("failed", False)


def failed(value: Any) -> bool:
    return bool(_result(value).get("failed", False))


def changed(value: Any) -> bool:
    return bool(_result(value).get("changed", False))


def skipped(value: Any) -> bool:
    return bool(_result(value).get("skipped", False))


def _version_key(text: Any) -> list[tuple[float, Any]]:
    """'v4.40.2' -> [(0, 4), (0, 40), (0, 2)]; words sort before numbers."""
    text = str(text).strip()
    if text[:1] in ("v", "V") and text[1:2].isdigit():
        text = text[1:]
    return [(0, int(p)) if p.isdigit() else (-1, p.lower()) for p in re.findall(r"\d+|[A-Za-z]+", text)]


def version_test(value: Any, other: Any, operator: str = "eq", strict: Any = None, version_type: Any = None) -> bool:
    """Ansible's `version` test: compare dotted versions numerically (`'4.9' is version('4.40', '<')`)."""
    a, b = _version_key(value), _version_key(other)
    # Pad the shorter one: a missing number is 0 ('1.0' == '1.0.0'); a missing word sorts after
    # the word, so a release is newer than its pre-releases ('1.0rc1' < '1.0').
    for short, long_ in ((a, b), (b, a)):
        for part in long_[len(short):]:
            short.append((0, 0) if part[0] == 0 else (-0.5, ""))
    ops = {
        "eq": a == b, "==": a == b, "ne": a != b, "!=": a != b,
        "lt": a < b, "<": a < b, "le": a <= b, "<=": a <= b,
        "gt": a > b, ">": a > b, "ge": a >= b, ">=": a >= b,
    }
    if operator not in ops:
        raise FilterArgumentError(f"version: unknown operator {operator!r}")
    return ops[operator]


def contains(value: Any, item: Any) -> bool:
    """Ansible's `contains` test: `list is contains(item)` (the reverse of Jinja's `in`)."""
    try:
        return item in value
    except TypeError:
        return False


def truthy_test(value: Any, convert_bool: bool = False) -> bool:
    """Ansible's `truthy` test: Python truthiness (`convert_bool=True`: boolean words as they say)."""
    return _truthy(value) if convert_bool else bool(value)


TESTS = {
    "contains": contains,
    "truthy": truthy_test,
    "falsy": lambda value, convert_bool=False: not truthy_test(value, convert_bool),
    "succeeded": succeeded,
    "successful": succeeded,
    "success": succeeded,
    "failed": failed,
    "failure": failed,
    "changed": changed,
    "change": changed,
    "skipped": skipped,
    "skip": skipped,
    "match": lambda value, pattern, ignorecase=False: re.match(pattern, str(value), re.I if ignorecase else 0) is not None,
    "search": lambda value, pattern, ignorecase=False: re.search(pattern, str(value), re.I if ignorecase else 0) is not None,
    "regex": lambda value, pattern: re.search(pattern, str(value)) is not None,
    "version": version_test,
    "version_compare": version_test,
}
