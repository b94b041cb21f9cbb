"""debug: print a message or a variable."""

from __future__ import annotations

from typing import Any

from glmops.errors import ArgumentError
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult


class DebugModule(Module):
    name = "debug"
    doc = "Print a message (`msg`, templated) or a variable's value (`var`, an expression). Never changes anything."
    on_controller = True
    args = {
        "msg": Arg("raw", help="The message (any value) to print."),
        "var": Arg("str", help="A variable name or expression whose value is printed."),
        "verbosity": Arg("int", default=0, help="Print only with at least this many -v."),
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if args.get("msg") is not None and args.get("var"):
            raise ArgumentError("give only one of 'msg' and 'var'", field="var")

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        if args.get("var"):
            assert ctx.templar is not None
            value = ctx.templar.evaluate(args["var"], ctx.variables, pos=ctx.pos, field="var")
            return ModuleResult(data={args["var"]: value, "verbosity": args["verbosity"]})
        message = args.get("msg")
        return ModuleResult(msg="Hello world!" if message is None else message, data={"verbosity": args["verbosity"]})


MODULE = DebugModule
