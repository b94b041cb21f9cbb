"""raw: send a command line as it is (for hosts with nothing installed yet)."""

from __future__ import annotations

from typing import Any

from glmops.modules._commands import prepare_command, run_command
from glmops.modules.base import Arg, AsyncCommand, Module, ModuleContext, ModuleResult, Plan


class RawModule(Module):
    name = "raw"
    doc = "Run a command line as it is, with /bin/sh, no options. Always reports changed; not run in check mode."
    free_form = "cmd"
    args = {"cmd": Arg("str", required=True, help="The command line."), "executable": Arg("path", help="Ignored; kept for Ansible compatibility.")}

    supports_async = True

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        return run_command(ctx, args["cmd"], {}, args["cmd"])

    def async_command(self, ctx: ModuleContext, args: dict[str, Any]) -> AsyncCommand | ModuleResult:
        return prepare_command(ctx, args["cmd"], {}, args["cmd"])


MODULE = RawModule
