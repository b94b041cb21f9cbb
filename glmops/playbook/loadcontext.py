"""What the loader's parts share while one playbook (or role, or task file) loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from glmops.playbook.model import Item, Role


@dataclass(eq=False)
class LoadContext:
    """The load's state: where roles are found, the files being loaded (cycle detection), and what
    imports and literal includes loaded on the way (validated with the play)."""

    playbook_dir: str
    extra_roles_paths: list[str] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)  # task files being loaded, outermost first
    role_stack: list[str] = field(default_factory=list)  # roles being loaded (dependency cycles)
    imported_roles: list[Role] = field(default_factory=list)  # roles of import_role/include_role (their handlers join the play's)
    included_items: list[Item] = field(default_factory=list)  # tasks of literal include_tasks files, loaded to validate them
    static_vars: dict[str, Any] = field(default_factory=dict)  # the play's vars: what a templated import_role name may use
