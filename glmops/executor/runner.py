"""Run a loaded playbook against an inventory: Ansible's linear strategy.

Each task runs on every active host at once (a thread pool of --forks workers), then the next task
starts. A host whose task fails leaves the play; an unreachable host leaves the run. The runner
emits events (dicts) and never prints: renderers do, after redaction.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from glmops.connection.base import Become, Connection
from glmops.errors import EXIT_HOST_FAILED, EXIT_HOST_UNREACHABLE, EXIT_INTERRUPTED, EXIT_OK, ArgumentError, ConnectionFailure, GlmopsError, LoadError, Pos, TemplateError
from glmops.executor.tags import TagFilter
from glmops.inventory import Inventory
from glmops.modules import get_module
from glmops.modules.base import ModuleContext, ModuleResult, validate_args
from glmops.output.redact import HIDDEN, Redactor, hide_result, is_secret_name
from glmops.playbook.model import Block, IncludeRole, IncludeTasks, Item, Play, Playbook, Role, Task
from glmops.playbook.templating import Templar
from glmops.playbook.variables import HostVars, merge_layers
from glmops.values import to_bool

Event = dict[str, Any]
STATS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
FACT_PREFIX = "ansible_"  # facts are the ansible_* variables setup defines
INTERRUPT_WAIT = 15.0  # seconds Ctrl-C waits for the hosts to confirm their commands were stopped


@dataclass
class RunOptions:
    check: bool = False
    diff: bool = False
    forks: int = 10
    limit: str | None = None
    tags: list[str] = field(default_factory=list)
    skip_tags: list[str] = field(default_factory=list)
    extra_vars: dict[str, Any] = field(default_factory=dict)
    start_at_task: str | None = None
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
        )


@dataclass
class HostState:
    name: str
    conn: Connection | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # registered results, set_fact, gathered facts
    facts_gathered: bool = False
    failed: bool = False  # left the play
    unreachable: bool = False  # left the run
    notified: set[str] = field(default_factory=set)
    stats: Counter = field(default_factory=Counter)

    @property
    def active(self) -> bool:
        return not (self.failed or self.unreachable)


class PlaybookRunner:
    """Runs every play of a playbook; `run()` returns the exit code."""

    def __init__(self, playbook: Playbook, inventory: Inventory, options: RunOptions, emit: Callable[[Event], None]):
        self.playbook = playbook
        self.inventory = inventory
        self.options = options
        self._emit = emit
        self._emit_lock = threading.Lock()
        self.redactor = Redactor()
        self.templar = Templar(on_secret=self.redactor.add)
        self.tag_filter = TagFilter(options.tags, options.skip_tags)
        self.hosts: dict[str, HostState] = {}
        self._connect_lock = threading.Lock()
        self._started = options.start_at_task is None
        self._inventory_vars: dict[str, dict[str, Any]] = {}
        self._groups = {name: inventory.group_hosts(name) for name in inventory.groups}
        self.play: Play | None = None
        self._stop = threading.Event()  # set by interrupt(): no new task starts
        self._current: tuple[str, list[str]] | None = None  # the running task and its hosts

    # -- events -----------------------------------------------------------------------------
    def emit(self, kind: str, **data: Any) -> None:
        event = self.redactor.scrub({"event": kind, **data})
        with self._emit_lock:
            self._emit(event)

    # -- interruption (Ctrl-C) ----------------------------------------------------------------
    @property
    def interrupted(self) -> bool:
        return self._stop.is_set()

    def stopping(self) -> str:
        """What an interruption stops now, in words: the running task and its hosts."""
        current = self._current
        if current is None:
            return "nothing is running"
        task, hosts = current
        return f"task '{task}' on {', '.join(hosts)}"

    def interrupt(self) -> None:
        """Stop the run: no new task starts, and the commands running on every host are stopped
        (their process groups). Safe to call from any thread; returns when every host was told."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.emit("interrupted", stopping=self.stopping())

        def stop(conn: Connection) -> None:
            try:
                conn.interrupt()
            except Exception:  # noqa: BLE001 - stopping one host must not keep the others running
                pass

        # All hosts at once: a host that does not answer must not delay stopping the others.
        workers = [threading.Thread(target=stop, args=(s.conn,), daemon=True, name=f"glmops-stop-{s.name}")
                   for s in list(self.hosts.values()) if s.conn is not None]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + INTERRUPT_WAIT
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    # -- planning ---------------------------------------------------------------------------
    def plan(self) -> list[tuple[Play, list[str]]]:
        """Match every play's host pattern before anything runs; an empty match is a load error."""
        limit = set(self.inventory.select(self.options.limit)) if self.options.limit else None
        if limit is not None and not limit:
            raise LoadError(f"--limit '{self.options.limit}' matches no host", hint="known hosts: " + ", ".join(self.inventory.hosts) or "none")
        plan = []
        for play in self.playbook.plays:
            hosts = self.inventory.select(self.play_pattern(play))
            if limit is not None:
                hosts = [h for h in hosts if h in limit]
            if not hosts:
                known = [g for g in self.inventory.groups if g not in ("all", "ungrouped")] + list(self.inventory.hosts)
                raise LoadError(
                    f"play '{play.display_name}': host pattern '{self.play_pattern(play)}' matches no host"
                    + (f" within --limit '{self.options.limit}'" if limit is not None else ""),
                    pos=play.pos,
                    field="hosts",
                    hint="groups and hosts in the inventory: " + (", ".join(known) if known else "none (give one with -i)"),
                )
            plan.append((play, hosts))
        return plan

    def play_pattern(self, play: Play) -> Any:
        """The play's host pattern; a template (`hosts: "{{ target | default('autodl') }}"`) is rendered
        with the extra vars only, as in Ansible (inventory and play vars are per host)."""
        if not Templar.is_template(play.hosts):
            return play.hosts
        return self.templar.render(play.hosts, dict(self.options.extra_vars), pos=play.pos, field="hosts")

    def run(self) -> int:
        plan = self.plan()
        self.redactor.add_from_vars(self.options.extra_vars)
        for name in self.inventory.hosts:
            self._inventory_vars[name] = self.inventory.host_vars(name)
            self.redactor.add_from_vars(self._inventory_vars[name])
            for var in ("ansible_password", "ansible_ssh_pass", "ansible_become_password", "ansible_become_pass"):
                if self._inventory_vars[name].get(var):
                    self.redactor.add(self._inventory_vars[name][var])
        for secret in (self.options.password, self.options.become_password):
            if secret:
                self.redactor.add(secret)
        self.emit("playbook_start", playbook=self.playbook.path, check=self.options.check)
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=max(1, self.options.forks)) as pool:
                self.pool = pool
                for play, names in plan:
                    if self.interrupted:
                        break
                    self.run_play(play, names)
        finally:
            for state in self.hosts.values():
                if state.conn is not None:
                    try:
                        state.conn.close()
                    except Exception:  # noqa: BLE001 - closing must not mask the result
                        pass
        stats = {name: {key: state.stats.get(key, 0) for key in STATS} for name, state in self.hosts.items()}
        self.emit("recap", stats=stats, duration=round(time.monotonic() - started, 3),
                  **({"interrupted": True} if self.interrupted else {}))
        if self.interrupted:
            return EXIT_INTERRUPTED
        if any(s.unreachable for s in self.hosts.values()):
            return EXIT_HOST_UNREACHABLE
        if any(s.failed for s in self.hosts.values()):
            return EXIT_HOST_FAILED
        return EXIT_OK

    # -- plays ------------------------------------------------------------------------------
    def run_play(self, play: Play, names: list[str]) -> None:
        self.play = play
        for layer in (play.vars, play.vars_from_files, *(r.defaults for r in play.roles), *(r.vars for r in play.roles)):
            self.redactor.add_from_vars(layer)
        states = []
        for name in names:
            state = self.hosts.setdefault(name, HostState(name))
            if state.active:
                states.append(state)
        self.emit("play_start", play=play.display_name, hosts=[s.name for s in states], pos=str(play.pos))
        base = Scope(tags=list(play.tags), become=play.become, become_user=play.become_user,
                     environment=[play.environment] if play.environment else [])
        self.run_items(play.pre_tasks, states, base)
        self.flush_handlers(states, base)
        for role in play.roles:
            self.run_items(role.tasks, states, base.enter(role, role=role))
        self.run_items(play.tasks, states, base)
        self.flush_handlers(states, base)
        self.run_items(play.post_tasks, states, base)
        self.flush_handlers(states, base)
        for state in states:
            state.notified.clear()

    def flush_handlers(self, states: list[HostState], scope: Scope) -> None:
        assert self.play is not None
        for handler in self.play.handlers:
            names = {handler.name, *handler.listen} - {None}
            hosts = [s for s in states if s.active and s.notified & names]
            if not hosts:
                continue
            for state in hosts:
                state.notified -= names
            handler_scope = scope.enter(handler.role, role=handler.role) if handler.role else scope
            self.run_task(handler, hosts, handler_scope, handler=True)

    # -- items ------------------------------------------------------------------------------
    def run_items(self, items: list[Item], states: list[HostState], scope: Scope) -> None:
        for item in items:
            active = [s for s in states if s.active]
            if not active or self.interrupted:
                return
            if isinstance(item, Task):
                self.run_task(item, active, scope)
            elif isinstance(item, Block):
                self.run_block(item, active, scope)
            elif isinstance(item, IncludeTasks):
                self.run_include(item, active, scope)
            elif isinstance(item, IncludeRole):
                self.run_include_role(item, active, scope)

    def run_block(self, block: Block, states: list[HostState], scope: Scope) -> None:
        inner = scope.enter(block, role=block.role)
        failed_before = {s.name for s in states if s.failed}
        self.run_items(block.block, states, replace(inner, in_rescue_block=bool(block.rescue)))
        newly_failed = [s for s in states if s.failed and not s.unreachable and s.name not in failed_before]
        if block.rescue and newly_failed:
            for state in newly_failed:
                state.failed = False
                state.stats["failed"] -= 1
                state.stats["rescued"] += 1
            self.run_items(block.rescue, newly_failed, inner)
        if block.always:
            reachable = [s for s in states if not s.unreachable]
            was_failed = {s.name for s in reachable if s.failed}
            for state in reachable:
                state.failed = False
            self.run_items(block.always, reachable, inner)
            for state in reachable:
                if state.name in was_failed:
                    state.failed = True

    def run_include(self, include: IncludeTasks, states: list[HostState], scope: Scope) -> None:
        from glmops.playbook.loader import load_tasks_file

        inner = scope.enter(include, role=include.role)
        if not self._selected(inner.tags):
            return
        groups: dict[str, list[tuple[HostState, dict[str, Any]]]] = {}
        for state in states:
            variables = self.task_vars(state, inner)
            try:
                if not self.templar.all_true(inner.when, variables, pos=include.pos):
                    continue
                for extra in self._include_loop(include, variables):
                    file = self.templar.render(include.file, {**variables, **extra}, pos=include.pos, field="include_tasks")
                    groups.setdefault(str(file), []).append((state, extra))
            except GlmopsError as exc:
                self._fail_host(state, include.pos, f"include_tasks: {exc}")
        import os

        for file, members in groups.items():
            path = file if os.path.isabs(file) else os.path.join(include.base_dir, file)
            try:
                items = load_tasks_file(path, role=include.role, pos=include.pos)
            except GlmopsError as exc:
                for state, _ in members:
                    self._fail_host(state, include.pos, str(exc))
                continue
            by_extra: dict[str, tuple[dict[str, Any], list[HostState]]] = {}
            for state, extra in members:
                by_extra.setdefault(repr(sorted(extra.items())), (extra, []))[1].append(state)
            for extra, hosts in by_extra.values():
                self.run_items(items, hosts, replace(inner, vars=inner.vars + ([extra] if extra else []), when=list(scope.when)))

    def run_include_role(self, include: IncludeRole, states: list[HostState], scope: Scope) -> None:
        from glmops.playbook.loader import load_role

        inner = scope.enter(include)
        if not self._selected(inner.tags):
            return
        runnable = []
        for state in states:
            variables = self.task_vars(state, inner)
            try:
                if self.templar.all_true(inner.when, variables, pos=include.pos):
                    runnable.append((state, self.templar.render(include.role_name, variables, pos=include.pos, field="name")))
            except GlmopsError as exc:
                self._fail_host(state, include.pos, str(exc))
        for name in dict.fromkeys(n for _, n in runnable):
            assert self.play is not None
            try:
                role = load_role(name, base_dir=self.play.base_dir, pos=include.pos, tasks_from=include.tasks_from)
            except GlmopsError as exc:
                for state, n in runnable:
                    if n == name:
                        self._fail_host(state, include.pos, str(exc))
                continue
            self.play.handlers.extend(h for h in role.handlers if h.name not in {x.name for x in self.play.handlers})
            hosts = [s for s, n in runnable if n == name]
            self.run_items(role.tasks, hosts, replace(inner, role=role, when=list(scope.when)))

    def _include_loop(self, include: Any, variables: dict[str, Any]) -> list[dict[str, Any]]:
        if include.loop is None:
            return [{}]
        items = self.templar.render(include.loop, variables, pos=include.pos, field="loop")
        if not isinstance(items, list):
            raise TemplateError(f"loop must be a list, got {type(items).__name__}", pos=include.pos, field="loop")
        return [{include.loop_var: item} for item in items]

    def _fail_host(self, state: HostState, pos: Pos, message: str) -> None:
        state.failed = True
        state.stats["failed"] += 1
        self.emit("host_result", host=state.name, task="include", status="failed", msg=message, pos=str(pos), duration=0.0)

    # -- variables --------------------------------------------------------------------------
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
            "ansible_check_mode": self.options.check,
            "ansible_diff_mode": self.options.diff,
            "ansible_play_hosts": [s for s in self.inventory.select(self.play_pattern(self.play)) if self.hosts.get(s) and self.hosts[s].active],
            "omit": "__omit_place_holder__",
        }
        if role is not None:
            magic["role_path"] = role.path
            magic["role_name"] = role.name
        return magic

    def _hostvars_of(self, name: str) -> dict[str, Any]:
        state = self.hosts.get(name)
        return merge_layers([self._inventory_vars.get(name, {}), state.facts if state else {}, {"inventory_hostname": name}])

    # -- tasks ------------------------------------------------------------------------------
    def _selected(self, tags: list[str]) -> bool:
        return self.tag_filter.selected(set(tags))

    def run_task(self, task: Task, states: list[HostState], scope: Scope, handler: bool = False) -> None:
        if self.interrupted:
            return
        if not handler:
            if not self._selected(scope.tags + task.tags):
                return
            if not self._started:
                if task.name != self.options.start_at_task:
                    return
                self._started = True
        self.emit("task_start", task=task.display_name, module=task.module, pos=str(task.pos), handler=handler,
                  role=scope.role.name if scope.role else None)
        self._current = (task.display_name, [s.name for s in states])
        futures = [self.pool.submit(self._run_on_host, task, state, scope) for state in states]
        for future in futures:
            future.result()
        self._current = None
        self.emit("task_end", task=task.display_name)

    def _connection(self, state: HostState) -> Connection:
        if state.conn is not None:
            return state.conn
        from glmops.connection.factory import open_connection

        assert self.play is not None
        hostvars = dict(self._inventory_vars.get(state.name, {}))
        hostvars.update({k: v for k, v in self.options.extra_vars.items() if k.startswith("ansible_")})
        if self.play.connection:
            hostvars["ansible_connection"] = self.play.connection
        rendered = self.templar.render(hostvars, self.task_vars(state, Scope()), field="connection variables")
        if self.options.password is not None:  # typed at the prompt: never templated
            rendered.setdefault("ansible_password", self.options.password)
        if self.options.become_password is not None and "ansible_become_pass" not in rendered:
            rendered.setdefault("ansible_become_password", self.options.become_password)
        policy = self.options.host_key_checking or self.play.host_key_checking
        conn = open_connection(state.name, rendered, host_key_checking=policy)
        for warning in getattr(conn, "warnings", ()):
            self.emit("warning", host=state.name, msg=warning)
        conn.connect()
        state.conn = conn
        if self.interrupted:  # opened while interrupt() was telling the others
            conn.interrupt()
        return conn

    def _run_on_host(self, task: Task, state: HostState, scope: Scope) -> None:
        started = time.monotonic()
        no_log = False
        try:
            variables = self.task_vars(state, scope, task)
            no_log = to_bool(self.templar.render(task.no_log if task.no_log is not None else scope.no_log, variables) or False, strict=False)
            self._gather_if_needed(task, state, scope, variables)
            if self.play and self.play.gather_facts and state.facts_gathered:
                variables = self.task_vars(state, scope, task)
            outcome = self._execute(task, state, scope, variables)
        except ConnectionFailure as exc:
            state.unreachable = True
            state.stats["unreachable"] += 1
            self.emit("host_result", host=state.name, task=task.display_name, status="unreachable", msg=str(exc),
                      duration=round(time.monotonic() - started, 3))
            return
        except GlmopsError as exc:
            outcome = {"failed": True, "changed": False, "msg": str(exc) if exc.pos else f"{task.pos}: {exc}"}
        except Exception as exc:  # noqa: BLE001 - a bug must fail the host, not the run
            detail = traceback.format_exc() if self.options.verbosity >= 3 else f"{type(exc).__name__}: {exc}"
            outcome = {"failed": True, "changed": False, "msg": f"{task.pos}: internal error in module '{task.module}': {detail}"}
        try:
            self._finish(task, state, scope, outcome, no_log, time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - ignore_errors, notify or a renderer failed: still this host's task failure
            message = str(exc) if isinstance(exc, GlmopsError) else f"internal error: {type(exc).__name__}: {exc}"
            if not isinstance(exc, GlmopsError) or exc.pos is None:
                message = f"{task.pos}: {message}"
            state.failed = True
            state.stats["failed"] += 1
            self.emit("host_result", host=state.name, task=task.display_name, status="failed", ignored=False,
                      duration=round(time.monotonic() - started, 3), msg=message, result={"failed": True, "msg": message},
                      diff=[], no_log=no_log)

    def _gather_if_needed(self, task: Task, state: HostState, scope: Scope, variables: dict[str, Any]) -> None:
        """Lazy facts: gather once per host, on the first task whose templates read a fact.

        Decided from the names the templater finds in the task (find_undeclared_variables, plus
        attribute and constant-key lookups), followed through variables whose values are templates,
        and the template file of a `template` task: any `ansible_*` name not defined yet needs facts.
        """
        if state.facts_gathered or not (self.play and self.play.gather_facts) or task.module == "setup":
            return
        templar = self.templar
        names = templar.referenced_names((task.args, task.loop, task.loop_label, task.environment, scope.environment,
                                          task.no_log, task.ignore_errors))
        names |= templar.referenced_names([*scope.when, *task.when, *(task.changed_when or []), *(task.failed_when or []),
                                           *(task.until or [])], expression=True)
        if task.module == "template" and isinstance(task.args.get("src"), str):
            try:
                path = ModuleContext(conn=None, host=state.name, search_paths=self._search_paths(scope)).find_file("templates", task.args["src"])  # type: ignore[arg-type]
                with open(path, encoding="utf-8", errors="replace") as handle:
                    names |= templar.referenced_names(handle.read())
            except (ArgumentError, OSError):
                pass
        if any(name.startswith(FACT_PREFIX) and name not in variables for name in templar.names_through_variables(names, variables)):
            self.gather_facts(state)

    def gather_facts(self, state: HostState) -> None:
        module = get_module("setup")
        ctx = ModuleContext(conn=self._connection(state), host=state.name)
        result = module.run(ctx, validate_args(module, {}, final=True))
        if result.failed:
            raise GlmopsError(f"gathering facts failed: {result.msg}")
        state.facts.update(result.facts)
        state.facts_gathered = True

    def _search_paths(self, scope: Scope) -> list[str]:
        assert self.play is not None
        return ([scope.role.path] if scope.role else []) + [self.play.base_dir]

    def _execute(self, task: Task, state: HostState, scope: Scope, variables: dict[str, Any]) -> dict[str, Any]:
        """Run the task (all loop items) on one host; return the result `register` stores."""
        conditions = scope.when + task.when
        if task.loop is None:
            if not self.templar.all_true(conditions, variables, pos=task.pos):
                return {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}
            return self._attempts(task, state, scope, variables)
        items = self.templar.render(task.loop, variables, pos=task.pos, field="loop")
        if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)):
            raise TemplateError(f"loop needs a list, got {type(items).__name__}: {items!r}", pos=task.pos, field="loop")
        results = []
        for index, item in enumerate(items):
            item_vars = {**variables, task.loop_var: item}
            if task.index_var:
                item_vars[task.index_var] = index
            label = self.templar.render(task.loop_label, item_vars, pos=task.pos, field="loop_control.label") if task.loop_label else item
            if not self.templar.all_true(conditions, item_vars, pos=task.pos):
                result = {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}
            else:
                result = self._attempts(task, state, scope, item_vars)
            result = {**result, task.loop_var: item, "ansible_loop_var": task.loop_var}
            results.append(result)
            hidden = self._no_log(task, scope, item_vars)
            self.emit("item_result", host=state.name, task=task.display_name, item="(hidden)" if hidden else label,
                      status=_status(result), msg="" if hidden else str(result.get("msg", "")))
        summary: dict[str, Any] = {
            "results": results,
            "changed": any(r.get("changed") for r in results),
            "failed": any(r.get("failed") for r in results),
            "msg": "One or more items failed" if any(r.get("failed") for r in results) else "All items completed",
        }
        if results and all(r.get("skipped") for r in results):
            summary["skipped"] = True
        return summary

    def _no_log(self, task: Task, scope: Scope, variables: dict[str, Any]) -> bool:
        value = task.no_log if task.no_log is not None else scope.no_log
        return to_bool(self.templar.render(value, variables), strict=False) if value is not None else False

    def _ignore_errors(self, task: Task, scope: Scope, variables: dict[str, Any]) -> bool:
        value = task.ignore_errors if task.ignore_errors is not None else scope.ignore_errors
        return to_bool(self.templar.render(value, variables), strict=False) if value is not None else False

    def _attempts(self, task: Task, state: HostState, scope: Scope, variables: dict[str, Any]) -> dict[str, Any]:
        """One execution, repeated per retries/until."""
        if task.until is None:
            return self._once(task, state, scope, variables)
        retries = int(self.templar.render(task.retries, variables)) if task.retries is not None else 3
        delay = float(self.templar.render(task.delay, variables)) if task.delay is not None else 5.0
        result: dict[str, Any] = {}
        for attempt in range(1, retries + 2):
            result = self._once(task, state, scope, variables)
            result["attempts"] = attempt
            check_vars = {**variables, **({task.register: result} if task.register else {})}
            if self.templar.all_true(task.until, check_vars, pos=task.pos, field="until"):
                return result
            if attempt <= retries:
                self.emit("retry", host=state.name, task=task.display_name, attempt=attempt, retries=retries)
                self._stop.wait(delay)
        result["failed"] = True
        result["msg"] = result.get("msg") or f"gave up after {retries + 1} attempts"
        return result

    def _once(self, task: Task, state: HostState, scope: Scope, variables: dict[str, Any]) -> dict[str, Any]:
        module = get_module(task.module)
        args = self.templar.render(task.args, variables, pos=task.pos, field="args")
        args = {k: v for k, v in args.items() if v != "__omit_place_holder__"}
        try:
            args = validate_args(module, args, final=True, pos=task.pos)
            module.check_args(args)
        except ArgumentError as exc:
            if exc.pos is None:
                exc.pos = task.pos
            raise
        for name, spec in module.args.items():
            if spec.no_log and args.get(name) is not None:
                self.redactor.add(args[name])
        become_on = scope.become if task.become is None else task.become
        become_user = task.become_user or scope.become_user or "root"
        environment: dict[str, str] = {}
        for layer in scope.environment + ([task.environment] if task.environment else []):
            rendered = self.templar.render(layer, variables, pos=task.pos, field="environment")
            if not isinstance(rendered, Mapping):
                raise TemplateError(f"'environment' must give a mapping (name: value), got {type(rendered).__name__}", pos=task.pos, field="environment")
            environment.update({str(k): str(v) for k, v in rendered.items()})
        check = self.options.check if (task.check_mode is None and scope.check_mode is None) else bool(
            task.check_mode if task.check_mode is not None else scope.check_mode)
        conn = None if module.on_controller else self._connection(state)
        ctx = ModuleContext(
            conn=conn,  # type: ignore[arg-type]
            host=state.name,
            check=check,
            diff=self.options.diff,
            become=Become(user=become_user) if become_on else None,
            environment=environment,
            variables=variables,
            templar=self.templar,
            search_paths=self._search_paths(scope),
            pos=task.pos,
            facts=state.facts,
            report=lambda data: self.emit("progress", host=state.name, task=task.display_name, **data),
        )
        try:
            if task.async_ is not None:
                result = self._run_async(task, module, ctx, args, variables)
            else:
                result = module.run(ctx, args)
        except ConnectionFailure:
            raise
        except (OSError, ArgumentError, TemplateError) as exc:
            result = ModuleResult(failed=True, msg=str(exc))
        if result.facts:
            state.facts.update(result.facts)
            for key, value in result.facts.items():
                if is_secret_name(key):
                    self.redactor.add(value)
        out = result.as_dict()
        if result.skipped:
            out["skipped"] = True
        if result.diff:
            out["diff"] = [vars(d) for d in result.diff]
        if result.warnings:
            out["warnings"] = result.warnings
        return self._apply_conditions(task, out, variables)

    def _run_async(self, task: Task, module: Any, ctx: ModuleContext, args: dict[str, Any], variables: dict[str, Any]) -> ModuleResult:
        """`async:` / `poll:` (Ansible's meaning): the module's command runs detached on the host."""
        from glmops.modules._async import run_async

        seconds = self.templar.render(task.async_, variables, pos=task.pos, field="async")
        poll = self.templar.render(task.poll, variables, pos=task.pos, field="poll") if task.poll is not None else None
        try:
            seconds, poll = int(seconds), (int(poll) if poll is not None else None)
        except (TypeError, ValueError):
            raise ArgumentError(f"async and poll must be whole seconds, got {seconds!r} and {poll!r}", pos=task.pos, field="async") from None
        if seconds <= 0 or (poll is not None and poll < 0):
            raise ArgumentError("async must be > 0 and poll >= 0 (seconds)", pos=task.pos, field="async")
        return run_async(module, ctx, args, seconds, poll)

    def _apply_conditions(self, task: Task, out: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        if task.changed_when is None and task.failed_when is None:
            return out
        check_vars = {**variables, **({task.register: out} if task.register else {})}
        if task.changed_when is not None:
            out["changed"] = self.templar.all_true(task.changed_when, check_vars, pos=task.pos, field="changed_when")
        if task.failed_when is not None:
            failed = any(
                self.templar.all_true([condition], check_vars, pos=task.pos, field="failed_when") for condition in task.failed_when
            )
            out["failed_when_result"] = failed
            out["failed"] = failed
        return out

    def _finish(self, task: Task, state: HostState, scope: Scope, outcome: dict[str, Any], no_log: bool, duration: float) -> None:
        if task.register:
            state.facts[task.register] = outcome
        variables = self.task_vars(state, scope, task)
        ignored = bool(outcome.get("failed")) and self._ignore_errors(task, scope, variables)
        status = _status(outcome)
        if status == "failed" and not ignored:
            state.failed = True
        key = {"ok": "ok", "changed": "changed", "skipped": "skipped", "failed": "failed"}[status]
        if ignored:
            state.stats["ignored"] += 1
        else:
            state.stats[key] += 1
        if status == "changed":
            state.stats["ok"] += 1  # as Ansible's recap: ok counts changed tasks too
            for name in task.notify:
                state.notified.add(str(self.templar.render(name, variables)))
        shown = hide_result(outcome) if no_log else outcome
        self.emit(
            "host_result",
            host=state.name,
            task=task.display_name,
            status=status,
            ignored=ignored,
            duration=round(duration, 3),
            msg=(HIDDEN if status == "failed" else "") if no_log else str(outcome.get("msg", "")),
            result=shown,
            diff=[] if no_log else outcome.get("diff", []),
            no_log=no_log,
        )


def _status(result: Mapping[str, Any]) -> str:
    if result.get("failed"):
        return "failed"
    if result.get("skipped"):
        return "skipped"
    if result.get("changed"):
        return "changed"
    return "ok"
