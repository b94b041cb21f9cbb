"""One meaning for booleans and for "is this a template", used by the loader, templating, filters
and module arguments. No dependencies (not even Jinja2), so every layer can import it.

Booleans follow ansible-core 2.19:

- `to_bool(value)` is Ansible's `boolean()`: True/False as they are; the words y/yes/on/true/t/1
  and n/no/off/false/f/0 (any case, surrounding blanks ignored) and the numbers 1 and 0; anything
  else is refused (`NotABoolean`). This is what module arguments of type bool and boolean
  keywords (`become: yes`) accept.
- `to_bool(value, strict=False)` is the `bool` filter: the same words, anything else is False
  (`2 | bool` and `'maybe' | bool` are False).
- `truthy(value)` is how a condition (`when`, `failed_when`, `until`...) decides: a boolean word
  decides as the word says (`-e flag=false` is false), anything else by Python truthiness (`2`, a
  non-empty list or string are true; an empty one is false).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TRUE_WORDS = frozenset({"y", "yes", "on", "true", "t", "1"})
FALSE_WORDS = frozenset({"n", "no", "off", "false", "f", "0"})
TEMPLATE_MARKERS = ("{{", "{%", "{#")


class NotABoolean(ValueError):
    """A value that is not one of the boolean words or numbers."""

    def __init__(self, value: Any):
        super().__init__(f"{value!r} is not a boolean (use true/false, yes/no, on/off, 1/0)")
        self.value = value


def _word(value: Any) -> bool | None:
    """True/False when `value` is a boolean, a boolean word or the number 1 or 0; else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return True if value == 1 else False if value == 0 else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        word = value.strip().lower()
        return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None
    return None


def to_bool(value: Any, *, strict: bool = True) -> bool:
    """Ansible's boolean(): see the module docstring. Raises NotABoolean when strict."""
    result = _word(value)
    if result is not None:
        return result
    if strict:
        raise NotABoolean(value)
    return False


def is_bool_like(value: Any) -> bool:
    """Would `to_bool(value)` accept it?"""
    return _word(value) is not None


def truthy(value: Any) -> bool:
    """How a condition's value decides: boolean words as they say, anything else by Python truth."""
    result = _word(value) if isinstance(value, (str, bytes)) else None
    return bool(value) if result is None else result


class Unsafe(str):
    """Text never templated (`{{` in it stays as written), as Ansible's AnsibleUnsafeText: YAML's
    `!unsafe` tag, and everything that comes from a host (see `to_unsafe`)."""

    __slots__ = ()


def to_unsafe(value: Any) -> Any:
    """`value` with every string in it (keys too, all the way down lists, tuples and dicts) marked
    `Unsafe`: data from a host, never rendered as a template nor evaluated as an expression.

    Containers are copied (dicts stay dicts, lists and tuples become lists); other values, and
    mappings that compute their items when asked (hostvars), are returned as they are.
    """
    if isinstance(value, Unsafe):
        return value
    if isinstance(value, str):
        return Unsafe(value)
    if isinstance(value, dict):
        return {to_unsafe(k): to_unsafe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_unsafe(v) for v in value]
    return value


def contains_unsafe(value: Any) -> bool:
    """Is `value` unsafe text, or a dict, list or tuple holding some anywhere?"""
    if isinstance(value, str):
        return isinstance(value, Unsafe)
    if isinstance(value, dict):
        return any(contains_unsafe(k) or contains_unsafe(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(contains_unsafe(v) for v in value)
    return False


def is_template(value: Any) -> bool:
    """Is `value` a string holding Jinja2 syntax (`{{ }}`, `{% %}` or `{# #}`)? `Unsafe` text never is."""
    return isinstance(value, str) and not isinstance(value, Unsafe) and any(marker in value for marker in TEMPLATE_MARKERS)


def has_template(value: Any) -> bool:
    """Does `value` hold a template anywhere (strings, and inside lists, tuples and mappings)?"""
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, Mapping):
        return any(has_template(k) or has_template(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(has_template(v) for v in value)
    return False
