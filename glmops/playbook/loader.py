"""Load and validate playbooks, task files, roles and vars files into the model.

Everything that can be checked before a run is checked here, so nothing runs on any host unless the
whole playbook loaded: keywords, module names, module arguments (as far as they are literal),
roles, vars files, included task files with literal names, handler names used by `notify`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from glmops.errors import LoadError, Pos
from glmops.playbook.includes import IncludeLoader
from glmops.playbook.model import Item, Playbook, Role
from glmops.playbook.plays import Plays, _load_plays
from glmops.playbook.readers import load_vars_file
from glmops.playbook.roles import Roles
from glmops.playbook.tasks import Tasks

__all__ = ["Loader", "load_playbook", "load_role", "load_tasks_file", "load_vars_file"]


class Loader(Roles, Tasks, IncludeLoader, Plays):
    """Loads one playbook; keeps the state needed for roles, includes and cycle detection.

    Its parts: roles.py, tasks.py, includes.py, plays.py (mixins), readers.py (typed keyword
    readers), shortform.py (module arguments).
    """

    def __init__(self, playbook_dir: str, extra_roles_paths: Iterable[str] = ()):
        self.playbook_dir = playbook_dir
        self.extra_roles_paths = list(extra_roles_paths)
        self._stack: list[str] = []
        self._role_stack: list[str] = []
        self.imported_roles: list[Role] = []  # roles of import_role/include_role (their handlers join the play's)
        self.included_items: list[Item] = []  # tasks of literal include_tasks files, loaded to validate them


def load_playbook(path: str, *, extra_roles_paths: Iterable[str] = ()) -> Playbook:
    """Load and validate a playbook file (and everything it imports); raise LoadError if anything is wrong."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise LoadError("playbook not found", pos=Pos(path), hint="check the path given to glmops run")
    loader = Loader(os.path.dirname(path), extra_roles_paths)
    return Playbook(path=path, plays=_load_plays(loader, path, []))


def load_role(name: str, *, base_dir: str, pos: Pos, params: dict[str, Any] | None = None, tasks_from: str = "main",
              extra_roles_paths: Iterable[str] = (), vars_from: str = "main", defaults_from: str = "main") -> Role:
    """Load a role by name, as include_role does at run time (its dependencies' tasks lead its tasks)."""
    loader = Loader(base_dir, extra_roles_paths)
    return loader.load_role(name, pos, params=params, tasks_from=tasks_from, vars_from=vars_from, defaults_from=defaults_from)


def load_tasks_file(path: str, *, role: Role | None, pos: Pos, base_dir: str | None = None) -> list[Item]:
    """Load a task file, as include_tasks does at run time."""
    loader = Loader(base_dir or os.path.dirname(os.path.abspath(path)))
    return loader.load_tasks_file(path, role=role, pos=pos)

