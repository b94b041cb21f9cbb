"""The variables a task sees on one host: every precedence layer plus the magic variables."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from glmops.executor.state import HostState, RunOptions, Scope
from glmops.inventory import Inventory
from glmops.playbook.model import Play, Role, Task
from glmops.playbook.variables import HostVars, merge_layers


class TaskVars:
    """Mixin of PlaybookRunner: variables for a task (reads the play, the inventory and the host states)."""

    play: Play | None
    inventory: Inventory
    options: RunOptions
    hosts: dict[str, HostState]
    _inventory_vars: dict[str, dict[str, Any]]
    _groups: dict[str, list[str]]
    play_pattern: Callable[[Play], Any]

    def task_vars(self, state: HostState, scope: Scope, task: Task | None = None) -> dict[str, Any]:
        assert self.play is not None
        play = self.play
        role = scope.role
        layers: list[Mapping[str, Any]] = [r.defaults for r in play.roles]
        if role is not None and role not in play.roles:
            layers.append(role.defaults)
        layers += [self._inventory_vars.get(state.name, {}), play.vars, play.vars_from_files]
        if role is not None:
            layers += [role.vars, role.params]
        layers += scope.vars
        if task is not None:
            layers.append(task.vars)
        layers += [state.facts, self.options.extra_vars]
        variables = merge_layers(layers)
        variables.update(self._magic(state, role))
        return variables

    def _magic(self, state: HostState, role: Role | None) -> dict[str, Any]:
        assert self.play is not None
        magic = {
            "inventory_hostname": state.name,
            "inventory_hostname_short": state.name.split(".")[0],
            "group_names": self.inventory.group_names(state.name) if state.name in self.inventory.hosts else [],
            "groups": self._groups,
            "hostvars": HostVars(list(self.inventory.hosts), self._hostvars_of),
            "playbook_dir": self.play.base_dir,
            "ansible_playbook_python": sys.executable,  # the controller's Python running glmops (as in Ansible)
            "ansible_check_mode": self.options.check,
            "ansible_diff_mode": self.options.diff,
            "ansible_play_hosts": [s for s in self.inventory.select(self.play_pattern(self.play)) if self.hosts.get(s) and self.hosts[s].active],
            "ansible_play_hosts_all": self.inventory.select(self.play_pattern(self.play)),
            "ansible_play_batch": [s for s in self.inventory.select(self.play_pattern(self.play)) if self.hosts.get(s) and self.hosts[s].active],
            "ansible_play_name": self.play.display_name,
            "ansible_run_tags": list(self.options.tags) or ["all"],
            "ansible_skip_tags": list(self.options.skip_tags),
            "ansible_play_role_names": [r.name for r in self.play.roles],
            "ansible_role_names": list(dict.fromkeys([r.name for r in self.play.roles] + self._included_role_names)),
            "omit": "__omit_place_holder__",
        }
        if role is not None:
            magic["role_path"] = role.path
            magic["role_name"] = role.name
        return magic

    def _hostvars_of(self, name: str) -> dict[str, Any]:
        state = self.hosts.get(name)
        return merge_layers([self._inventory_vars.get(name, {}), state.facts if state else {}, {"inventory_hostname": name}])

    def _search_paths(self, scope: Scope) -> list[str]:
        assert self.play is not None
        return ([scope.role.path] if scope.role else []) + [self.play.base_dir]
