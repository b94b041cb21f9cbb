"""What a run keeps: the options, each host's state, and the scope blocks and roles pass down."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from glmops.connection.base import Connection
from glmops.playbook.model import Block, Role

Event = dict[str, Any]
STATS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")


@dataclass
class RunOptions:
    """The command line of `glmops run`, as the runner needs it."""

    check: bool = False
    diff: bool = False
    forks: int = 10
    limit: str | None = None
    tags: list[str] = field(default_factory=list)
    skip_tags: list[str] = field(default_factory=list)
    extra_vars: dict[str, Any] = field(default_factory=dict)
    start_at_task: str | None = None
    roles_path: list[str] = field(default_factory=list)  # from --roles-path: for include_role at run time
    host_key_checking: str | None = None  # from --accept-new-host-keys
    password: str | None = None  # from --ask-pass: for hosts without ansible_password
    become_password: str | None = None  # from --ask-become-pass: for hosts without ansible_become_password
    verbosity: int = 0


@dataclass
class Scope:
    """What blocks, roles and includes pass down to the tasks inside them."""

    when: list[Any] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    become: bool | None = None
    become_user: str | None = None
    environment: list[dict[str, Any]] = field(default_factory=list)
    vars: list[dict[str, Any]] = field(default_factory=list)
    role: Role | None = None
    ignore_errors: Any = None
    no_log: Any = None
    check_mode: bool | None = None
    in_rescue_block: bool = False
    notify: list[str] = field(default_factory=list)  # from blocks (and import_tasks): handlers their tasks notify
    delegate_to: Any = None
    delegate_facts: Any = None
    run_once: Any = None
    diff: bool | None = None

    def enter(self, node: Any, role: Role | None = None) -> "Scope":
        return replace(
            self,
            when=self.when + list(getattr(node, "when", []) or []),
            tags=self.tags + list(getattr(node, "tags", []) or []),
            become=node.become if getattr(node, "become", None) is not None else self.become,
            become_user=getattr(node, "become_user", None) or self.become_user,
            environment=self.environment + ([node.environment] if getattr(node, "environment", None) else []),
            vars=self.vars + ([node.vars] if getattr(node, "vars", None) else []),
            role=role or self.role,
            ignore_errors=node.ignore_errors if getattr(node, "ignore_errors", None) is not None else self.ignore_errors,
            no_log=node.no_log if getattr(node, "no_log", None) is not None else self.no_log,
            check_mode=node.check_mode if getattr(node, "check_mode", None) is not None else self.check_mode,
            notify=self.notify + (list(node.notify) if isinstance(node, Block) else []),
            delegate_to=getattr(node, "delegate_to", None) or self.delegate_to,
            delegate_facts=_first(getattr(node, "delegate_facts", None), self.delegate_facts),
            run_once=_first(getattr(node, "run_once", None), self.run_once),
            diff=_first(getattr(node, "diff", None), self.diff),
        )


@dataclass
class HostState:
    """One host during the run: its connection, facts and registered results, stats, notified handlers."""

    name: str
    conn: Connection | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # registered results, set_fact, gathered facts
    facts_gathered: bool = False
    failed: bool = False  # left the play
    unreachable: bool = False  # left the run
    notified: set[str] = field(default_factory=set)
    stats: Counter = field(default_factory=Counter)
    ended: bool = False  # meta: end_host / end_play: out of this play, not failed
    last_failure: tuple[Any, dict[str, Any]] | None = None  # (task, result): ansible_failed_task/_result in rescue

    @property
    def active(self) -> bool:
        return not (self.failed or self.unreachable or self.ended)



def status_of(result: Mapping[str, Any]) -> str:
    """failed, skipped, changed or ok: what a task's result counts as."""
    if result.get("failed"):
        return "failed"
    if result.get("skipped"):
        return "skipped"
    if result.get("changed"):
        return "changed"
    return "ok"


class _Applied:
    """include_role `apply:` as a node Scope.enter reads (when, tags, become, environment...)."""

    def __init__(self, keywords: Mapping[str, Any]) -> None:
        when = keywords.get("when")
        self.when = when if isinstance(when, list) else ([when] if when is not None else [])
        tags = keywords.get("tags") or []
        self.tags = [t.strip() for t in tags.split(",")] if isinstance(tags, str) else list(tags)
        for name in ("become", "become_user", "environment", "vars", "ignore_errors", "no_log", "check_mode",
                     "delegate_to", "delegate_facts", "run_once", "diff"):
            setattr(self, name, keywords.get(name))


def _first(*values: Any) -> Any:
    """The first value that is not None."""
    return next((v for v in values if v is not None), None)


def task_info(task: Any) -> dict[str, Any]:
    """ansible_failed_task: the task's name ('' when unnamed, as 2.19), action, args and where it is."""
    return {"name": task.name or "", "action": task.module, "args": dict(task.args), "register": task.register,
            "when": list(task.when), "pos": str(task.pos)}
