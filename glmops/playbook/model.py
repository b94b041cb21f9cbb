"""The loaded, validated form of a playbook.

The loader turns YAML into these objects and checks everything that can be checked before a run
(module names, argument names, keywords, roles, vars files). Values are kept unrendered: templates
(`{{ }}`) are rendered by the executor for each host, at the moment a task runs.
Every node keeps `pos` (file:line:column) for error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from glmops.errors import Pos


@dataclass
class TaskOptions:
    """Keywords shared by tasks, blocks and includes. Blocks pass theirs down to their tasks."""

    name: str | None = None
    when: list[Any] = field(default_factory=list)  # bare Jinja expressions (or booleans), all must hold
    tags: list[str] = field(default_factory=list)
    become: bool | None = None
    become_user: str | None = None
    environment: dict[str, Any] | str = field(default_factory=dict)  # a mapping, or one template giving one
    vars: dict[str, Any] = field(default_factory=dict)
    ignore_errors: Any = None  # bool or template
    no_log: Any = None  # bool or template
    check_mode: bool | None = None  # force check mode on (True) or off (False) for this task
    delegate_to: Any = None  # run on this host instead (a template; 'localhost' = the controller)
    delegate_facts: Any = None  # facts the task sets go to the delegated host
    run_once: Any = None  # run on the first host only; every host gets the result
    diff: bool | None = None  # force --diff on or off for this task
    become_method: str | None = None  # only 'sudo' (and 'su' refused at load time with a hint)


@dataclass
class Task(TaskOptions):
    pos: Pos = field(default_factory=lambda: Pos("<unknown>"))
    module: str = ""  # canonical module name (no ansible.builtin. prefix)
    args: dict[str, Any] = field(default_factory=dict)  # unrendered, aliases resolved
    register: str | None = None
    loop: Any = None  # a list, or a template string that renders to one; None = no loop
    loop_var: str = "item"
    index_var: str | None = None
    loop_label: Any = None
    notify: list[str] = field(default_factory=list)
    listen: list[str] = field(default_factory=list)  # handlers only
    changed_when: list[Any] | None = None
    failed_when: list[Any] | None = None
    until: list[Any] | None = None
    retries: Any = None
    delay: Any = None
    async_: Any = None  # `async:` seconds (int or template): run detached on the host
    poll: Any = None  # `poll:` seconds between checks of an async task; 0 = fire and forget
    role: "Role | None" = None  # the role the task comes from (search paths, role vars)
    loop_with: str | None = None  # `with_X: ...` -> 'X' (executor/loops.py makes the items)
    loop_extended: bool = False  # loop_control.extended: the `ansible_loop` variable
    loop_extended_allitems: bool = True
    loop_pause: Any = None  # loop_control.pause: seconds between items
    break_when: list[Any] | None = None  # loop_control.break_when: stop after the item that makes these true

    @property
    def display_name(self) -> str:
        return self.name or self.module


@dataclass
class Block(TaskOptions):
    pos: Pos = field(default_factory=lambda: Pos("<unknown>"))
    block: list["Item"] = field(default_factory=list)
    rescue: list["Item"] = field(default_factory=list)
    always: list["Item"] = field(default_factory=list)
    role: "Role | None" = None
    notify: list[str] = field(default_factory=list)  # handlers notified by every task inside that changes


@dataclass
class IncludeTasks(TaskOptions):
    """`include_tasks: FILE` — loaded when reached (the file name may be a template)."""

    pos: Pos = field(default_factory=lambda: Pos("<unknown>"))
    file: str = ""
    base_dir: str = ""  # the directory relative paths are resolved against
    loop: Any = None
    loop_var: str = "item"
    role: "Role | None" = None


@dataclass
class IncludeRole(TaskOptions):
    """`include_role: {name: ROLE, tasks_from: main}` — run the role's tasks when reached."""

    pos: Pos = field(default_factory=lambda: Pos("<unknown>"))
    role_name: str = ""
    tasks_from: str = "main"
    loop: Any = None
    loop_var: str = "item"
    role: "Role | None" = None  # the enclosing role
    vars_from: str | None = None
    defaults_from: str | None = None
    handlers_from: str | None = None
    apply: dict[str, Any] = field(default_factory=dict)  # keywords applied to the role's tasks (when, tags, become...)
    public: bool = False  # the role's defaults and vars stay visible after it, for the rest of the play


Item = Union[Task, Block, IncludeTasks, IncludeRole]


@dataclass(eq=False)  # a role is itself: compared by identity (its tasks refer back to it)
class Role:
    name: str
    path: str  # the role's directory
    pos: Pos  # where it is referenced
    defaults: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # vars given where the role is used
    tasks: list[Item] = field(default_factory=list)
    handlers: list[Task] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    when: list[Any] = field(default_factory=list)
    # roles from meta/main.yml `dependencies:`. In a play's `roles:` the loader also lists them in
    # Play.roles (before this role); for import_role/include_role their tasks lead `tasks` as Blocks.
    dependencies: list["Role"] = field(default_factory=list)

    @property
    def search_paths(self) -> list[str]:
        """Where `src` of copy/template is looked up for this role's tasks."""
        return [self.path]


@dataclass
class Play:
    pos: Pos
    hosts: str  # host pattern (lists are joined with ':')
    name: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    vars_files: list[str] = field(default_factory=list)  # resolved, absolute paths
    vars_from_files: dict[str, Any] = field(default_factory=dict)  # loaded contents, merged in order
    roles: list[Role] = field(default_factory=list)
    pre_tasks: list[Item] = field(default_factory=list)
    tasks: list[Item] = field(default_factory=list)
    post_tasks: list[Item] = field(default_factory=list)
    handlers: list[Task] = field(default_factory=list)  # play handlers followed by roles' handlers
    gather_facts: bool = True
    become: bool = False
    become_user: str = "root"
    environment: dict[str, Any] | str = field(default_factory=dict)  # a mapping, or one template giving one
    connection: str | None = None  # 'ssh' or 'local'
    tags: list[str] = field(default_factory=list)
    host_key_checking: str | None = None  # 'yes' | 'accept-new' | 'no'
    base_dir: str = ""  # the playbook's directory
    strategy: str = "linear"  # 'linear' or 'free'
    serial: Any = None  # hosts per batch: a number, 'N%', or a list of them
    any_errors_fatal: bool = False  # a failure on one host ends the play for all
    force_handlers: bool = False  # notified handlers run even on hosts that failed
    max_fail_percentage: Any = None

    @property
    def display_name(self) -> str:
        return self.name or self.hosts


@dataclass
class Playbook:
    path: str
    plays: list[Play]
