"""Run a loaded playbook against an inventory: Ansible's linear strategy.

Each task runs on every active host at once (a thread pool of --forks workers), then the next task
starts. A host whose task fails leaves the play; an unreachable host leaves the run. The runner
emits events (dicts) and never prints: renderers do, after redaction.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from glmops.connection.base import Connection
from glmops.errors import EXIT_HOST_FAILED, EXIT_HOST_UNREACHABLE, EXIT_INTERRUPTED, EXIT_OK, ConnectionFailure, GlmopsError, LoadError, TemplateError
from glmops.executor.facts import gather_facts, needs_facts
from glmops.executor.includes import IncludeRunner
from glmops.executor.state import STATS, Event, HostState, RunOptions, Scope, status_of, task_info
from glmops.executor.tags import TagFilter
from glmops.executor.taskcall import TaskCall
from glmops.executor.taskvars import TaskVars
from glmops.inventory import Inventory
from glmops.output.redact import HIDDEN, Redactor, hide_result
from glmops.playbook.model import Block, IncludeRole, IncludeTasks, Item, Play, Playbook, Task
from glmops.playbook.templating import Templar
from glmops.values import to_unsafe

__all__ = ["STATS", "HostState", "PlaybookRunner", "RunOptions", "Scope"]

INTERRUPT_WAIT = 15.0  # seconds Ctrl-C waits for the hosts to confirm their commands were stopped


class PlaybookRunner(TaskVars, TaskCall, IncludeRunner):
    """Runs every play of a playbook; `run()` returns the exit code.

    Its parts live beside it: taskvars.py (a task's variables), taskcall.py (one task on one host:
    loops, retries, conditions, the module call), includes.py (include_tasks/include_role),
    facts.py (lazy facts), state.py (options, scope, host state).
    """

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
        self._delegates: dict[str, HostState] = {}  # delegate_to hosts outside the play: connection only
        self._delegate_locks: dict[str, threading.Lock] = {}  # one command at a time on a delegated host
        self._inventory_lock = threading.Lock()  # group_by / add_host
        self._end_play = False  # meta: end_play, any_errors_fatal
        self._abort = False  # any_errors_fatal: no later play runs either
        self._added_hosts: set[str] = set()  # hosts add_host added during the run
        self._current: tuple[str, list[str]] | None = None  # the running task and its hosts
        self._included_role_names: list[str] = []  # include_role/import_role roles run so far (ansible_role_names)

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
                   for s in [*self.hosts.values(), *self._delegates.values()] if s.conn is not None]
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
            if not hosts and _changes_inventory(self.playbook):
                plan.append((play, []))  # matched again when the play starts: add_host/group_by may fill it
                continue
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
                    if self.interrupted or self._abort:
                        break
                    if _changes_inventory(self.playbook):
                        names = self._select_again(play, names)
                    for batch in _batches(names, play.serial, self.templar):
                        if self.interrupted or self._abort:
                            break
                        self.run_play(play, batch)
        finally:
            for state in [*self.hosts.values(), *self._delegates.values()]:
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
        self._end_play = False
        for name in names:
            state = self.hosts.setdefault(name, HostState(name))
            state.ended = False
            if state.active:
                states.append(state)
        self.emit("play_start", play=play.display_name, hosts=[s.name for s in states], pos=str(play.pos))
        base = Scope(tags=list(play.tags), become=play.become, become_user=play.become_user,
                     environment=[play.environment] if play.environment else [])
        if play.strategy == "free" and len(states) > 1:
            # strategy: free: every host goes through the play at its own pace (one thread per host)
            workers = [threading.Thread(target=self._play_sections, args=(play, [state], base), name=f"glmops-free-{state.name}")
                       for state in states]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        else:
            self._play_sections(play, states, base)
        for state in states:
            state.notified.clear()

    def _play_sections(self, play: Play, states: list[HostState], base: Scope) -> None:
        """pre_tasks, roles, tasks, post_tasks, each followed by the handlers it notified."""
        self.run_items(play.pre_tasks, states, base)
        self.flush_handlers(states, base)
        for role in play.roles:
            self.run_items(role.tasks, states, base.enter(role, role=role))
        self.run_items(play.tasks, states, base)
        self.flush_handlers(states, base)
        self.run_items(play.post_tasks, states, base)
        self.flush_handlers(states, base)

    def flush_handlers(self, states: list[HostState], scope: Scope) -> None:
        """Run each notified handler once, in the order handlers are written; every handler that
        listens to a notified topic runs (not only the first). force_handlers: also on failed hosts."""
        assert self.play is not None
        force = self.play.force_handlers
        ran: set[str] = set()
        for handler in self.play.handlers:
            names = {handler.name, *handler.listen} - {None}
            hosts = [s for s in states if (s.active or (force and not s.unreachable)) and s.notified & names]
            if not hosts:
                continue
            ran |= names
            handler_scope = scope.enter(handler.role, role=handler.role) if handler.role else scope
            self.run_task(handler, hosts, handler_scope, handler=True)
        for state in states:
            state.notified -= ran

    # -- items ------------------------------------------------------------------------------
    def run_items(self, items: list[Item], states: list[HostState], scope: Scope) -> None:
        for item in items:
            active = [s for s in states if s.active]
            if not active or self.interrupted or self._end_play:
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
                if state.last_failure is not None:
                    failed_task, failed_result = state.last_failure
                    state.facts["ansible_failed_task"] = task_info(failed_task)
                    state.facts["ansible_failed_result"] = failed_result
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
        if task.module == "meta":
            self._meta(task, states, scope)
            return
        self.emit("task_start", task=task.display_name, module=task.module, pos=str(task.pos), handler=handler,
                  role=scope.role.name if scope.role else None)
        self._current = (task.display_name, [s.name for s in states])
        failed_before = {s.name for s in states if s.failed}
        if self._run_once(task, scope) and len(states) > 1:
            outcome = self.pool.submit(self._run_on_host, task, states[0], scope).result()
            for state in states[1:]:
                self._share_run_once(task, state, scope, outcome)
        else:
            futures = [self.pool.submit(self._run_on_host, task, state, scope) for state in states]
            for future in futures:
                future.result()
        self._current = None
        self.emit("task_end", task=task.display_name)
        if self.play is not None and self.play.any_errors_fatal and any(s.failed and s.name not in failed_before for s in states):
            self._end_play = self._abort = True  # any_errors_fatal: one host's failure ends the run for all, as Ansible

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

    def _run_on_host(self, task: Task, state: HostState, scope: Scope) -> dict[str, Any] | None:
        started = time.monotonic()
        no_log = False
        try:
            variables = self.task_vars(state, scope, task)
            no_log = self._no_log(task, scope, variables)
            if self._needs_facts(task, state, scope, variables):
                self.gather_facts(state)
                variables = self.task_vars(state, scope, task)
            outcome = self._execute(task, state, scope, variables)
        except ConnectionFailure as exc:
            state.unreachable = True
            state.stats["unreachable"] += 1
            self.emit("host_result", host=state.name, task=task.display_name, status="unreachable", msg=str(exc),
                      duration=round(time.monotonic() - started, 3))
            return
        except GlmopsError as exc:  # the message may quote host data: unsafe, as a module's result
            outcome = to_unsafe({"failed": True, "changed": False, "msg": str(exc) if exc.pos else f"{task.pos}: {exc}"})
        except Exception as exc:  # noqa: BLE001 - a bug must fail the host, not the run
            detail = traceback.format_exc() if self.options.verbosity >= 3 else f"{type(exc).__name__}: {exc}"
            outcome = to_unsafe({"failed": True, "changed": False, "msg": f"{task.pos}: internal error in module '{task.module}': {detail}"})
        try:
            self._finish(task, state, scope, outcome, no_log, time.monotonic() - started)
            return outcome
        except Exception as exc:  # noqa: BLE001 - ignore_errors, notify or a renderer failed: still this host's task failure
            message = str(exc) if isinstance(exc, GlmopsError) else f"internal error: {type(exc).__name__}: {exc}"
            if not isinstance(exc, GlmopsError) or exc.pos is None:
                message = f"{task.pos}: {message}"
            state.failed = True
            state.stats["failed"] += 1
            self.emit("host_result", host=state.name, task=task.display_name, status="failed", ignored=False,
                      duration=round(time.monotonic() - started, 3), msg=message, result={"failed": True, "msg": message},
                      diff=[], no_log=no_log)

    def _needs_facts(self, task: Task, state: HostState, scope: Scope, variables: dict[str, Any]) -> bool:
        """Lazy facts: gather once per host, on the first task whose templates read a fact."""
        if state.facts_gathered or not (self.play and self.play.gather_facts) or task.module == "setup":
            return False
        return needs_facts(self.templar, task, scope.when, scope.environment, self._search_paths(scope), variables)

    def gather_facts(self, state: HostState) -> None:
        state.facts.update(gather_facts(self._connection(state), state.name))
        state.facts_gathered = True

    def _finish(self, task: Task, state: HostState, scope: Scope, outcome: dict[str, Any], no_log: bool, duration: float) -> None:
        if task.register:
            state.facts[task.register] = outcome
        variables = self.task_vars(state, scope, task)
        ignored = bool(outcome.get("failed")) and self._ignore_errors(task, scope, variables)
        status = status_of(outcome)
        if status == "failed" and not ignored:
            state.failed = True
            state.last_failure = (task, outcome)
        key = {"ok": "ok", "changed": "changed", "skipped": "skipped", "failed": "failed"}[status]
        if ignored:
            state.stats["ignored"] += 1
        else:
            state.stats[key] += 1
        if status == "changed":
            state.stats["ok"] += 1  # as Ansible's recap: ok counts changed tasks too
            for name in [*task.notify, *scope.notify]:
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


def _changes_inventory(playbook: Playbook) -> bool:
    """Does any task of the playbook add hosts or groups (add_host, group_by)? Then plays are matched when they start."""
    def walk(items: list[Any]) -> bool:
        for item in items:
            if isinstance(item, Task) and item.module in ("add_host", "group_by"):
                return True
            if isinstance(item, Block) and (walk(item.block) or walk(item.rescue) or walk(item.always)):
                return True
        return False

    return any(walk(p.pre_tasks) or walk(p.tasks) or walk(p.post_tasks) or any(walk(r.tasks) for r in p.roles)
               for p in playbook.plays)


def _batches(names: list[str], serial: Any, templar: Templar) -> list[list[str]]:
    """`serial`: hosts per batch (a number, 'N%', or a list of them, the last repeating), as Ansible."""
    if serial is None or not names:
        return [names]
    sizes = serial if isinstance(serial, list) else [serial]
    out: list[list[str]] = []
    index, step = 0, 0
    while index < len(names):
        size = templar.render(sizes[min(step, len(sizes) - 1)], {})
        text = str(size).strip()
        try:
            count = max(1, int(len(names) * float(text[:-1]) / 100)) if text.endswith("%") else int(text)
        except ValueError:
            raise TemplateError(f"serial must be a number or a percentage, got {size!r}", field="serial") from None
        count = count if count > 0 else len(names)
        out.append(names[index:index + count])
        index += count
        step += 1
    return out
