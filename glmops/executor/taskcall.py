"""One task on one host: conditions, loop items, retries/until, the module call and its result."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from glmops.connection.base import Become, Connection
from glmops.errors import ArgumentError, ConnectionFailure, TemplateError
from glmops.executor.state import HostState, RunOptions, Scope, status_of
from glmops.modules import get_module
from glmops.modules.base import ModuleContext, ModuleResult, validate_args
from glmops.output.redact import Redactor, is_secret_name
from glmops.playbook.model import Task
from glmops.playbook.templating import Templar
from glmops.values import to_bool


class TaskCall:
    """Mixin of PlaybookRunner: runs a task's module on one host, per loop item, retried per until."""

    templar: Templar
    redactor: Redactor
    options: RunOptions
    _stop: threading.Event
    emit: Callable[..., None]
    _connection: Callable[[HostState], Connection]
    _search_paths: Callable[[Scope], list[str]]

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
                      status=status_of(result), msg="" if hidden else str(result.get("msg", "")))
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
