"""Ansible's INI inventory format, read into an `Inventory` (glmops/inventory.py).

    loose1 ansible_host=10.0.0.9        # before any section: an ungrouped host
    [gpu]
    box[1:2] ansible_port=2222          # hosts with inline variables; ranges expand
    box3:2200                           # a port after ':'
    [gpu:vars]
    model=chatglm3                      # group variables
    [fleet:children]
    gpu                                 # child groups

Values are read as ansible-core's INI plugin reads them: a Python literal (4, True, [1, 2],
'quoted') becomes that value, anything else stays text (`yes`, `true` and `hello world` are text).
"""

from __future__ import annotations

import ast
import shlex
from typing import TYPE_CHECKING, Any

from glmops.errors import LoadError, Pos
from glmops.inventory_hosts import check_port, expand_host_range

if TYPE_CHECKING:  # pragma: no cover
    from glmops.inventory import Inventory

SECTION_KINDS = ("hosts", "vars", "children")
HINT = "see docs/inventory.md (INI inventories): [group], [group:vars] with key=value lines, [group:children]"


def looks_like_ini(text: str) -> bool:
    """Does `text` read as an INI inventory rather than YAML (a `[section]` line, or `host key=value` lines)?"""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("[") and stripped.endswith("]") and "," not in stripped:
            return True
        if stripped == "---" or stripped.endswith(":") or ": " in stripped or stripped.startswith("- "):
            return False
    return True


def parse_value(text: str) -> Any:
    """A Python literal as its value, anything else as the text itself (the INI plugin's rule)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _host_and_port(word: str, pos: Pos) -> tuple[str, int | None]:
    if word.startswith("[") and "]:" in word:  # [::1]:2222
        host, _, port = word[1:].partition("]:")
    elif word.count(":") == 1 and not word.endswith("]"):
        host, _, port = word.partition(":")
    else:
        return word, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise LoadError(f"invalid port in host '{word}'", pos=pos, hint="write HOST:PORT with a port from 1 to 65535")
    return host, int(port)


def load_ini(inventory: "Inventory", text: str, path: str) -> None:
    """Add the groups, hosts and variables of INI `text` (read from `path`) to `inventory`."""
    group, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        pos = Pos(path, number, 1)
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise LoadError(f"section header not closed: {line!r}", pos=pos, hint=HINT)
            group, _, kind = line[1:-1].strip().partition(":")
            kind = kind or "hosts"
            if not group or kind not in SECTION_KINDS:
                raise LoadError(f"invalid section {line!r}: the part after ':' must be vars or children", pos=pos, hint=HINT)
            inventory.group(group)
            continue
        if kind == "vars":
            key, eq, value = line.partition("=")
            if not eq or not key.strip():
                raise LoadError(f"expected key=value in [{group}:vars], got {line!r}", pos=pos, hint=HINT)
            variables = {key.strip(): parse_value(value.strip())}
            check_port(f"group {group}", variables, pos)
            inventory.group(group).vars.update(variables)
        elif kind == "children":
            inventory.link(group, line.split()[0], pos)
        else:
            try:
                words = shlex.split(line, comments=True)
            except ValueError as exc:
                raise LoadError(f"cannot read the host line: {exc}", pos=pos, hint="close the quotes") from None
            if not words:
                continue
            name, port = _host_and_port(words[0], pos)
            variables: dict[str, Any] = {} if port is None else {"ansible_port": port}
            for word in words[1:]:
                key, eq, value = word.partition("=")
                if not eq or not key:
                    raise LoadError(f"host '{name}': expected key=value, got {word!r}", pos=pos,
                                    hint="quote a value holding spaces: key=\"two words\"")
                variables[key] = parse_value(value)
            check_port(f"host {name}", variables, pos)
            for expanded in expand_host_range(name):
                inventory.add_host(expanded, None if group in ("all", "ungrouped") else group, dict(variables))
