"""Run one module directly, as the executor does, on a given connection."""

from __future__ import annotations

from typing import Any

from glmops.modules import get_module
from glmops.modules.base import ModuleContext, ModuleResult, validate_args
from glmops.playbook.templating import Templar


def run_module(conn: Any, module_name: str, /, check: bool = False, diff: bool = False, variables: dict[str, Any] | None = None,
               search_paths: list[str] | None = None, **args: Any) -> ModuleResult:
    module = get_module(module_name)
    validated = validate_args(module, args, final=True)
    module.check_args(validated)
    ctx = ModuleContext(conn=conn, host="target", check=check, diff=diff, variables=variables or {}, templar=Templar(),
                        search_paths=search_paths or [])
    return module.run(ctx, validated)
