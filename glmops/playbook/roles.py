"""Roles: where they are found, loading one (defaults, vars, tasks, handlers, meta dependencies)."""

from __future__ import annotations

import os
from typing import Any

from glmops.errors import LoadError, Pos
from glmops.playbook.loadcontext import LoadContext
from glmops.playbook.model import Block, Item, Role
from glmops.playbook.tasks import Tasks
from glmops.playbook.readers import _IDENTIFIER, _key_pos, _pos, _Reader, load_vars_file
from glmops.shipped import shipped_roles
from glmops.values import is_template
from glmops.yamlpos import PosDict, PosList, load_yaml

PROJECT_ROLES = shipped_roles()  # the shipped roles: the checkout's roles/, or the wheel's (glmops/shipped.py)


class Roles:
    """The loader's part for roles and their dependencies (task files through `tasks`)."""

    def __init__(self, ctx: LoadContext, tasks: Tasks):
        self.ctx = ctx
        self.tasks = tasks

    def role_dirs(self) -> list[str]:
        dirs = [os.path.join(self.ctx.playbook_dir, "roles"), os.path.join(os.getcwd(), "roles"), *self.ctx.extra_roles_paths]
        env = os.environ.get("GLMOPS_ROLES_PATH") or os.environ.get("ANSIBLE_ROLES_PATH")
        if env:
            dirs.extend(env.split(os.pathsep))
        dirs.append(str(PROJECT_ROLES))
        seen: list[str] = []
        for d in dirs:
            if os.path.abspath(d) not in seen:
                seen.append(os.path.abspath(d))
        return seen

    def find_role(self, name: str, pos: Pos) -> str:
        candidates = [name] if os.path.isabs(name) else [os.path.join(d, name) for d in self.role_dirs()]
        if not os.path.isabs(name) and ("/" in name):
            candidates.insert(0, os.path.join(self.ctx.playbook_dir, name))
        for candidate in candidates:
            if os.path.isdir(candidate):
                return candidate
        raise LoadError(f"role '{name}' not found", pos=pos, field="role", hint="searched: " + ", ".join(candidates))

    @staticmethod
    def _role_file(role_path: str, sub: str, name: str = "main") -> str | None:
        for ext in (".yml", ".yaml", ""):
            path = os.path.join(role_path, sub, name + ext)
            if os.path.isfile(path):
                return path
        return None

    def load_role(self, name: str, pos: Pos, params: dict[str, Any] | None = None, tasks_from: str = "main",
                  vars_from: str = "main", defaults_from: str = "main", *, inline_dependencies: bool = True) -> Role:
        """Load roles/NAME: defaults, vars, tasks (`tasks_from`), handlers and meta dependencies.

        With `inline_dependencies` the tasks of the roles it depends on (meta/main.yml) come first
        in `role.tasks`, each as a Block of that role; otherwise they are only in `role.dependencies`
        (the play's `roles:` runs them as roles of their own).
        """
        path = self.find_role(name, pos)
        if path in self.ctx.role_stack:
            chain = " -> ".join(os.path.basename(p) for p in self.ctx.role_stack + [path])
            raise LoadError(f"role dependency loop: {chain}", pos=pos, field="dependencies", hint="remove one of the dependencies in meta/main.yml")
        role = Role(name=os.path.basename(path.rstrip("/")), path=path, pos=pos, params=dict(params or {}))
        for sub, attr, file_name in (("defaults", "defaults", defaults_from), ("vars", "vars", vars_from)):
            file = self._role_file(path, sub, file_name)
            if file:
                setattr(role, attr, load_vars_file(file))
            elif file_name != "main":
                raise LoadError(f"role '{name}' has no {sub} file '{file_name}'", pos=pos, field=f"{sub}_from",
                                hint=f"expected {os.path.join(path, sub, file_name + '.yml')}")
        self.ctx.role_stack.append(path)
        try:
            role.dependencies = self._role_dependencies(path)
            tasks_file = self._role_file(path, "tasks", tasks_from)
            if tasks_file:
                role.tasks = self.tasks.load_tasks_file(tasks_file, role=role, pos=pos)
            elif tasks_from != "main":
                raise LoadError(f"role '{name}' has no tasks file '{tasks_from}'", pos=pos, field="tasks_from",
                                hint=f"expected {os.path.join(path, 'tasks', tasks_from + '.yml')}")
            handlers_file = self._role_file(path, "handlers")
            if handlers_file:
                role.handlers = self.tasks.load_handlers(handlers_file, role=role)
        finally:
            self.ctx.role_stack.pop()
        if inline_dependencies and role.dependencies:
            role.tasks = [*self._dependency_blocks(role.dependencies), *role.tasks]
            for dep in role.dependencies:  # each one's handlers already include its own dependencies'
                role.handlers.extend(h for h in dep.handlers if all(h is not mine for mine in role.handlers))
        return role

    def _role_dependencies(self, role_path: str) -> list[Role]:
        """The roles listed under `dependencies:` in meta/main.yml (names or {role: NAME, PARAM: V})."""
        meta_file = self._role_file(role_path, "meta")
        if not meta_file:
            return []
        meta = load_yaml(meta_file)
        if meta is None:
            return []
        if not isinstance(meta, dict):
            raise LoadError("meta/main.yml must be a mapping", pos=_pos(meta, Pos(meta_file)), hint="e.g. dependencies: [common]")
        deps = meta.get("dependencies") or []
        if not isinstance(deps, list):
            raise LoadError("'dependencies' must be a list of roles", pos=_key_pos(meta, "dependencies", Pos(meta_file)), field="dependencies")
        out = []
        for index, entry in enumerate(deps):
            entry_pos = deps.pos_of(index) if isinstance(deps, PosList) else Pos(meta_file)
            out.append(self.play_role(entry, entry_pos, field="dependencies"))
        return out

    @staticmethod
    def _dependency_blocks(deps: list[Role]) -> list[Item]:
        blocks: list[Item] = []
        for dep in deps:
            blocks.append(Block(pos=dep.pos, block=list(dep.tasks), role=dep, when=list(dep.when), tags=list(dep.tags)))
        return blocks

    def play_role(self, entry: Any, pos: Pos, *, field: str = "roles", inline: bool = True) -> Role:
        """One entry of `roles:` (or of meta `dependencies:`): NAME, or {role: NAME, tags, when, vars, PARAM: V}."""
        if isinstance(entry, str):
            self._literal_role_name(entry, pos, field)
            return self.load_role(entry, pos, inline_dependencies=inline)
        if not isinstance(entry, PosDict):
            raise LoadError(f"a role entry must be a name or a mapping, got {entry!r}", pos=pos, field=field,
                            hint="e.g. - common  or  - {role: api, port: 6006}")
        name = entry.get("role") or entry.get("name")
        if not isinstance(name, str) or not name:
            raise LoadError("a role entry needs 'role: NAME'", pos=pos, field=field, hint="e.g. - {role: api, port: 6006}")
        self._literal_role_name(name, pos, field)
        reader = _Reader(entry, "role")
        params = {k: v for k, v in entry.items() if k not in ("role", "name", "tags", "when", "vars")}
        bad = [k for k in params if not isinstance(k, str) or not _IDENTIFIER.match(k)]
        if bad:
            raise reader.error(str(bad[0]), f"invalid role parameter name {bad[0]!r}", hint="parameters are variable names: letters, digits, _")
        params.update(reader.variables("vars"))
        role = self.load_role(name, pos, params=params, inline_dependencies=inline)
        role.tags = reader.str_list("tags", comma=True)
        role.when = reader.conditions("when") or []
        return role

    @staticmethod
    def _literal_role_name(name: str, pos: Pos, field: str) -> None:
        if is_template(name):
            raise LoadError(f"a role name here cannot be a template: {name!r}", pos=pos, field=field,
                            hint="roles are loaded before anything runs; use include_role in tasks for a templated name")
