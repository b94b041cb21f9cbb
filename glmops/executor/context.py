"""What every part of a run shares: the run context the play runner creates and hands to its parts.

The play runner (runner.py), the task runner (taskcall.py), the task variables (taskvars.py) and the
dynamic includes (includes.py) each receive this one object instead of reading each other's attributes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from glmops.errors import Pos
from glmops.executor.state import Event, HostState, RunOptions
from glmops.executor.tags import TagFilter
from glmops.inventory import Inventory
from glmops.output.redact import Redactor
from glmops.playbook.model import Play, Playbook
from glmops.playbook.templating import Templar


@dataclass(eq=False)
class RunContext:
    """The run's shared state: inputs, templar, redactor, event sink, host states and the current play."""

    playbook: Playbook
    inventory: Inventory
    options: RunOptions
    sink: Callable[[Event], None]  # where redacted events go (the renderer)
    redactor: Redactor = field(default_factory=Redactor)
    templar: Templar = field(init=False)
    tag_filter: TagFilter = field(init=False)
    hosts: dict[str, HostState] = field(default_factory=dict)  # the play hosts' states (connections, facts, stats)
    delegates: dict[str, HostState] = field(default_factory=dict)  # delegate_to hosts: connection only
    delegate_locks: dict[str, threading.Lock] = field(default_factory=dict)  # one command at a time on a delegated host
    inventory_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    added_hosts: set[str] = field(default_factory=set)  # hosts add_host added during the run
    included_role_names: list[str] = field(default_factory=list)  # include_role/import_role roles run so far
    play: Play | None = None  # the running play
    end_play: bool = False  # meta: end_play, any_errors_fatal
    abort: bool = False  # any_errors_fatal: no later play runs either
    stop: threading.Event = field(default_factory=threading.Event)  # set by interrupt(): no new task starts
    connect_lock: threading.Lock = field(default_factory=threading.Lock)
    inventory_lock: threading.Lock = field(default_factory=threading.Lock)  # group_by / add_host
    emit_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.templar = Templar(on_secret=self.redactor.add)
        self.tag_filter = TagFilter(self.options.tags, self.options.skip_tags)
        self.groups = {name: self.inventory.group_hosts(name) for name in self.inventory.groups}

    def emit(self, kind: str, **data: Any) -> None:
        """Send one event, redacted, to the sink (one at a time: hosts run in threads)."""
        event = self.redactor.scrub({"event": kind, **data})
        with self.emit_lock:
            self.sink(event)

    @property
    def interrupted(self) -> bool:
        return self.stop.is_set()

    def selected(self, tags: list[str]) -> bool:
        """Do --tags/--skip-tags select an item with these tags?"""
        return self.tag_filter.selected(set(tags))

    def play_pattern(self, play: Play) -> Any:
        """The play's host pattern; a template (`hosts: "{{ target | default('autodl') }}"`) is rendered
        with the extra vars only, as in Ansible (inventory and play vars are per host)."""
        if not Templar.is_template(play.hosts):
            return play.hosts
        return self.templar.render(play.hosts, dict(self.options.extra_vars), pos=play.pos, field="hosts")

    def fail_host(self, state: HostState, pos: Pos, message: str) -> None:
        """Fail a host outside a module call (an include or meta whose templates failed)."""
        state.failed = True
        state.stats["failed"] += 1
        self.emit("host_result", host=state.name, task="include", status="failed", msg=message, pos=str(pos), duration=0.0)
