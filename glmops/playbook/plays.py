"""Plays and playbooks: play keywords, roles, task sections, handlers, import_playbook."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from glmops.errors import LoadError, Pos
from glmops.modules import canonical_name
from glmops.playbook.loadcontext import LoadContext
from glmops.playbook.model import Block, Item, Play, Task
from glmops.playbook.roles import Roles
from glmops.playbook.tasks import Tasks, only_tasks
from glmops.playbook.readers import PLAY_KEYWORDS, _nearest_hint, _pos, _Reader, load_vars_file, _become_method
from glmops.values import is_template
from glmops.yamlpos import PosDict, PosList, load_yaml


class Plays:
    """The loader's part for one play (task sections through `tasks`, roles through `roles`)."""

    def __init__(self, ctx: LoadContext, tasks: Tasks, roles: Roles):
        self.ctx = ctx
        self.tasks = tasks
        self.roles = roles

    def load_play(self, node: Any, pos: Pos) -> Play:
        if not isinstance(node, PosDict):
            raise LoadError(f"a play must be a mapping, got {node!r}", pos=pos, hint="each play starts with '- hosts: PATTERN'")
        reader = _Reader(node, "play")
        reader.unknown(PLAY_KEYWORDS)
        if "hosts" not in node:
            raise LoadError("a play needs 'hosts'", pos=node.pos, field="hosts", hint="e.g. hosts: all")
        hosts = node["hosts"]
        if isinstance(hosts, list):
            hosts = ":".join(str(h) for h in hosts)
        if not isinstance(hosts, str) or not hosts.strip():
            raise reader.error("hosts", "'hosts' must be a host pattern (a string or a list)")
        play = Play(pos=node.pos, hosts=hosts.strip(), base_dir=self.ctx.playbook_dir)
        play.name = reader.str("name")
        play.vars = reader.variables("vars")
        play.gather_facts = bool(reader.bool("gather_facts", True))
        play.become = bool(reader.bool("become", False))
        play.become_user = reader.str("become_user", "root") or "root"
        play.environment = reader.environment()
        play.tags = reader.str_list("tags", comma=True)
        strategy = reader.str("strategy", "linear")
        if strategy not in ("linear", "free"):
            raise reader.error("strategy", f"unsupported strategy '{strategy}'", hint="glmops has linear (the default) and free")
        play.strategy = strategy or "linear"
        play.serial = node.get("serial")
        play.any_errors_fatal = bool(reader.bool("any_errors_fatal", False))
        play.force_handlers = bool(reader.bool("force_handlers", False))
        play.max_fail_percentage = node.get("max_fail_percentage")
        _become_method(reader)
        connection = reader.str("connection")
        if connection is not None and connection not in ("ssh", "local", "paramiko"):
            raise reader.error("connection", f"unsupported connection '{connection}'", hint="use ssh or local")
        play.connection = connection
        checking = node.get("host_key_checking")
        if checking is not None:
            checking = {True: "yes", False: "no"}.get(checking, str(checking).lower())
            if checking not in ("yes", "no", "accept-new"):
                raise reader.error("host_key_checking", f"invalid value {node['host_key_checking']!r}", hint="use yes, no or accept-new")
            play.host_key_checking = checking
        for index, entry in enumerate(reader.str_list("vars_files")):
            entry_pos = node["vars_files"].pos_of(index) if isinstance(node["vars_files"], PosList) else reader.pos("vars_files")
            if is_template(entry):
                raise LoadError("templated vars_files paths are not supported", pos=entry_pos, field="vars_files", hint="write the path literally")
            path = entry if os.path.isabs(entry) else os.path.join(self.ctx.playbook_dir, entry)
            play.vars_files.append(path)
            play.vars_from_files.update(load_vars_file(path, entry_pos))
        self.ctx.static_vars = {**play.vars, **play.vars_from_files}  # what a templated import_role name may use
        self.ctx.imported_roles = []
        self.ctx.included_items = []
        roles = node.get("roles") or []
        if not isinstance(roles, list):
            raise reader.error("roles", "'roles' must be a list")
        seen_roles: set[tuple[str, str]] = set()
        for index, entry in enumerate(roles):
            entry_pos = roles.pos_of(index) if isinstance(roles, PosList) else reader.pos("roles")
            role = self.roles.play_role(entry, entry_pos, inline=False)
            # A role's dependencies run first, once per play for the same parameters (as in Ansible);
            # they inherit the tags and conditions of the role that needs them.
            for dep in role.dependencies:
                key = (dep.path, repr(sorted(dep.params.items(), key=str)))
                if key not in seen_roles:
                    seen_roles.add(key)
                    dep.tags = [*role.tags, *dep.tags]
                    dep.when = [*role.when, *dep.when]
                    play.roles.append(dep)
            seen_roles.add((role.path, repr(sorted(role.params.items(), key=str))))
            play.roles.append(role)
        for section in ("pre_tasks", "tasks", "post_tasks"):
            items = self.tasks.task_list(reader, section, role=None, base_dir=self.ctx.playbook_dir)
            if items is not None:
                setattr(play, section, items)
        play.handlers = only_tasks(self.tasks.task_list(reader, "handlers", role=None, base_dir=self.ctx.playbook_dir, handlers=True) or [])
        seen = {(None, h.name) for h in play.handlers}
        for role in play.roles + self.ctx.imported_roles:
            for handler in role.handlers:
                key = (handler.role.path if handler.role else None, handler.name)
                if key not in seen:
                    seen.add(key)
                    play.handlers.append(handler)
        self._check_notify(play)
        return play

    def _check_notify(self, play: Play) -> None:
        names = {h.name for h in play.handlers if h.name} | {topic for h in play.handlers for topic in h.listen}

        def walk(items: list[Item]) -> Iterable[Task]:
            for item in items:
                if isinstance(item, Task):
                    yield item
                elif isinstance(item, Block):
                    yield from walk(item.block + item.rescue + item.always)

        tasks = list(walk(play.pre_tasks + play.tasks + play.post_tasks + self.ctx.included_items))
        for role in play.roles + self.ctx.imported_roles:
            tasks.extend(walk(role.tasks))
        tasks.extend(play.handlers)
        for task in tasks:
            for name in task.notify:
                if name not in names and not is_template(name):
                    raise LoadError(f"notify names no handler: '{name}'", pos=task.pos, field="notify",
                                    hint=_nearest_hint(name, names, "handlers") if names else "this play has no handlers")


