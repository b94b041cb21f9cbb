"""What YAML (inventory.py) and INI (inventory_ini.py) inventories both do to a host entry.

`expand_host_range` turns `web[01:03]` into its hosts; `check_port` checks `ansible_port`. Both
readers import this module, so neither imports the other's internals.
"""

from __future__ import annotations

import re
from typing import Any

from glmops.errors import LoadError, Pos
from glmops.values import is_template
from glmops.yamlpos import PosDict

_RANGE = re.compile(r"\[([0-9]+|[a-zA-Z]):([0-9]+|[a-zA-Z])(?::([0-9]+))?\]")


def expand_host_range(name: str) -> list[str]:
    """Expand Ansible host ranges: web[01:03] -> web01, web02, web03; db-[a:c]; [0:10:5] steps."""
    match = _RANGE.search(name)
    if not match:
        return [name]
    first, last, step = match[1], match[2], int(match[3] or 1)
    head, tail = name[: match.start()], name[match.end() :]
    if first.isdigit() and last.isdigit():
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        values = [str(n).zfill(width) for n in range(int(first), int(last) + 1, max(step, 1))]
    elif first.isalpha() and last.isalpha():
        values = [chr(n) for n in range(ord(first), ord(last) + 1, max(step, 1))]
    else:
        return [name]
    return [expanded for value in values for expanded in expand_host_range(head + value + tail)]


def check_port(owner: str, variables: dict[str, Any], pos: Pos) -> None:
    """ansible_port must be a whole number from 1 to 65535 (a template is checked later)."""
    port = variables.get("ansible_port")
    if port is None or is_template(port):
        return
    if isinstance(variables, PosDict):
        pos = variables.pos_of("ansible_port")
    try:
        if isinstance(port, (bool, float)) or not 0 < int(str(port).strip()) < 65536:
            raise ValueError
    except (TypeError, ValueError):
        raise LoadError(f"{owner}: ansible_port must be a port number (1-65535), got {port!r}", pos=pos, field="ansible_port",
                        hint="write the number alone, e.g. ansible_port: 12345") from None
