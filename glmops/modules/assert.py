"""assert: fail unless every condition holds."""

from __future__ import annotations

from typing import Any

from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult


class AssertModule(Module):
    name = "assert"
    doc = "Check conditions (`that`, bare Jinja expressions); fail with `fail_msg` at the first that does not hold."
    on_controller = True
    args = {
        "that": Arg("raw", required=True, help="A condition or a list of conditions (bare expressions)."),
        "fail_msg": Arg("str", aliases=("msg",), help="The message when a condition does not hold."),
        "success_msg": Arg("str", help="The message when all hold."),
        "quiet": Arg("bool", default=False, help="Print less on success."),
    }

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        assert ctx.templar is not None
        conditions = args["that"] if isinstance(args["that"], list) else [args["that"]]
        for condition in conditions:
            if not ctx.templar.all_true([condition], ctx.variables, pos=ctx.pos, field="that"):
                return ModuleResult(failed=True, msg=args.get("fail_msg") or "Assertion failed", data={"assertion": condition, "evaluated_to": False})
        return ModuleResult(msg=args.get("success_msg") or "All assertions passed")


MODULE = AssertModule
