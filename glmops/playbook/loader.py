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
from glmops.playbook.loadcontext import LoadContext
from glmops.playbook.model import Item, Play, Playbook, Role
from glmops.playbook.plays import Plays, _load_plays
from glmops.playbook.readers import load_vars_file
from glmops.playbook.roles import Roles
from glmops.playbook.tasks import Tasks

__all__ = ["Loader", "load_playbook", "load_role", "load_tasks_file", "load_vars_file"]


class Loader:
    """Loads one playbook: creates the load context (loadcontext.py) and owns the parts, each given
    that context and the parts it calls: tasks.py (task lists), roles.py (roles), includes.py
    (include/import actions), plays.py (one play); readers.py (typed keyword readers) and
    shortform.py (module arguments) are functions they share.
    """

    def __init__(self, playbook_dir: str, extra_roles_paths: Iterable[str] = ()):
        self.ctx = LoadContext(playbook_dir, list(extra_roles_paths))
        self.tasks = Tasks(self.ctx)
        self.roles = Roles(self.ctx, self.tasks)
        self.tasks.attach(IncludeLoader(self.ctx, self.tasks, self.roles))
        self.plays = Plays(self.ctx, self.tasks, self.roles)

    def role_dirs(self) -> list[str]:
        """Where roles are looked for, in order."""
        return self.roles.role_dirs()

    def load_role(self, name: str, pos: Pos, params: dict[str, Any] | None = None, tasks_from: str = "main",
                  vars_from: str = "main", defaults_from: str = "main") -> Role:
        """A role by name, its dependencies' tasks first (roles.py)."""
        return self.roles.load_role(name, pos, params, tasks_from, vars_from, defaults_from)

    def load_tasks_file(self, path: str, *, role: Role | None, pos: Pos) -> list[Item]:
        """The items of a task file."""
        return self.tasks.load_tasks_file(path, role=role, pos=pos)

    def load_play(self, node: Any, pos: Pos) -> Play:
        """One play of a playbook."""
        return self.plays.load_play(node, pos)


def load_playbook(path: str, *, extra_roles_paths: Iterable[str] = ()) -> Playbook:
    """Load and validate a playbook file (and everything it imports); raise LoadError if anything is wrong."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise LoadError("playbook not found", pos=Pos(path), hint="check the path given to glmops run")
    loader = Loader(os.path.dirname(path), extra_roles_paths)
    return Playbook(path=path, plays=_load_plays(loader.plays, path, []))


def load_role(name: str, *, base_dir: str, pos: Pos, params: dict[str, Any] | None = None, tasks_from: str = "main",
              extra_roles_paths: Iterable[str] = (), vars_from: str = "main", defaults_from: str = "main") -> Role:
    """Load a role by name, as include_role does at run time (its dependencies' tasks lead its tasks)."""
    loader = Loader(base_dir, extra_roles_paths)
    return loader.load_role(name, pos, params=params, tasks_from=tasks_from, vars_from=vars_from, defaults_from=defaults_from)


def load_tasks_file(path: str, *, role: Role | None, pos: Pos, base_dir: str | None = None) -> list[Item]:
    """Load a task file, as include_tasks does at run time."""
    loader = Loader(base_dir or os.path.dirname(os.path.abspath(path)))
    return loader.load_tasks_file(path, role=role, pos=pos)

