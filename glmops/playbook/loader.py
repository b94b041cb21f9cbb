"""Load and validate playbooks, task files, roles and vars files into the model.

Everything that can be checked before a run is checked here, so nothing runs on any host unless the
whole playbook loaded: keywords, module names, module arguments (as far as they are literal),
roles, vars files, included task files with literal names, handler names used by `notify`.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from glmops.errors import ArgumentError, LoadError, Pos
from glmops.modules import canonical_name, get_module, is_module, module_names, nearest_modules
from glmops.modules.base import validate_args
from glmops.playbook.model import Block, IncludeRole, IncludeTasks, Item, Play, Playbook, Role, Task
from glmops.playbook.yamlpos import PosDict, PosList, load_yaml
from glmops.values import is_bool_like, is_template, to_bool

PLAY_KEYWORDS = {
    "name", "hosts", "vars", "vars_files", "roles", "pre_tasks", "tasks", "post_tasks", "handlers",
    "gather_facts", "become", "become_user", "environment", "connection", "tags", "host_key_checking",
}
COMMON_KEYWORDS = {"name", "when", "tags", "become", "become_user", "environment", "vars", "ignore_errors", "no_log", "check_mode"}
TASK_KEYWORDS = COMMON_KEYWORDS | {
    "register", "loop", "with_items", "loop_control", "notify", "listen", "changed_when", "failed_when",
    "retries", "until", "delay", "args", "async", "poll",
}
BLOCK_KEYWORDS = COMMON_KEYWORDS | {"block", "rescue", "always"}
LOOP_CONTROL_KEYS = {"loop_var", "index_var", "label"}
INCLUDE_ACTIONS = {"include_tasks", "import_tasks", "include_role", "import_role"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RAW_TOKEN = re.compile(r"""(?:\{\{.*?\}\}|\{%.*?%\}|[^\s"'{]+|\{|"(?:\\.|[^"\\])*"|'[^']*')+""", re.S)
_OPTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)

PROJECT_ROLES = Path(__file__).resolve().parent.parent.parent / "roles"


def _pos(node: Any, default: Pos) -> Pos:
    return getattr(node, "pos", None) or default


def _key_pos(node: Any, key: Any, default: Pos) -> Pos:
    return node.pos_of(key) if isinstance(node, PosDict) else _pos(node, default)


def _nearest_hint(word: str, choices: Iterable[str], what: str) -> str:
    near = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"did you mean: {', '.join(near)}?" if near else f"valid {what}: " + ", ".join(sorted(choices))


# -- typed keyword readers ------------------------------------------------------------------------
class _Reader:
    """Reads the keywords of one mapping, with errors that point at the keyword's line."""

    def __init__(self, node: PosDict, what: str):
        self.node = node
        self.what = what

    def pos(self, key: str) -> Pos:
        return self.node.pos_of(key)

    def error(self, key: str, message: str, hint: str | None = None) -> LoadError:
        return LoadError(message, pos=self.pos(key), field=key, hint=hint)

    def str(self, key: str, default: str | None = None) -> str | None:
        value = self.node.get(key, default)
        if value is None:
            return default
        if isinstance(value, (dict, list)):
            raise self.error(key, f"expected a string, got a {type(value).__name__}")
        return str(value)

    def bool_or_template(self, key: str) -> Any:
        value = self.node.get(key)
        if value is None or isinstance(value, bool) or is_template(value):
            return value
        if is_bool_like(value):
            return to_bool(value)
        raise self.error(key, f"expected a boolean (true/false), got {value!r}")

    def bool(self, key: str, default: bool | None = None) -> bool | None:
        value = self.bool_or_template(key)
        if is_template(value):
            raise self.error(key, "a template is not allowed here; write true or false")
        return default if value is None else value

    def str_list(self, key: str, *, comma: bool = False) -> list[str]:
        value = self.node.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()] if comma else [value]
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            return [str(v) for v in value]
        raise self.error(key, f"expected a string or a list of strings, got {value!r}")

    def conditions(self, key: str) -> list[Any] | None:
        value = self.node.get(key)
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, (str, bool, int)):
                raise self.error(key, f"expected a condition (a Jinja expression or a boolean), got {item!r}",
                                 hint="write conditions as bare expressions, e.g. when: result.rc == 0")
        return list(items)

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.node.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping (key: value), got {type(value).__name__}")
        return value

    def environment(self) -> dict[str, Any] | str:
        """`environment:` is a mapping, or one template that gives a mapping (`"{{ proxy_env }}"`)."""
        value = self.node.get("environment")
        if isinstance(value, str) and "{{" in value:
            return value
        return self.mapping("environment")

    def variables(self, key: str) -> dict[str, Any]:
        """A `vars:` mapping: its keys must be valid variable names."""
        value = self.mapping(key)
        for name in value:
            if not isinstance(name, str) or not _IDENTIFIER.match(name):
                raise LoadError(f"invalid variable name {name!r}", pos=_key_pos(value, name, self.pos(key)), field=f"{key}.{name}",
                                hint="variable names are letters, digits and underscores, not starting with a digit")
        return value

    def int_or_template(self, key: str) -> Any:
        value = self.node.get(key)
        if value is None or is_template(value) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return value
        if isinstance(value, str):
            try:
                return float(value) if "." in value else int(value)
            except ValueError:
                pass
        raise self.error(key, f"expected a number, got {value!r}")

    def unknown(self, allowed: set[str], extra_allowed: Iterable[str] = ()) -> None:
        allowed_all = set(allowed) | set(extra_allowed)
        for key in self.node:
            if key not in allowed_all:
                raise self.error(str(key), f"unknown {self.what} keyword '{key}'", hint=_nearest_hint(str(key), allowed, "keywords"))