def _load_plays(loader: Plays, path: str, stack: list[str]) -> list[Play]:
    if path in stack:
        raise LoadError(f"playbook imports itself: {' -> '.join(stack + [path])}", pos=Pos(path))
    data = load_yaml(path)
    if not isinstance(data, list) or not data:
        raise LoadError("a playbook must be a non-empty list of plays", pos=_pos(data, Pos(path)), hint="start with '- hosts: all'")
    plays: list[Play] = []
    for index, node in enumerate(data):
        pos = data.pos_of(index) if isinstance(data, PosList) else Pos(path)
        if isinstance(node, dict) and any(canonical_name(str(k)) == "import_playbook" for k in node):
            key = next(k for k in node if canonical_name(str(k)) == "import_playbook")
            for other in node:
                if other not in (key, "name"):
                    raise LoadError(f"unknown import_playbook keyword '{other}'", pos=node.pos_of(other), field=str(other),
                                    hint="import_playbook takes only a file name (and 'name'); put vars and when in the imported plays")
            if not isinstance(node[key], str) or not node[key] or is_template(node[key]):
                raise LoadError(f"import_playbook needs a literal file name, got {node[key]!r}", pos=node.pos_of(key), field=str(key))
            target = os.path.join(os.path.dirname(path), str(node[key]))
            if not os.path.isfile(target):
                raise LoadError(f"imported playbook not found: {target}", pos=node.pos_of(key), field=str(key))
            plays.extend(_load_plays(loader, os.path.abspath(target), stack + [path]))
            continue
        plays.append(loader.load_play(node, pos))
    return plays
