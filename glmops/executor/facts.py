"""Lazy facts: whether a task needs the host's facts, and gathering them (the setup module)."""

from __future__ import annotations

from typing import Any

from glmops.connection.base import Connection
from glmops.errors import ArgumentError, GlmopsError
from glmops.modules import get_module
from glmops.modules.base import ModuleContext, validate_args
from glmops.playbook.model import Task
from glmops.playbook.templating import Templar
from glmops.values import to_unsafe

FACT_PREFIX = "ansible_"  # facts are the ansible_* variables setup defines


def needs_facts(templar: Templar, task: Task, when: list[Any], environment: list[dict[str, Any]],
                search_paths: list[str], variables: dict[str, Any]) -> bool:
    """Whether the task reads a fact that is not defined yet (`when`/`environment`: the scope's).

    Decided from the names the templater finds in the task (find_undeclared_variables, plus
    attribute and constant-key lookups), followed through variables whose values are templates,
    and the template file of a `template` task: any `ansible_*` name not defined yet needs facts.
    Unsafe values (host data) are never templates, so they are not followed.
    """
    names = templar.referenced_names((task.args, task.loop, task.loop_label, task.environment, environment,
                                      task.no_log, task.ignore_errors))
    names |= templar.referenced_names([*when, *task.when, *(task.changed_when or []), *(task.failed_when or []),
                                       *(task.until or [])], expression=True)
    if task.module == "template" and isinstance(task.args.get("src"), str):
        try:
            path = ModuleContext(conn=None, host="", search_paths=search_paths).find_file("templates", task.args["src"])  # type: ignore[arg-type]
            with open(path, encoding="utf-8", errors="replace") as handle:
                names |= templar.referenced_names(handle.read())
        except (ArgumentError, OSError):
            pass
    return any(name.startswith(FACT_PREFIX) and name not in variables for name in templar.names_through_variables(names, variables))


def gather_facts(conn: Connection, host: str) -> dict[str, Any]:
    """Run setup on the host; its facts, or GlmopsError when gathering failed."""
    module = get_module("setup")
    ctx = ModuleContext(conn=conn, host=host)
    result = module.run(ctx, validate_args(module, {}, final=True))
    if result.failed:
        raise GlmopsError(f"gathering facts failed: {result.msg}")
    return to_unsafe(result.facts)  # host data: never rendered as a template
