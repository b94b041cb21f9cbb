"""The variables a task sees on one host: every precedence layer plus the magic variables."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from glmops.executor.context import RunContext
from glmops.executor.state import HostState, Scope
from glmops.playbook.model import Role, Task
from glmops.playbook.variables import HostVars, merge_layers


class TaskVars:
    """Variables for a task (reads the run context: the play, the inventory and the host states)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def task_vars(self, state: HostState, scope: Scope, task: Task | None = None) -> dict[str, Any]:
        ctx = self.ctx
        assert ctx.play is not None
        play = ctx.play
        role = scope.role
        layers: list[Mapping[str, Any]] = [r.defaults for r in play.roles]
        if role is not None and role not in play.roles:
            layers.append(role.defaults)
        layers += [ctx.inventory_vars.get(state.name, {}), play.vars, play.vars_from_files]
        if role is not None:
            layers += [role.vars, role.params]
        layers += scope.vars
        if task is not None:
            layers.append(task.vars)
        layers += [state.facts, ctx.options.extra_vars]
        variables = merge_layers(layers)
        variables.update(self._magic(state, role))
        return variables

    def _magic(self, state: HostState, role: Role | None) -> dict[str, Any]:
        ctx = self.ctx
        play = ctx.play
        assert play is not None
        magic = {
            "inventory_hostname": state.name,
            "inventory_hostname_short": state.name.split(".")[0],
            "group_names": ctx.inventory.group_names(state.name) if state.name in ctx.inventory.hosts else [],
            "groups": ctx.groups,
            "hostvars": HostVars(list(ctx.inventory.hosts), self._hostvars_of),
            "playbook_dir": play.base_dir,
            "ansible_playbook_python": sys.executable,  # the controller's Python running glmops (as in Ansible)
            "ansible_check_mode": ctx.options.check,
            "ansible_diff_mode": ctx.options.diff,
            "ansible_play_hosts": [s for s in ctx.inventory.select(ctx.play_pattern(play)) if ctx.hosts.get(s) and ctx.hosts[s].active],
            "ansible_play_hosts_all": ctx.inventory.select(ctx.play_pattern(play)),
            "ansible_play_batch": [s for s in ctx.inventory.select(ctx.play_pattern(play)) if ctx.hosts.get(s) and ctx.hosts[s].active],
            "ansible_play_name": play.display_name,
            "ansible_run_tags": list(ctx.options.tags) or ["all"],
            "ansible_skip_tags": list(ctx.options.skip_tags),
            "ansible_play_role_names": [r.name for r in play.roles],
            "ansible_role_names": list(dict.fromkeys([r.name for r in play.roles] + ctx.included_role_names)),
            "omit": "__omit_place_holder__",
        }
        if role is not None:
            magic["role_path"] = role.path
            magic["role_name"] = role.name
        return magic

    def _hostvars_of(self, name: str) -> dict[str, Any]:
        state = self.ctx.hosts.get(name)
        return merge_layers([self.ctx.inventory_vars.get(name, {}), state.facts if state else {}, {"inventory_hostname": name}])

    def search_paths(self, scope: Scope) -> list[str]:
        """Where a task's relative files are found: its role, then the playbook's directory."""
        assert self.ctx.play is not None
        return ([scope.role.path] if scope.role else []) + [self.ctx.play.base_dir]