def load_vars_file(path: str, pos: Pos | None = None) -> dict[str, Any]:
    """Load a YAML/JSON file of variables (vars_files, -e @file, group_vars)."""
    if not os.path.isfile(path):
        raise LoadError(f"vars file not found: {path}", pos=pos or Pos(path), hint="check the path; relative paths are taken from the playbook's directory")
    data = load_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LoadError("a vars file must be a mapping of variable names to values", pos=_pos(data, Pos(path)))
    for key in data:
        if not isinstance(key, str) or not _IDENTIFIER.match(key):
            raise LoadError(f"invalid variable name {key!r}", pos=_key_pos(data, key, Pos(path)),
                            hint="variable names are letters, digits and underscores, not starting with a digit")
    return data


class Loader:
    """Loads one playbook; keeps the state needed for roles, includes and cycle detection."""

    def __init__(self, playbook_dir: str, extra_roles_paths: Iterable[str] = ()):
        self.playbook_dir = playbook_dir
        self.extra_roles_paths = list(extra_roles_paths)
        self._stack: list[str] = []
        self._role_stack: list[str] = []
        self.imported_roles: list[Role] = []  # roles of import_role/include_role (their handlers join the play's)
        self.included_items: list[Item] = []  # tasks of literal include_tasks files, loaded to validate them

    # -- roles ----------------------------------------------------------------------------
    def role_dirs(self) -> list[str]:
        dirs = [os.path.join(self.playbook_dir, "roles"), os.path.join(os.getcwd(), "roles"), *self.extra_roles_paths]
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
            candidates.insert(0, os.path.join(self.playbook_dir, name))
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
        if path in self._role_stack:
            chain = " -> ".join(os.path.basename(p) for p in self._role_stack + [path])
            raise LoadError(f"role dependency loop: {chain}", pos=pos, field="dependencies", hint="remove one of the dependencies in meta/main.yml")
        role = Role(name=os.path.basename(path.rstrip("/")), path=path, pos=pos, params=dict(params or {}))
        for sub, attr, file_name in (("defaults", "defaults", defaults_from), ("vars", "vars", vars_from)):
            file = self._role_file(path, sub, file_name)
            if file:
                setattr(role, attr, load_vars_file(file))
            elif file_name != "main":
                raise LoadError(f"role '{name}' has no {sub} file '{file_name}'", pos=pos, field=f"{sub}_from",
                                hint=f"expected {os.path.join(path, sub, file_name + '.yml')}")
        self._role_stack.append(path)
        try:
            role.dependencies = self._role_dependencies(path)
            tasks_file = self._role_file(path, "tasks", tasks_from)
            if tasks_file:
                role.tasks = self.load_tasks_file(tasks_file, role=role, pos=pos)
            elif tasks_from != "main":
                raise LoadError(f"role '{name}' has no tasks file '{tasks_from}'", pos=pos, field="tasks_from",
                                hint=f"expected {os.path.join(path, 'tasks', tasks_from + '.yml')}")
            handlers_file = self._role_file(path, "handlers")
            if handlers_file:
                role.handlers = self.load_handlers(handlers_file, role=role)
        finally:
            self._role_stack.pop()
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
            out.append(self._play_role(entry, entry_pos, field="dependencies"))
        return out

    @staticmethod
    def _dependency_blocks(deps: list[Role]) -> list[Item]:
        blocks: list[Item] = []
        for dep in deps:
            blocks.append(Block(pos=dep.pos, block=list(dep.tasks), role=dep, when=list(dep.when), tags=list(dep.tags)))
        return blocks

    # -- task files -------------------------------------------------------------------------
    def load_tasks_file(self, path: str, *, role: Role | None, pos: Pos) -> list[Item]:
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise LoadError(f"task file not found: {path}", pos=pos)
        if path in self._stack:
            raise LoadError(f"task file includes itself: {' -> '.join(self._stack + [path])}", pos=pos)
        self._stack.append(path)
        try:
            data = load_yaml(path)
            if data is None:
                return []
            if not isinstance(data, list):
                raise LoadError("a task file must be a list of tasks", pos=_pos(data, Pos(path)), hint="start each task with '- name: ...'")
            return self.load_items(data, role=role, base_dir=os.path.dirname(path))
        finally:
            self._stack.pop()

    def load_handlers(self, path: str, *, role: Role | None) -> list[Task]:
        data = load_yaml(path)
        if data is None:
            return []
        if not isinstance(data, list):
            raise LoadError("a handlers file must be a list of tasks", pos=_pos(data, Pos(path)))
        return self._handlers(data, role=role, base_dir=os.path.dirname(path))

    def _handlers(self, data: list[Any], *, role: Role | None, base_dir: str) -> list[Task]:
        handlers: list[Task] = []
        for item in self.load_items(data, role=role, base_dir=base_dir, handlers=True):
            if not isinstance(item, Task):
                raise LoadError("handlers must be plain tasks (no block or include)", pos=item.pos)
            handlers.append(item)
        return handlers

    def load_items(self, data: list[Any], *, role: Role | None, base_dir: str, handlers: bool = False) -> list[Item]:
        items: list[Item] = []
        for index, node in enumerate(data):
            pos = data.pos_of(index) if isinstance(data, PosList) else Pos(base_dir)
            if not isinstance(node, PosDict):
                raise LoadError(f"a task must be a mapping, got {node!r}", pos=pos, hint="write '- name: ...' followed by a module, e.g. 'command: echo hi'")
            items.append(self.load_item(node, role=role, base_dir=base_dir, handlers=handlers))
        return items

    def _options(self, reader: _Reader, target: Any) -> None:
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

    def load_item(self, node: PosDict, *, role: Role | None, base_dir: str, handlers: bool = False) -> Item:
        if "block" in node:
            reader = _Reader(node, "block")
            reader.unknown(BLOCK_KEYWORDS)
            block = Block(pos=node.pos, role=role)
            self._options(reader, block)
            for part in ("block", "rescue", "always"):
                value = node.get(part)
                if value is None:
                    continue
                if not isinstance(value, list):
                    raise reader.error(part, f"'{part}' must be a list of tasks")
                setattr(block, part, self.load_items(value, role=role, base_dir=base_dir, handlers=handlers))
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
            return self._include(node, action, str(known[0]), role=role, base_dir=base_dir)
        return self._task(node, action, str(known[0]), role=role, handlers=handlers)

    def _task(self, node: PosDict, module_name: str, key: str, *, role: Role | None, handlers: bool) -> Task:
        reader = _Reader(node, "task")
        if "loop" in node and "with_items" in node:
            raise reader.error("with_items", "use either 'loop' or 'with_items', not both")
        if "listen" in node and not handlers:
            raise reader.error("listen", "'listen' is for handlers only")
        task = Task(pos=node.pos, module=module_name, role=role)
        self._options(reader, task)
        task.args = self._module_args(node, key, module_name)
        task.register = reader.str("register")
        if task.register is not None and not _IDENTIFIER.match(task.register):
            raise reader.error("register", f"'{task.register}' is not a valid variable name")
        loop_key = "loop" if "loop" in node else ("with_items" if "with_items" in node else None)
        if loop_key:
            task.loop = _loop_value(reader, node, loop_key)
        control = reader.mapping("loop_control")
        if control:
            bad = set(control) - LOOP_CONTROL_KEYS
            if bad:
                raise LoadError(f"unknown loop_control key '{sorted(bad)[0]}'", pos=_key_pos(control, sorted(bad)[0], node.pos),
                                field="loop_control", hint="allowed: " + ", ".join(sorted(LOOP_CONTROL_KEYS)))
            task.loop_var = str(control.get("loop_var", "item"))
            task.index_var = control.get("index_var")
            task.loop_label = control.get("label")
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

    def _module_args(self, node: PosDict, key: str, module_name: str) -> dict[str, Any]:
        module = get_module(module_name)
        raw = node[key]
        pos = node.pos_of(key)
        if raw is None:
            args: dict[str, Any] = {}
        elif isinstance(raw, dict):
            args = raw
        elif isinstance(raw, str):
            args = self._parse_short_form(raw, module, pos)
        elif isinstance(raw, list) and module.free_form:
            args = {"argv": raw} if "argv" in module.args else {module.free_form: raw}
        else:
            raise LoadError(f"arguments of '{key}' must be a mapping or 'key=value' text, got {type(raw).__name__}", pos=pos, field=key)
        extra = node.get("args")
        if extra is not None:
            if not isinstance(extra, dict):
                raise LoadError("'args' must be a mapping", pos=node.pos_of("args"), field="args")
            args = {**extra, **args}
        try:
            return validate_args(module, args, final=False, pos=pos)
        except ArgumentError as exc:
            field_pos = pos
            for source, source_key in ((raw, key), (extra, "args")):
                if isinstance(source, PosDict) and exc.field in source:
                    field_pos, key = source.pos_of(exc.field), source_key
                    break
            raise LoadError(exc.message, pos=field_pos, field=f"{key}.{exc.field}" if exc.field else key, hint=exc.hint) from None

    @staticmethod
    def _parse_short_form(text: str, module: Any, pos: Pos) -> dict[str, Any]:
        """`k=v k2="v 2"` for ordinary modules; free text plus known k=v options for command/shell/raw."""
        if module.free_form:
            args: dict[str, Any] = {}
            options = set(module.args) - {module.free_form}
            for match in _RAW_TOKEN.finditer(text):
                option = _OPTION.match(match.group(0))
                if option and option.group(1) in options:
                    args[option.group(1)] = _unquote(option.group(2))
            args[module.free_form] = _remove_options(text, args)
            return args
        args = {}
        for match in _RAW_TOKEN.finditer(text):
            option = _OPTION.match(match.group(0))
            if not option:
                raise LoadError(f"expected key=value, got {match.group(0)!r}", pos=pos, hint=f"module '{module.name}' takes: " + ", ".join(sorted(module.args)))
            args[option.group(1)] = _unquote(option.group(2))
        return args

    def _include(self, node: PosDict, action: str, key: str, *, role: Role | None, base_dir: str) -> Item:
        reader = _Reader(node, action)
        static = action.startswith("import_")
        allowed = COMMON_KEYWORDS | ({"args"} if static else {"loop", "with_items", "loop_control", "args"})
        for loop_key in ("loop", "with_items", "loop_control"):
            if static and loop_key in node:
                raise reader.error(loop_key, f"{action} cannot loop: it is expanded when the playbook loads",
                                   hint=f"use {action.replace('import_', 'include_')} to run a file or role once per item")
        reader.unknown(allowed, extra_allowed=[key])
        raw = node[key]
        pos = node.pos_of(key)
        if isinstance(raw, dict):
            args = dict(raw)
        elif isinstance(raw, str):
            args = {"file": raw} if action.endswith("_tasks") else {"name": raw}
        else:
            raise LoadError(f"{action} needs a {'file' if action.endswith('_tasks') else 'role'} name, got {raw!r}", pos=pos, field=key,
                            hint=f"{key}: FILE.yml" if action.endswith("_tasks") else f"{key}: {{name: ROLE}}")
        extra = node.get("args")
        if extra is not None:
            if not isinstance(extra, dict):
                raise reader.error("args", "'args' must be a mapping")
            args = {**extra, **args}
        if action in ("include_tasks", "import_tasks"):
            return self._include_tasks(reader, node, action, key, args, pos, role=role, base_dir=base_dir)
        allowed_args = {"name", "role", "tasks_from"} | ({"vars_from", "defaults_from"} if static else set())
        for arg in args:
            if arg not in allowed_args:
                hint = "allowed: " + ", ".join(sorted(allowed_args - {"role"}))
                if arg in ("vars_from", "defaults_from"):
                    hint = f"{arg} is supported by import_role; with include_role, set the variables with 'vars:'"
                elif arg in ("apply", "public", "handlers_from", "allow_duplicates", "rolespec_validate"):
                    hint = f"'{arg}' is not supported by glmops; " + hint
                raise LoadError(f"unknown {action} argument '{arg}'", pos=_key_pos(raw, arg, pos), field=f"{key}.{arg}", hint=hint)
        name = args.get("name") or args.get("role")
        if not isinstance(name, str) or not name:
            raise LoadError(f"{action} needs a role name", pos=pos, field=key, hint=f"{key}: {{name: ROLE}}")
        from_args = {}
        for arg in ("tasks_from", "vars_from", "defaults_from"):
            value = args.get(arg, "main")
            if not isinstance(value, str) or is_template(value):
                raise LoadError(f"'{arg}' must be a literal file name, got {value!r}", pos=_key_pos(raw, arg, pos), field=f"{key}.{arg}")
            from_args[arg] = os.path.splitext(value)[0] if value.endswith((".yml", ".yaml")) else value
        if static:
            if is_template(name):
                raise LoadError("import_role needs a literal role name", pos=pos, field=key, hint="use include_role for a templated name")
            loaded = self.load_role(name, pos, **from_args)
            block = Block(pos=node.pos, role=loaded)
            self._options(reader, block)
            block.block = loaded.tasks
            self.imported_roles.append(loaded)
            return block
        include_role = IncludeRole(pos=node.pos, role_name=name, tasks_from=from_args["tasks_from"], role=role)
        self._options(reader, include_role)
        self._include_loop(reader, node, include_role)
        if not is_template(name):
            self.imported_roles.append(self.load_role(name, pos, tasks_from=from_args["tasks_from"]))
        return include_role

    def _include_tasks(self, reader: _Reader, node: PosDict, action: str, key: str, args: dict[str, Any], pos: Pos, *,
                       role: Role | None, base_dir: str) -> Item:
        raw = node[key]
        for arg in args:
            if arg not in ("file", "_raw_params"):
                hint = "allowed: file"
                if arg == "apply":
                    hint = "'apply' is not supported by glmops: put the keywords on the include itself, or use a block"
                raise LoadError(f"unknown {action} argument '{arg}'", pos=_key_pos(raw, arg, pos), field=f"{key}.{arg}", hint=hint)
        file = args.get("file") or args.get("_raw_params")
        if not isinstance(file, str) or not file:
            raise LoadError(f"{action} needs a file name", pos=pos, field=key, hint=f"{key}: FILE.yml")
        # In a role, task files are relative to the role's tasks/; elsewhere to the including file.
        tasks_dir = os.path.join(role.path, "tasks") if role else base_dir
        path = file if os.path.isabs(file) else os.path.join(tasks_dir, file)
        if action == "import_tasks":
            if is_template(file):
                raise LoadError("import_tasks needs a literal file name", pos=pos, field=key, hint="use include_tasks for a templated name")
            block = Block(pos=node.pos, role=role)
            self._options(reader, block)
            block.block = self.load_tasks_file(path, role=role, pos=pos)
            return block
        include = IncludeTasks(pos=node.pos, file=file, base_dir=tasks_dir, role=role)
        self._options(reader, include)
        self._include_loop(reader, node, include)
        if not is_template(file):
            # validate now (a mistake is reported before anything runs); loaded again when reached
            self.included_items.extend(self.load_tasks_file(path, role=role, pos=pos))
        return include

    @staticmethod
    def _include_loop(reader: _Reader, node: PosDict, target: Any) -> None:
        if "loop" in node and "with_items" in node:
            raise reader.error("with_items", "use either 'loop' or 'with_items', not both")
        loop_key = "loop" if "loop" in node else ("with_items" if "with_items" in node else None)
        if loop_key:
            target.loop = _loop_value(reader, node, loop_key)
        control = reader.mapping("loop_control")
        for bad in control:
            if bad != "loop_var":
                raise LoadError(f"loop_control '{bad}' is not supported on includes", pos=_key_pos(control, bad, node.pos),
                                field=f"loop_control.{bad}", hint="includes take loop_control: {loop_var: NAME}")
        if control.get("loop_var"):
            target.loop_var = str(control["loop_var"])

    # -- plays ------------------------------------------------------------------------------
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
        play = Play(pos=node.pos, hosts=hosts.strip(), base_dir=self.playbook_dir)
        play.name = reader.str("name")
        play.vars = reader.variables("vars")
        play.gather_facts = bool(reader.bool("gather_facts", True))
        play.become = bool(reader.bool("become", False))
        play.become_user = reader.str("become_user", "root") or "root"
        play.environment = reader.environment()
        play.tags = reader.str_list("tags", comma=True)
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
            path = entry if os.path.isabs(entry) else os.path.join(self.playbook_dir, entry)
            play.vars_files.append(path)
            play.vars_from_files.update(load_vars_file(path, entry_pos))
        self.imported_roles = []
        self.included_items = []
        roles = node.get("roles") or []
        if not isinstance(roles, list):
            raise reader.error("roles", "'roles' must be a list")
        seen_roles: set[tuple[str, str]] = set()
        for index, entry in enumerate(roles):
            entry_pos = roles.pos_of(index) if isinstance(roles, PosList) else reader.pos("roles")
            role = self._play_role(entry, entry_pos, inline=False)
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
            value = node.get(section)
            if value is None:
                continue
            if not isinstance(value, list):
                raise reader.error(section, f"'{section}' must be a list of tasks")
            setattr(play, section, self.load_items(value, role=None, base_dir=self.playbook_dir))
        handlers = node.get("handlers") or []
        if not isinstance(handlers, list):
            raise reader.error("handlers", "'handlers' must be a list of tasks")
        play.handlers = self._handlers(handlers, role=None, base_dir=self.playbook_dir)
        seen = {(None, h.name) for h in play.handlers}
        for role in play.roles + self.imported_roles:
            for handler in role.handlers:
                key = (handler.role.path if handler.role else None, handler.name)
                if key not in seen:
                    seen.add(key)
                    play.handlers.append(handler)
        self._check_notify(play)
        return play

    def _play_role(self, entry: Any, pos: Pos, *, field: str = "roles", inline: bool = True) -> Role:
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

    def _check_notify(self, play: Play) -> None:
        names = {h.name for h in play.handlers if h.name} | {topic for h in play.handlers for topic in h.listen}

        def walk(items: list[Item]) -> Iterable[Task]:
            for item in items:
                if isinstance(item, Task):
                    yield item
                elif isinstance(item, Block):
                    yield from walk(item.block + item.rescue + item.always)

        tasks = list(walk(play.pre_tasks + play.tasks + play.post_tasks + self.included_items))
        for role in play.roles + self.imported_roles:
            tasks.extend(walk(role.tasks))
        tasks.extend(play.handlers)
        for task in tasks:
            for name in task.notify:
                if name not in names and not is_template(name):
                    raise LoadError(f"notify names no handler: '{name}'", pos=task.pos, field="notify",
                                    hint=_nearest_hint(name, names, "handlers") if names else "this play has no handlers")


