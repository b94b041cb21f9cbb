"""Ansible's `with_*` loops and `loop_control: {extended: true}`: pure functions the runner calls.

`with_X: value` is Ansible's lookup plugin X applied to the (rendered) value; each returns the list
of items `loop` would get. `ansible_loop(...)` is the `ansible_loop` variable of one item.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import shlex
from collections.abc import Mapping
from typing import Any

from glmops.loop_keywords import WITH_SUPPORTED


class LoopError(ValueError):
    """A `with_*` value that the loop cannot use (the message says what it needs)."""


def _flatten(value: Any, levels: int | None) -> list[Any]:
    out: list[Any] = []
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, (list, tuple)) and (levels is None or levels > 0):
            out.extend(_flatten(item, None if levels is None else levels - 1))
        else:
            out.append(item)
    return out


def _lists(value: Any, kind: str) -> list[list[Any]]:
    if not isinstance(value, (list, tuple)) or not value:
        raise LoopError(f"with_{kind} needs a list of lists, got {value!r}")
    return [list(v) if isinstance(v, (list, tuple)) else [v] for v in value]


_SHORTCUT = re.compile(r"^(?:(?P<start>-?\d+)-)?(?P<end>-?\d+)(?:/(?P<stride>-?\d+))?(?::(?P<format>.+))?$")


def sequence(spec: Any) -> list[str]:
    """with_sequence: 'start=1 end=5 stride=2 format=n%02d', 'count=3' or the shortcut '1-5/2:fmt'; strings."""
    text = str(spec).strip()
    options: dict[str, str] = {}
    match = _SHORTCUT.match(text)
    if match:
        options = {k: v for k, v in match.groupdict().items() if v is not None}
    else:
        for word in shlex.split(text):
            key, eq, value = word.partition("=")
            if not eq or key not in ("start", "end", "count", "stride", "format"):
                raise LoopError(f"with_sequence: cannot read {word!r} (use start=, end=, count=, stride=, format=)")
            options[key] = value
    try:
        start = int(options.get("start", "1"), 0)
        stride = int(options.get("stride", "1"), 0)
        if "count" in options:
            if "end" in options:
                raise LoopError("with_sequence: give count or end, not both")
            count = int(options["count"], 0)
            end = start + (count - 1) * stride if count > 0 else start - stride
        elif "end" in options:
            end = int(options["end"], 0)
        else:
            raise LoopError("with_sequence: give end= or count=")
    except ValueError as exc:
        if isinstance(exc, LoopError):
            raise
        raise LoopError(f"with_sequence: not a number in {text!r}") from None
    fmt = options.get("format", "%d")
    if stride == 0:
        return []
    stop = end + (1 if stride > 0 else -1)
    return [fmt % number for number in range(start, stop, stride)]


def fileglob(patterns: Any, search_dirs: list[str]) -> list[str]:
    """with_fileglob: controller files matching each pattern; a relative pattern's folder is looked up in
    the search dirs' files/ first, then the dirs themselves (as Ansible)."""
    found: list[str] = []
    for pattern in patterns if isinstance(patterns, (list, tuple)) else [patterns]:
        pattern = str(pattern)
        folder, name = os.path.split(pattern)
        if os.path.isabs(pattern):
            bases = [folder]
        else:
            bases = [os.path.join(base, sub, folder) for sub in ("files", "") for base in search_dirs]
        for base in bases:
            if os.path.isdir(base):
                found += sorted(p for p in glob.glob(os.path.join(glob.escape(base), name)) if os.path.isfile(p))
                break
    return found


def with_items(kind: str, value: Any, search_dirs: list[str] | None = None) -> list[Any]:
    """The items of `with_KIND: value` (value already rendered)."""
    if kind == "items":
        return _flatten(value, 1)
    if kind == "flattened":
        return _flatten(value, None)
    if kind == "list":
        return list(value) if isinstance(value, (list, tuple)) else [value]
    if kind == "indexed_items":
        return [[index, item] for index, item in enumerate(_flatten(value, 1))]
    if kind == "dict":
        if not isinstance(value, Mapping):
            raise LoopError(f"with_dict needs a mapping, got {type(value).__name__}")
        return [{"key": key, "value": item} for key, item in value.items()]
    if kind == "sequence":
        return [n for spec in (value if isinstance(value, (list, tuple)) else [value]) for n in sequence(spec)]
    if kind == "together":
        return [list(t) for t in itertools.zip_longest(*_lists(value, kind))]
    if kind == "nested":
        return [list(t) for t in itertools.product(*_lists(value, kind))]
    if kind == "fileglob":
        return fileglob(value, search_dirs or [])
    raise LoopError(f"with_{kind} is not supported (supported: {', '.join('with_' + k for k in WITH_SUPPORTED)}; or use loop:)")


def ansible_loop(items: list[Any], index: int, *, allitems: bool = True) -> dict[str, Any]:
    """The `ansible_loop` variable of item `index` (loop_control: {extended: true})."""
    length = len(items)
    out: dict[str, Any] = {
        "index": index + 1, "index0": index, "first": index == 0, "last": index == length - 1, "length": length,
        "revindex": length - index, "revindex0": length - index - 1,
    }
    if allitems:
        out["allitems"] = items
    if index + 1 < length:
        out["nextitem"] = items[index + 1]
    if index > 0:
        out["previtem"] = items[index - 1]
    return out
