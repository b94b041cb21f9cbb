"""include_tasks, import_tasks, include_role, import_role as tasks; `loop` of tasks and includes."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from glmops.errors import LoadError, Pos
from glmops.loop_keywords import WITH_SUPPORTED
from glmops.playbook.loadcontext import LoadContext
from glmops.playbook.model import Block, IncludeRole, IncludeTasks, Item, Role
from glmops.playbook.readers import COMMON_KEYWORDS, LOOP_CONTROL_KEYS, _key_pos, _Reader
from glmops.values import is_template, to_bool
from glmops.yamlpos import PosDict

if TYPE_CHECKING:
    from glmops.playbook.roles import Roles
    from glmops.playbook.tasks import Tasks


class IncludeLoader:
    """The loader's part for the include and import actions (task files through `tasks`, roles through `roles`)."""

    def __init__(self, ctx: LoadContext, tasks: Tasks, roles: Roles):
        self.ctx = ctx
        self.tasks = tasks
        self.roles = roles

    def include(self, node: PosDict, action: str, key: str, *, role: Role | None, base_dir: str) -> Item:
        reader = _Reader(node, action)
        static = action.startswith("import_")
        allowed = COMMON_KEYWORDS | ({"args"} if static else {"loop", "with_items", "loop_control", "args"})
        if action == "import_tasks":
            allowed = allowed | {"notify"}  # as Ansible: every imported task notifies
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
        allowed_args = {"name", "role", "tasks_from", "vars_from", "defaults_from", "handlers_from"} | (
            set() if static else {"apply", "public"})
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
        for arg in ("tasks_from", "vars_from", "defaults_from", "handlers_from"):
            value = args.get(arg, "main")
            if not isinstance(value, str) or is_template(value):
                raise LoadError(f"'{arg}' must be a literal file name, got {value!r}", pos=_key_pos(raw, arg, pos), field=f"{key}.{arg}")
            from_args[arg] = os.path.splitext(value)[0] if value.endswith((".yml", ".yaml")) else value
        if static:
            if is_template(name):
                name = self._static_role_name(name, node, pos, key)
            loaded = self.roles.load_role(name, pos, **{k: v for k, v in from_args.items() if k != "handlers_from"})
            block = Block(pos=node.pos, role=loaded)
            self.tasks.options(reader, block)
            block.block = loaded.tasks
            self.ctx.imported_roles.append(loaded)
            return block
        include_role = IncludeRole(pos=node.pos, role_name=name, tasks_from=from_args["tasks_from"], role=role,
                                   vars_from=from_args["vars_from"], defaults_from=from_args["defaults_from"])
        apply = args.get("apply") or {}
        if not isinstance(apply, dict):
            raise LoadError("include_role 'apply' must be a mapping of task keywords", pos=_key_pos(raw, "apply", pos), field=f"{key}.apply")
        for word in apply:
            if word not in COMMON_KEYWORDS - {"name"}:
                raise LoadError(f"'{word}' cannot be applied", pos=_key_pos(apply, word, pos), field=f"{key}.apply.{word}",
                                hint="apply takes task keywords: " + ", ".join(sorted(COMMON_KEYWORDS - {"name"})))
        include_role.apply = dict(apply)
        include_role.public = to_bool(args.get("public", False), strict=False)
        self.tasks.options(reader, include_role)
        read_loop(reader, node, include_role, include=True)
        if not is_template(name):
            self.ctx.imported_roles.append(self.roles.load_role(name, pos, tasks_from=from_args["tasks_from"], vars_from=from_args["vars_from"],
                                                      defaults_from=from_args["defaults_from"]))
        return include_role

    def _static_role_name(self, name: str, node: PosDict, pos: Pos, key: str) -> str:
        """A templated import_role name, rendered with the variables known when the playbook loads
        (play vars, vars_files, the import's own vars), as Ansible does."""
        from glmops.errors import TemplateError
        from glmops.playbook.templating import Templar

        variables = {**self.ctx.static_vars, **(node.get("vars") or {})}
        try:
            rendered = Templar().render(name, variables, pos=pos, field=key)
        except TemplateError as exc:
            raise LoadError(f"import_role name {name!r} cannot be rendered when the playbook loads: {exc.message}", pos=pos, field=key,
                            hint="an import_role name may use play vars and vars_files only; use include_role for host variables") from None
        if not isinstance(rendered, str) or not rendered:
            raise LoadError(f"import_role name {name!r} rendered to {rendered!r}", pos=pos, field=key)
        return rendered

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
            self.tasks.options(reader, block)
            block.notify = reader.str_list("notify")
            block.block = self.tasks.load_tasks_file(path, role=role, pos=pos)
            return block
        include = IncludeTasks(pos=node.pos, file=file, base_dir=tasks_dir, role=role)
        self.tasks.options(reader, include)
        read_loop(reader, node, include, include=True)
        if not is_template(file):
            # validate now (a mistake is reported before anything runs); loaded again when reached
            self.ctx.included_items.extend(self.tasks.load_tasks_file(path, role=role, pos=pos))
        return include

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


def read_loop(reader: _Reader, node: PosDict, target: Any, *, include: bool = False) -> None:
    """`loop`/`with_items` and `loop_control` of a task or (`include`) of an include, set on target."""
    if "loop" in node and "with_items" in node:
        raise reader.error("with_items", "use either 'loop' or 'with_items', not both")
    loop_key = "loop" if "loop" in node else ("with_items" if "with_items" in node else None)
    with_keys = [] if include else [k for k in node if str(k).startswith("with_") and k != "with_items"]
    if (with_keys and loop_key) or len(with_keys) > 1:
        raise reader.error(str(with_keys[-1]), "a task has one loop: 'loop' or one 'with_*'")
    if loop_key:
        target.loop = _loop_value(reader, node, loop_key)
    elif with_keys:
        kind = str(with_keys[0])[5:]
        if kind not in WITH_SUPPORTED:
            raise reader.error(str(with_keys[0]), f"'{with_keys[0]}' is not supported by glmops",
                               hint="use loop: with a filter or lookup; supported: " + ", ".join("with_" + k for k in WITH_SUPPORTED))
        target.loop, target.loop_with = node[with_keys[0]], kind
    control = reader.mapping("loop_control")
    bad = [key for key in control if key not in ({"loop_var"} if include else LOOP_CONTROL_KEYS)]
    if bad and include:
        raise LoadError(f"loop_control '{bad[0]}' is not supported on includes", pos=_key_pos(control, bad[0], node.pos),
                        field=f"loop_control.{bad[0]}", hint="includes take loop_control: {loop_var: NAME}")
    if bad:
        raise LoadError(f"unknown loop_control key '{bad[0]}'", pos=_key_pos(control, bad[0], node.pos),
                        field="loop_control", hint="allowed: " + ", ".join(sorted(LOOP_CONTROL_KEYS)))
    if control.get("loop_var"):
        target.loop_var = str(control["loop_var"])
    if not include:
        target.index_var = control.get("index_var")
        target.loop_label = control.get("label")
        extended = control.get("extended", False)
        target.loop_extended = True if is_template(extended) else to_bool(extended, strict=False)
        target.loop_extended_allitems = to_bool(control.get("extended_allitems", True), strict=False)
        target.loop_pause = control.get("pause")
        if control.get("break_when") is not None:
            breaks = control["break_when"]
            target.break_when = list(breaks) if isinstance(breaks, list) else [breaks]
