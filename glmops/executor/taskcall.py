"""One task on one host: conditions, loop items, retries/until, the module call and its result."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

from glmops.connection.base import Become, Connection
from glmops.errors import ArgumentError, ConnectionFailure, GlmopsError, Pos, TemplateError
from glmops.executor.context import RunContext
from glmops.executor.facts import gather_facts, needs_facts
from glmops.executor.inventory_changes import apply as apply_inventory_change
from glmops.executor.loops import LoopError, ansible_loop, with_items
from glmops.executor.state import HostState, Scope, _first, status_of
from glmops.executor.taskvars import TaskVars
from glmops.inventory import IMPLICIT_LOCALHOST, LOCALHOST_NAMES
from glmops.modules import get_module
from glmops.modules.base import ModuleContext, ModuleResult, validate_args
from glmops.output.redact import HIDDEN, hide_result, is_secret_name
from glmops.playbook.model import Task
from glmops.values import to_bool, to_unsafe


class TaskCall:
    """The task runner: runs a task's module on one host, per loop item, retried per until, and
    reports the result. Given the run context and the task variables; the play runner owns it."""

    def __init__(self, ctx: RunContext, variables: TaskVars):
        self.ctx = ctx
        self.variables = variables
        self.templar = ctx.templar
        self.redactor = ctx.redactor
        self.options = ctx.options
        self.emit = ctx.emit

    def _execute(self, task: Task, state: HostState, scope: Scope, variables: dict[str, Any]) -> dict[str, Any]:
        """Run the task (all loop items) on one host; return the result `register` stores."""
        conditions = scope.when + task.when
        if task.loop is None:
            if not self.templar.all_true(conditions, variables, pos=task.pos):
                return {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}
            return self._attempts(task, state, scope, variables)
        items = self.templar.render(task.loop, variables, pos=task.pos, field="loop")
        if task.loop_with:
            try:
                items = with_items(task.loop_with, items, self.variables.search_paths(scope))
            except LoopError as exc:
                raise TemplateError(str(exc), pos=task.pos, field=f"with_{task.loop_with}") from None
        if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)):
            raise TemplateError(f"loop needs a list, got {type(items).__name__}: {items!r}", pos=task.pos, field="loop")
        items = list(items)
        pause = float(self.templar.render(task.loop_pause, variables)) if task.loop_pause is not None else 0.0
        results = []
        for index, item in enumerate(items):
            if index and pause:
                self.ctx.stop.wait(pause)
            item_vars = {**variables, task.loop_var: item, "ansible_loop_var": task.loop_var}
            if task.index_var:
                item_vars[task.index_var] = index
                item_vars["ansible_index_var"] = task.index_var
            if task.loop_extended:
                item_vars["ansible_loop"] = ansible_loop(items, index, allitems=task.loop_extended_allitems)
            label = self.templar.render(task.loop_label, item_vars, pos=task.pos, field="loop_control.label") if task.loop_label else item
            if not self.templar.all_true(conditions, item_vars, pos=task.pos):
                result = {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}
            else:
                result = self._attempts(task, state, scope, item_vars)
            result = {**result, task.loop_var: item, "ansible_loop_var": task.loop_var}
            results.append(result)
            if result.get("ansible_facts") and task.module in ("set_fact", "include_vars"):
                variables = {**variables, **result["ansible_facts"]}  # the next item sees this item's facts
            if task.break_when and self.templar.all_true(task.break_when, {**item_vars, **({task.register: result} if task.register else {})},
                                                         pos=task.pos, field="loop_control.break_when"):
                self._emit_item(task, state, scope, item_vars, label, result)
                break
            self._emit_item(task, state, scope, item_vars, label, result)
        summary: dict[str, Any] = {
            "results": results,
            "changed": any(r.get("changed") for r in results),
            "failed": any(r.get("failed") for r in results),
            "msg": "One or more items failed" if any(r.get("failed") for r in results) else "All items completed",
        }
        if results and all(r.get("skipped") for r in results):
            summary["skipped"] = True
        return summary

    def _emit_item(self, task: Task, state: HostState, scope: Scope, item_vars: dict[str, Any], label: Any,
                   result: dict[str, Any]) -> None:
        hidden = self._no_log(task, scope, item_vars)
        self.emit("item_result", host=state.name, task=task.display_name, item="(hidden)" if hidden else label,
                  status=status_of(result), msg="" if hidden else str(result.get("msg", "")))

    def run_once(self, task: Task, scope: Scope) -> bool:
        """Does the task run on the first host only (run_once)?"""
        value = _first(task.run_once, scope.run_once)
        return bool(value) and to_bool(self.templar.render(value, {}), strict=False)

    def share_run_once(self, task: Task, state: HostState, scope: Scope, outcome: dict[str, Any] | None) -> None:
        """run_once: every other host gets the first host's result (register, facts, notify), as Ansible."""
        if outcome is None:
            return
        if task.register:
            state.facts[task.register] = outcome
        if outcome.get("ansible_facts") and task.module in ("set_fact", "include_vars"):
            state.facts.update(outcome["ansible_facts"])
        if status_of(outcome) == "changed":
            variables = self.variables.task_vars(state, scope, task)
            for name in [*task.notify, *scope.notify]:
                state.notified.add(str(self.templar.render(name, variables)))

    def _delegate(self, task: Task, scope: Scope, variables: dict[str, Any]) -> HostState | None:
        """delegate_to: the host (its connection) the task runs on instead; None when not delegated."""
        target = _first(task.delegate_to, scope.delegate_to)
        if target is None:
            return None
        name = str(self.templar.render(target, variables, pos=task.pos, field="delegate_to")).strip()
        # A connection of its own, also for a host of the play: a host's connection runs one command at a time.
        with self.ctx.connect_lock:
            if name not in self.ctx.delegates:
                if name not in self.ctx.inventory_vars:
                    self.ctx.inventory_vars[name] = self.ctx.inventory.host_vars(name) if name in self.ctx.inventory.hosts else (
                        dict(IMPLICIT_LOCALHOST) if name in LOCALHOST_NAMES else {})
                self.ctx.delegates[name] = HostState(name)
            return self.ctx.delegates[name]

    def _change_inventory(self, state: HostState, result: dict[str, Any], pos: Pos) -> None:
        """group_by / add_host: change the run's inventory; later plays see the new groups and hosts."""
        with self.ctx.inventory_lock:
            for name in apply_inventory_change(self.ctx.inventory, state.name, result, pos):
                if "add_host" in result:
                    self.ctx.added_hosts.add(name)
                self.ctx.inventory_vars[name] = self.ctx.inventory.host_vars(name)
                self.redactor.add_from_vars(self.ctx.inventory_vars[name])
            self.ctx.groups = {name: self.ctx.inventory.group_hosts(name) for name in self.ctx.inventory.groups}

    def connection(self, state: HostState) -> Connection:
        """The host's connection, opened on first use with its rendered connection variables."""
        if state.conn is not None:
            return state.conn
        from glmops.connection.factory import open_connection

        assert self.ctx.play is not None
        hostvars = dict(self.ctx.inventory_vars.get(state.name, {}))
        hostvars.update({k: v for k, v in self.options.extra_vars.items() if k.startswith("ansible_")})
        if self.ctx.play.connection:
            hostvars["ansible_connection"] = self.ctx.play.connection
        rendered = self.templar.render(hostvars, self.variables.task_vars(state, Scope()), field="connection variables")
        if self.options.password is not None:  # typed at the prompt: never templated
            rendered.setdefault("ansible_password", self.options.password)
        if self.options.become_password is not None and "ansible_become_pass" not in rendered:
            rendered.setdefault("ansible_become_password", self.options.become_password)
        policy = self.options.host_key_checking or self.ctx.play.host_key_checking
        conn = open_connection(state.name, rendered, host_key_checking=policy)
        for warning in getattr(conn, "warnings", ()):
            self.emit("warning", host=state.name, msg=warning)
        conn.connect()
        state.conn = conn
        if self.ctx.interrupted:  # opened while interrupt() was telling the others
            conn.interrupt()
        return conn

    def run_on_host(self, task: Task, state: HostState, scope: Scope) -> dict[str, Any] | None:
        """The task on one host, its result emitted; None when the host was unreachable."""
        started = time.monotonic()
        no_log = False
        try:
            variables = self.variables.task_vars(state, scope, task)
            no_log = self._no_log(task, scope, variables)
            if self._needs_facts(task, state, scope, variables):
                self.gather_facts(state)
                variables = self.variables.task_vars(state, scope, task)
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
        if state.facts_gathered or not (self.ctx.play and self.ctx.play.gather_facts) or task.module == "setup":
            return False
        return needs_facts(self.templar, task, scope.when, scope.environment, self.variables.search_paths(scope), variables)

    def gather_facts(self, state: HostState) -> None:
        """Run setup on the host; its facts join the host's variables."""
        state.facts.update(gather_facts(self.connection(state), state.name))
        state.facts_gathered = True

    def _finish(self, task: Task, state: HostState, scope: Scope, outcome: dict[str, Any], no_log: bool, duration: float) -> None:
        if task.register:
            state.facts[task.register] = outcome
        variables = self.variables.task_vars(state, scope, task)
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
                self.ctx.stop.wait(delay)
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
        delegate = self._delegate(task, scope, variables)
        conn = None if module.on_controller else self.connection(delegate or state)
        diff = _first(task.diff, scope.diff)
        ctx = ModuleContext(
            conn=conn,  # type: ignore[arg-type]
            host=state.name,
            check=check,
            diff=self.options.diff if diff is None else diff,
            become=Become(user=become_user) if become_on else None,
            environment=environment,
            variables=variables,
            templar=self.templar,
            search_paths=self.variables.search_paths(scope),
            pos=task.pos,
            facts=state.facts,
            report=lambda data: self.emit("progress", host=state.name, task=task.display_name, **data),
        )
        try:
            if task.async_ is not None:
                result = self._run_async(task, module, ctx, args, variables)
            elif delegate is not None and conn is not None:
                with self.ctx.delegate_locks.setdefault(delegate.name, threading.Lock()):
                    result = module.run(ctx, args)
            else:
                result = module.run(ctx, args)
        except ConnectionFailure:
            raise
        except (OSError, ArgumentError, TemplateError) as exc:
            result = ModuleResult(failed=True, msg=str(exc))
        if not module.result_is_code:  # host data from here on: never rendered, never evaluated (docs/playbooks.md)
            result.facts = to_unsafe(result.facts)
        if result.facts:
            fact_host = state
            if delegate is not None and to_bool(self.templar.render(_first(task.delegate_facts, scope.delegate_facts) or False, variables),
                                                 strict=False):
                fact_host = self.ctx.hosts.get(delegate.name) or delegate
            fact_host.facts.update(result.facts)
            for key, value in result.facts.items():
                if is_secret_name(key):
                    self.redactor.add(value)
        out = result.as_dict() if module.result_is_code else to_unsafe(result.as_dict())
        if task.module in ("group_by", "add_host") and not result.failed:
            self._change_inventory(state, out, task.pos)
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
            try:
                failed: Any = any(
                    self.templar.all_true([condition], check_vars, pos=task.pos, field="failed_when") for condition in task.failed_when
                )
            except TemplateError as exc:  # as ansible-core 2.19: the task fails, the module's result is kept
                out["failed_when_result"] = f"Error while evaluating conditional: {exc.message}"
                out["failed"] = True
                return out
            out["failed_when_result"] = failed
            out["failed"] = failed
        return out
