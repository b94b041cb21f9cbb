"""ping: check that the host answers a command (Ansible's ping, without Python on the host)."""

from __future__ import annotations

from typing import Any

from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult


class PingModule(Module):
    name = "ping"
    doc = (
        "Check that the host can be reached and runs a command; returns `ping: pong` (or `data`). "
        "`data: crash` fails, as in Ansible. Never changes anything."
    )
    args = {"data": Arg("str", default="pong", help="The value returned as `ping`; 'crash' makes the module fail.")}

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        if args["data"] == "crash":
            return ModuleResult(failed=True, msg="boom (data: crash)", data={"module_stderr": "Exception: boom"})  # as Ansible
        done = ctx.run("true")
        if done.rc != 0:
            return ModuleResult(failed=True, msg=f"the host did not run a command: {done.stderr.strip()}")
        return ModuleResult(data={"ping": args["data"]})


MODULE = PingModule
