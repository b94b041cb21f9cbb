"""What group_by and add_host results do to the run's inventory (the runner calls `apply`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from glmops.errors import Pos
from glmops.inventory import Inventory


def apply(inventory: Inventory, host: str, result: Mapping[str, Any], pos: Pos) -> list[str]:
    """Apply a group_by (`add_group`) or add_host (`add_host`) result; return the hosts whose
    variables changed (empty when the result is neither)."""
    if "add_group" in result:
        group = str(result["add_group"])
        inventory.group(group)
        for parent in result.get("parent_groups") or ["all"]:
            if parent != "all" and group not in inventory.groups.get(parent, inventory.group(parent)).children:
                inventory.link(str(parent), group, pos)
        inventory.add_host(host, group)
        inventory.finish()
        return [host]
    if "add_host" in result:
        spec = result["add_host"]
        name = str(spec["host_name"])
        groups = list(spec.get("groups") or [])
        inventory.add_host(name, groups[0] if groups else None, dict(spec.get("host_vars") or {}))
        for group in groups[1:]:
            inventory.add_host(name, group)
        inventory.finish()
        return [name]
    return []