def _loop_value(reader: _Reader, node: PosDict, key: str) -> Any:
    """`loop` as written; `with_items` flattened one level, as Ansible does (a template gets `| flatten(1)`)."""
    loop = node[key]
    if not isinstance(loop, list) and not is_template(loop):
        raise reader.error(key, f"'{key}' needs a list or a template that gives one, got {loop!r}",
                           hint=f'e.g. {key}: [a, b] or {key}: "{{{{ packages }}}}"')
    if key != "with_items":
        return loop
    if isinstance(loop, list):
        flat: list[Any] = []
        for item in loop:
            flat.extend(item) if isinstance(item, list) else flat.append(item)
        return flat
    match = re.match(r"^\s*\{\{(.*)\}\}\s*$", loop, re.S)
    if match and "}}" not in match.group(1) and "{{" not in match.group(1):
        return "{{ (%s) | flatten(levels=1) }}" % match.group(1).strip()
    return loop


def _unquote(value: str) -> str:
    """The value of a `key=value` token: surrounding quotes removed, as a shell would."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        try:
            return shlex.split(value)[0]
        except ValueError:
            return value[1:-1]
    return value


def _remove_options(text: str, options: dict[str, Any]) -> str:
    """The free-form text with the recognised `key=value` option tokens removed."""
    pieces: list[str] = []
    last = 0
    for match in _RAW_TOKEN.finditer(text):
        option = _OPTION.match(match.group(0))
        if option and option.group(1) in options:
            pieces.append(text[last : match.start()])
            last = match.end()
    pieces.append(text[last:])
    return re.sub(r"[ \t]{2,}", " ", "".join(pieces)).strip() if len(pieces) > 1 else text.strip()


def load_playbook(path: str, *, extra_roles_paths: Iterable[str] = ()) -> Playbook:
    """Load and validate a playbook file (and everything it imports); raise LoadError if anything is wrong."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise LoadError("playbook not found", pos=Pos(path), hint="check the path given to glmops run")
    loader = Loader(os.path.dirname(path), extra_roles_paths)
    return Playbook(path=path, plays=_load_plays(loader, path, []))


def _load_plays(loader: Loader, path: str, stack: list[str]) -> list[Play]:
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


def load_role(name: str, *, base_dir: str, pos: Pos, params: dict[str, Any] | None = None, tasks_from: str = "main",
              extra_roles_paths: Iterable[str] = ()) -> Role:
    """Load a role by name, as include_role does at run time (its dependencies' tasks lead its tasks)."""
    loader = Loader(base_dir, extra_roles_paths)
    return loader.load_role(name, pos, params=params, tasks_from=tasks_from)


def load_tasks_file(path: str, *, role: Role | None, pos: Pos, base_dir: str | None = None) -> list[Item]:
    """Load a task file, as include_tasks does at run time."""
    loader = Loader(base_dir or os.path.dirname(os.path.abspath(path)))
    return loader.load_tasks_file(path, role=role, pos=pos)
