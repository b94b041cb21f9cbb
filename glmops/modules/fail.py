"""fail: stop this host with a message."""

from __future__ import annotations

from typing import Any

from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult


class FailModule(Module):
    name = "fail"
    doc = "Fail the task with a message (usually with `when`)."
    on_controller = True
    args = {"msg": Arg("str", default="Failed as requested from task", help="The message.")}

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        return ModuleResult(failed=True, msg=args["msg"])


MODULE = FailModule
