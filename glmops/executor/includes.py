"""include_tasks and include_role at run time: file or role chosen per host, loaded, then run."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from glmops.errors import GlmopsError, TemplateError
from glmops.executor.context import RunContext
from glmops.executor.state import HostState, Scope, _Applied
from glmops.executor.taskvars import TaskVars
from glmops.playbook.model import IncludeRole, IncludeTasks, Item

RunItems = Callable[[list[Item], list[HostState], Scope], None]


class IncludeRunner:
    """The dynamic includes: loads the file or role each host chose, then hands its items back to
    the play runner (`run_items`, given at construction)."""

    def __init__(self, ctx: RunContext, variables: TaskVars, run_items: RunItems):
        self.ctx = ctx
        self.templar = ctx.templar
        self.variables = variables
        self.run_items = run_items

    def run_include(self, include: IncludeTasks, states: list[HostState], scope: Scope) -> None:
        from glmops.playbook.loader import load_tasks_file

        inner = scope.enter(include, role=include.role)
        if not self.ctx.selected(inner.tags):
            return
        groups: dict[str, list[tuple[HostState, dict[str, Any]]]] = {}
        for state in states:
            variables = self.variables.task_vars(state, inner)
            try:
                if not self.templar.all_true(inner.when, variables, pos=include.pos):
                    continue
                for extra in self._include_loop(include, variables):
                    file = self.templar.render(include.file, {**variables, **extra}, pos=include.pos, field="include_tasks")
                    groups.setdefault(str(file), []).append((state, extra))
            except GlmopsError as exc:
                self.ctx.fail_host(state, include.pos, f"include_tasks: {exc}")
        for file, members in groups.items():
            path = file if os.path.isabs(file) else os.path.join(include.base_dir, file)
            try:
                items = load_tasks_file(path, role=include.role, pos=include.pos)
            except GlmopsError as exc:
                for state, _ in members:
                    self.ctx.fail_host(state, include.pos, str(exc))
                continue
            by_extra: dict[str, tuple[dict[str, Any], list[HostState]]] = {}
            for state, extra in members:
                by_extra.setdefault(repr(sorted(extra.items())), (extra, []))[1].append(state)
            for extra, hosts in by_extra.values():
                self.run_items(items, hosts, replace(inner, vars=inner.vars + ([extra] if extra else []), when=list(scope.when)))

    def run_include_role(self, include: IncludeRole, states: list[HostState], scope: Scope) -> None:
        from glmops.playbook.loader import load_role

        inner = scope.enter(include)
        if not self.ctx.selected(inner.tags):
            return
        runnable = []
        for state in states:
            variables = self.variables.task_vars(state, inner)
            try:
                if self.templar.all_true(inner.when, variables, pos=include.pos):
                    runnable.append((state, self.templar.render(include.role_name, variables, pos=include.pos, field="name")))
            except GlmopsError as exc:
                self.ctx.fail_host(state, include.pos, str(exc))
        for name in dict.fromkeys(n for _, n in runnable):
            play = self.ctx.play
            assert play is not None
            try:
                role = load_role(name, base_dir=play.base_dir, pos=include.pos, tasks_from=include.tasks_from,
                                 extra_roles_paths=self.ctx.options.roles_path, vars_from=include.vars_from or "main",
                                 defaults_from=include.defaults_from or "main")
            except GlmopsError as exc:
                for state, n in runnable:
                    if n == name:
                        self.ctx.fail_host(state, include.pos, str(exc))
                continue
            play.handlers.extend(h for h in role.handlers if h.name not in {x.name for x in play.handlers})
            self.ctx.included_role_names.append(role.name)
            hosts = [s for s, n in runnable if n == name]
            role_scope = replace(inner, role=role, when=list(scope.when))
            if include.apply:
                role_scope = role_scope.enter(_Applied(include.apply))
            self.run_items(role.tasks, hosts, role_scope)
            if include.public:  # the role's defaults and vars stay visible to the rest of the play
                for state in hosts:
                    for key, value in {**role.defaults, **role.vars}.items():
                        state.facts.setdefault(key, value)

    def _include_loop(self, include: Any, variables: dict[str, Any]) -> list[dict[str, Any]]:
        if include.loop is None:
            return [{}]
        items = self.templar.render(include.loop, variables, pos=include.pos, field="loop")
        if not isinstance(items, list):
            raise TemplateError(f"loop must be a list, got {type(items).__name__}", pos=include.pos, field="loop")
        return [{include.loop_var: item} for item in items]
