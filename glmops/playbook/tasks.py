"""Task lists: tasks, blocks (block/rescue/always), handlers and task files."""

from __future__ import annotations

import difflib
import os
from typing import TYPE_CHECKING, Any

from glmops.errors import LoadError, Pos
from glmops.modules import canonical_name, get_module, is_module, module_names, nearest_modules
from glmops.playbook.loadcontext import LoadContext
from glmops.playbook.model import Block, Item, Role, Task
from glmops.playbook.readers import _IDENTIFIER, BLOCK_KEYWORDS, INCLUDE_ACTIONS, TASK_KEYWORDS, _nearest_hint, _pos, _Reader, _action_node, _become_method
from glmops.playbook.includes import read_loop
from glmops.playbook.shortform import module_args
from glmops.yamlpos import PosDict, PosList, load_yaml

if TYPE_CHECKING:
    from glmops.playbook.includes import IncludeLoader


class Tasks:
    """The loader's part for task lists and the items in them (include actions through `includes`,
    attached by the Loader: a task list holds includes, and an include loads a task list)."""

    def __init__(self, ctx: LoadContext):
        self.ctx = ctx
        self.includes: IncludeLoader | None = None

    def attach(self, includes: IncludeLoader) -> None:
        """Give the part that reads include/import actions (it needs this part too)."""
        self.includes = includes

    def load_tasks_file(self, path: str, *, role: Role | None, pos: Pos) -> list[Item]:
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise LoadError(f"task file not found: {path}", pos=pos)
        if path in self.ctx.stack:
            raise LoadError(f"task file includes itself: {' -> '.join(self.ctx.stack + [path])}", pos=pos)
        self.ctx.stack.append(path)
        try:
            data = load_yaml(path)
            if data is None:
                return []
            if not isinstance(data, list):
                raise LoadError("a task file must be a list of tasks", pos=_pos(data, Pos(path)), hint="start each task with '- name: ...'")
            return self.load_items(data, role=role, base_dir=os.path.dirname(path))
        finally:
            self.ctx.stack.pop()

    def load_handlers(self, path: str, *, role: Role | None) -> list[Task]:
        data = load_yaml(path)
        if data is None:
            return []
        if not isinstance(data, list):
            raise LoadError("a handlers file must be a list of tasks", pos=_pos(data, Pos(path)))
        return only_tasks(self.load_items(data, role=role, base_dir=os.path.dirname(path), handlers=True))

    def task_list(self, reader: _Reader, key: str, *, role: Role | None, base_dir: str, handlers: bool = False) -> list[Item] | None:
        """The task list under `key` (block/rescue/always, pre_tasks/tasks/post_tasks/handlers); None when absent."""
        value = reader.node.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise reader.error(key, f"'{key}' must be a list of tasks")
        return self.load_items(value, role=role, base_dir=base_dir, handlers=handlers)

    def load_items(self, data: list[Any], *, role: Role | None, base_dir: str, handlers: bool = False) -> list[Item]:
        items: list[Item] = []
        for index, node in enumerate(data):
            pos = data.pos_of(index) if isinstance(data, PosList) else Pos(base_dir)
            if not isinstance(node, PosDict):
                raise LoadError(f"a task must be a mapping, got {node!r}", pos=pos, hint="write '- name: ...' followed by a module, e.g. 'command: echo hi'")
            items.append(self.load_item(node, role=role, base_dir=base_dir, handlers=handlers))
        return items

    def options(self, reader: _Reader, target: Any) -> None:
        target.name = reader.str("name")
        target.when = reader.conditions("when") or []
        target.tags = reader.str_list("tags", comma=True)
        target.become = reader.bool("become")
        target.become_user = reader.str("become_user")
        target.environment = reader.environment()
        target.vars = reader.variables("vars")
        target.ignore_errors = reader.bool_or_template("ignore_errors")
        target.no_log = reader.bool_or_template("no_log")
        target.check_mode = reader.bool("check_mode")
        delegate = reader.node.get("delegate_to")
        if delegate is not None and (not isinstance(delegate, str) or not delegate.strip()):
            raise reader.error("delegate_to", f"delegate_to needs a host name, got {delegate!r}", hint="e.g. delegate_to: localhost")
        target.delegate_to = delegate
        target.delegate_facts = reader.bool_or_template("delegate_facts")
        target.run_once = reader.bool_or_template("run_once")
        target.diff = reader.bool("diff")
        target.become_method = _become_method(reader)

    def load_item(self, node: PosDict, *, role: Role | None, base_dir: str, handlers: bool = False) -> Item:
        if "action" in node or "local_action" in node:
            node = _action_node(node)
        if "block" in node:
            reader = _Reader(node, "block")
            reader.unknown(BLOCK_KEYWORDS)
            block = Block(pos=node.pos, role=role)
            self.options(reader, block)
            block.notify = reader.str_list("notify")
            for part in ("block", "rescue", "always"):
                items = self.task_list(reader, part, role=role, base_dir=base_dir, handlers=handlers)
                if items is not None:
                    setattr(block, part, items)
            return block
        actions = [k for k in node if k not in TASK_KEYWORDS]
        known = [k for k in actions if is_module(str(k)) or canonical_name(str(k)) in INCLUDE_ACTIONS]
        for key in actions:
            if key not in known:
                if known:
                    raise LoadError(f"unknown task keyword '{key}'", pos=node.pos_of(key), field=str(key),
                                    hint=_nearest_hint(str(key), TASK_KEYWORDS, "task keywords"))
                near = nearest_modules(str(key)) + difflib.get_close_matches(str(key), TASK_KEYWORDS, n=2)
                raise LoadError(
                    f"unknown module '{key}'",
                    pos=node.pos_of(key),
                    field=str(key),
                    hint=(f"did you mean: {', '.join(near)}? " if near else "") + "modules: " + ", ".join(module_names()),
                )
        if not known:
            raise LoadError("this task has no module", pos=node.pos, hint="add a module, e.g. 'command: echo hi'; modules: " + ", ".join(module_names()))
        if len(known) > 1:
            raise LoadError(f"a task has one module, this one has {len(known)}: {', '.join(map(str, known))}", pos=node.pos_of(known[1]),
                            field=str(known[1]), hint="split it into separate tasks")
        action = canonical_name(str(known[0]))
        if action in INCLUDE_ACTIONS:
            assert self.includes is not None, "Loader attaches the include part"
            return self.includes.include(node, action, str(known[0]), role=role, base_dir=base_dir)
        return self._task(node, action, str(known[0]), role=role, handlers=handlers)

    def _task(self, node: PosDict, module_name: str, key: str, *, role: Role | None, handlers: bool) -> Task:
        reader = _Reader(node, "task")
        if "listen" in node and not handlers:
            raise reader.error("listen", "'listen' is for handlers only")
        task = Task(pos=node.pos, module=module_name, role=role)
        self.options(reader, task)
        task.args = module_args(node, key, module_name)
        task.register = reader.str("register")
        if task.register is not None and not _IDENTIFIER.match(task.register):
            raise reader.error("register", f"'{task.register}' is not a valid variable name")
        read_loop(reader, node, task)
        task.notify = reader.str_list("notify")
        task.listen = reader.str_list("listen")
        task.changed_when = reader.conditions("changed_when")
        task.failed_when = reader.conditions("failed_when")
        task.until = reader.conditions("until")
        task.retries = reader.int_or_template("retries")
        task.delay = reader.int_or_template("delay")
        task.async_ = reader.int_or_template("async")
        task.poll = reader.int_or_template("poll")
        if task.async_ is not None and not get_module(module_name).supports_async:
            supported = ", ".join(name for name in module_names() if get_module(name).supports_async)
            raise reader.error("async", f"module '{module_name}' does not support async",
                               hint=f"async/poll work with: {supported}")
        return task


def only_tasks(items: list[Item]) -> list[Task]:
    """Handlers: the items of a handlers list, which must all be plain tasks."""
    handlers: list[Task] = []
    for item in items:
        if not isinstance(item, Task):
            raise LoadError("handlers must be plain tasks (no block or include)", pos=item.pos)
        handlers.append(item)
    return handlers
