"""shell: run a command line through a shell on the host."""

from __future__ import annotations

import shlex
from typing import Any

from glmops.modules._commands import COMMON_ARGS, prepare_command, run_command
from glmops.modules.base import Arg, AsyncCommand, Module, ModuleContext, ModuleResult, Plan


class ShellModule(Module):
    name = "shell"
    doc = (
        "Run a command line with a shell (/bin/sh unless `executable` says otherwise): pipes, "
        "redirections and variables work. Quote values from variables with the `quote` filter. "
        "Reports changed whenever it runs; not run in check mode."
    )
    free_form = "cmd"
    args = {
        "cmd": Arg("str", required=True, help="The command line."),
        "executable": Arg("path", help="The shell to use, e.g. /bin/bash."),
        **COMMON_ARGS,
    }

    supports_async = True

    @staticmethod
    def _script(args: dict[str, Any]) -> str:
        cmd = args["cmd"]
        return f"exec {shlex.quote(args['executable'])} -c {shlex.quote(cmd)}" if args.get("executable") else cmd

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        return run_command(ctx, self._script(args), args, args["cmd"])

    def async_command(self, ctx: ModuleContext, args: dict[str, Any]) -> AsyncCommand | ModuleResult:
        return prepare_command(ctx, self._script(args), args, args["cmd"])


MODULE = ShellModule
