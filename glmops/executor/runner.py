"""Run a loaded playbook against an inventory: Ansible's linear strategy.

Each task runs on every active host at once (a thread pool of --forks workers), then the next task
starts. A host whose task fails leaves the play; an unreachable host leaves the run. The runner
emits events (dicts) and never prints: renderers do, after redaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from glmops.connection.base import Connection
from glmops.errors import EXIT_HOST_FAILED, EXIT_HOST_UNREACHABLE, EXIT_INTERRUPTED, EXIT_OK, GlmopsError, LoadError, TemplateError
from glmops.executor.context import RunContext
from glmops.executor.facts import FACT_PREFIX
from glmops.executor.includes import IncludeRunner
from glmops.executor.state import STATS, Event, HostState, RunOptions, Scope, task_info
from glmops.executor.taskcall import TaskCall
from glmops.executor.taskvars import TaskVars
from glmops.inventory import Inventory
from glmops.playbook.model import Block, IncludeRole, IncludeTasks, Item, Play, Playbook, Task
from glmops.playbook.templating import Templar

__all__ = ["STATS", "HostState", "PlaybookRunner", "RunOptions", "Scope"]

INTERRUPT_WAIT = 15.0  # seconds Ctrl-C waits for the hosts to confirm their commands were stopped


class PlaybookRunner:
    """Runs every play of a playbook; `run()` returns the exit code.

    It creates the run context (context.py) and owns its parts, each given that context: the task
    variables (taskvars.py), the task runner (taskcall.py: one task on one host: loops, retries,
    conditions, the module call, the result) and the dynamic includes (includes.py).
    """

    def __init__(self, playbook: Playbook, inventory: Inventory, options: RunOptions, emit: Callable[[Event], None]):
        self.ctx = RunContext(playbook, inventory, options, emit)
        self.redactor = self.ctx.redactor  # callers add secrets they know (glmops up: the API key)
        self.variables = TaskVars(self.ctx)
        self.tasks = TaskCall(self.ctx, self.variables)
        self.includes = IncludeRunner(self.ctx, self.variables, self.run_items)
        self.pool: ThreadPoolExecutor | None = None
        self._started = options.start_at_task is None
        self._current: tuple[str, list[str]] | None = None  # the running task and its hosts

    # -- interruption (Ctrl-C) ----------------------------------------------------------------
    @property
    def interrupted(self) -> bool:
        return self.ctx.interrupted

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
        if self.ctx.stop.is_set():
            return
        self.ctx.stop.set()
        self.ctx.emit("interrupted", stopping=self.stopping())

        def stop(conn: Connection) -> None:
            try:
                conn.interrupt()
            except Exception:  # noqa: BLE001 - stopping one host must not keep the others running
                pass

        # All hosts at once: a host that does not answer must not delay stopping the others.
        workers = [threading.Thread(target=stop, args=(s.conn,), daemon=True, name=f"glmops-stop-{s.name}")
                   for s in [*self.ctx.hosts.values(), *self.ctx.delegates.values()] if s.conn is not None]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + INTERRUPT_WAIT
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    # -- planning ---------------------------------------------------------------------------
    def plan(self) -> list[tuple[Play, list[str]]]:
        """Match every play's host pattern before anything runs; an empty match is a load error."""
        limit = set(self.ctx.inventory.select(self.ctx.options.limit)) if self.ctx.options.limit else None
        if limit is not None and not limit:
            raise LoadError(f"--limit '{self.ctx.options.limit}' matches no host", hint="known hosts: " + ", ".join(self.ctx.inventory.hosts) or "none")
        plan = []
        for play in self.ctx.playbook.plays:
            hosts = self.ctx.inventory.select(self.ctx.play_pattern(play))
            if limit is not None:
                hosts = [h for h in hosts if h in limit]
            if not hosts and _changes_inventory(self.ctx.playbook):
                plan.append((play, []))  # matched again when the play starts: add_host/group_by may fill it
                continue
            if not hosts:
                known = [g for g in self.ctx.inventory.groups if g not in ("all", "ungrouped")] + list(self.ctx.inventory.hosts)
                raise LoadError(
                    f"play '{play.display_name}': host pattern '{self.ctx.play_pattern(play)}' matches no host"
                    + (f" within --limit '{self.ctx.options.limit}'" if limit is not None else ""),
                    pos=play.pos,
                    field="hosts",
                    hint="groups and hosts in the inventory: " + (", ".join(known) if known else "none (give one with -i)"),
                )
            plan.append((play, hosts))
        return plan

    def run(self) -> int:
        ctx = self.ctx
        plan = self.plan()
        ctx.redactor.add_from_vars(ctx.options.extra_vars)
        for name in ctx.inventory.hosts:
            ctx.inventory_vars[name] = ctx.inventory.host_vars(name)
            ctx.redactor.add_from_vars(ctx.inventory_vars[name])
            for var in ("ansible_password", "ansible_ssh_pass", "ansible_become_password", "ansible_become_pass"):
                if ctx.inventory_vars[name].get(var):
                    ctx.redactor.add(ctx.inventory_vars[name][var])
        for secret in (ctx.options.password, ctx.options.become_password):
            if secret:
                ctx.redactor.add(secret)
        ctx.emit("playbook_start", playbook=ctx.playbook.path, check=ctx.options.check)
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=max(1, ctx.options.forks)) as pool:
                self.pool = pool
                for play, names in plan:
                    if ctx.interrupted or ctx.abort:
                        break
                    if _changes_inventory(ctx.playbook):
                        names = self.select_again(play, names)
                    for batch in _batches(names, play.serial, ctx.templar):
                        if ctx.interrupted or ctx.abort:
                            break
                        self.run_play(play, batch)
        finally:
            for state in [*ctx.hosts.values(), *ctx.delegates.values()]:
                if state.conn is not None:
                    try:
                        state.conn.close()
                    except Exception:  # noqa: BLE001 - closing must not mask the result
                        pass
        stats = {name: {key: state.stats.get(key, 0) for key in STATS} for name, state in ctx.hosts.items()}
        ctx.emit("recap", stats=stats, duration=round(time.monotonic() - started, 3),
                  **({"interrupted": True} if ctx.interrupted else {}))
        if ctx.interrupted:
            return EXIT_INTERRUPTED
        if any(s.unreachable for s in ctx.hosts.values()):
            return EXIT_HOST_UNREACHABLE
        if any(s.failed for s in ctx.hosts.values()):
            return EXIT_HOST_FAILED
        return EXIT_OK

    # -- plays ------------------------------------------------------------------------------
    def run_play(self, play: Play, names: list[str]) -> None:
        self.ctx.play = play
        for layer in (play.vars, play.vars_from_files, *(r.defaults for r in play.roles), *(r.vars for r in play.roles)):
            self.ctx.redactor.add_from_vars(layer)
        states = []
        self.ctx.end_play = False
        for name in names:
            state = self.ctx.hosts.setdefault(name, HostState(name))
            state.ended = False
            if state.active:
                states.append(state)
        self.ctx.emit("play_start", play=play.display_name, hosts=[s.name for s in states], pos=str(play.pos))
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
        assert self.ctx.play is not None
        force = self.ctx.play.force_handlers
        ran: set[str] = set()
        for handler in self.ctx.play.handlers:
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
            if not active or self.ctx.interrupted or self.ctx.end_play:
                return
            if isinstance(item, Task):
                self.run_task(item, active, scope)
            elif isinstance(item, Block):
                self.run_block(item, active, scope)
            elif isinstance(item, IncludeTasks):
                self.includes.run_include(item, active, scope)
            elif isinstance(item, IncludeRole):
                self.includes.run_include_role(item, active, scope)

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
    def run_task(self, task: Task, states: list[HostState], scope: Scope, handler: bool = False) -> None:
        if self.ctx.interrupted:
            return
        if not handler:
            if not self.ctx.selected(scope.tags + task.tags):
                return
            if not self._started:
                if task.name != self.ctx.options.start_at_task:
                    return
                self._started = True
        if task.module == "meta":
            self.meta(task, states, scope)
            return
        self.ctx.emit("task_start", task=task.display_name, module=task.module, pos=str(task.pos), handler=handler,
                  role=scope.role.name if scope.role else None)
        self._current = (task.display_name, [s.name for s in states])
        failed_before = {s.name for s in states if s.failed}
        pool = self.pool
        assert pool is not None
        if self.tasks.run_once(task, scope) and len(states) > 1:
            outcome = pool.submit(self.tasks.run_on_host, task, states[0], scope).result()
            for state in states[1:]:
                self.tasks.share_run_once(task, state, scope, outcome)
        else:
            futures = [pool.submit(self.tasks.run_on_host, task, state, scope) for state in states]
            for future in futures:
                future.result()
        self._current = None
        self.ctx.emit("task_end", task=task.display_name)
        if self.ctx.play is not None and self.ctx.play.any_errors_fatal and any(s.failed and s.name not in failed_before for s in states):
            self.ctx.end_play = self.ctx.abort = True  # any_errors_fatal: one host's failure ends the run for all, as Ansible

    def select_again(self, play: Play, planned: list[str]) -> list[str]:
        """A play's hosts matched again when it starts (add_host/group_by may have changed the inventory)."""
        hosts = self.ctx.inventory.select(self.ctx.play_pattern(play))
        if self.ctx.options.limit:
            limit = set(self.ctx.inventory.select(self.ctx.options.limit))
            hosts = [h for h in hosts if h in limit or h in self.ctx.added_hosts]  # add_host's hosts are not limited
        if not hosts:
            self.ctx.emit("warning", msg=f"play '{play.display_name}': host pattern '{play.hosts}' matches no host; skipped")
        return hosts

    def meta(self, task: Task, states: list[HostState], scope: Scope) -> None:
        """meta: actions on the run (flush_handlers, end_play, end_host, noop...), as Ansible's."""
        action = str(task.args.get("action"))
        hosts = []
        for state in states:
            try:
                if self.ctx.templar.all_true(scope.when + task.when, self.variables.task_vars(state, scope, task), pos=task.pos):
                    hosts.append(state)
            except GlmopsError as exc:
                self.ctx.fail_host(state, task.pos, str(exc))
        if not hosts:
            return
        if action == "flush_handlers":
            self.flush_handlers(hosts, scope)
        elif action in ("end_play", "end_batch"):
            self.ctx.end_play = True
        elif action == "end_host":
            for state in hosts:
                state.ended = True
        elif action == "clear_host_errors":
            for state in self.ctx.hosts.values():
                state.failed = False
        elif action == "clear_facts":
            for state in hosts:
                state.facts = {k: v for k, v in state.facts.items() if not k.startswith(FACT_PREFIX)}
                state.facts_gathered = False
        elif action == "reset_connection":
            for state in hosts:
                if state.conn is not None:
                    state.conn.close()
                    state.conn = None
        elif action in ("refresh_inventory", "end_role"):
            self.ctx.emit("warning", msg=f"meta: {action} is not supported by glmops; ignored", pos=str(task.pos))


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
