"""command: run a program with arguments, without a shell."""

from __future__ import annotations

import shlex
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules._commands import COMMON_ARGS, prepare_command, run_command
from glmops.modules.base import Arg, AsyncCommand, Module, ModuleContext, ModuleResult


class CommandModule(Module):
    name = "command"
    doc = (
        "Run a program on the host. The words are not processed by a shell: no pipes, redirections, "
        "variables or globs (use `shell` for those). Reports changed whenever it runs; use `creates`, "
        "`removes` or `changed_when` to make it idempotent. Not run in check mode."
    )
    free_form = "cmd"
    args = {
        "cmd": Arg("str", help="The command line; split into words like a shell would, then run without a shell."),
        "argv": Arg("list", elements="str", help="The command as a list of words (no splitting at all)."),
        **COMMON_ARGS,
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if bool(args.get("cmd")) == bool(args.get("argv")):
            raise ArgumentError("give exactly one of 'cmd' (or free-form text) and 'argv'", field="cmd")

    supports_async = True

    @staticmethod
    def _script(args: dict[str, Any]) -> tuple[str, Any] | ModuleResult:
        if args.get("argv"):
            words = [str(w) for w in args["argv"]]
        else:
            try:
                words = shlex.split(args["cmd"])
            except ValueError as exc:
                return ModuleResult(failed=True, msg=f"cannot split the command into words: {exc}")
        return "exec " + " ".join(shlex.quote(w) for w in words), args.get("cmd") or words

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        built = self._script(args)
        return built if isinstance(built, ModuleResult) else run_command(ctx, built[0], args, built[1])

    def async_command(self, ctx: ModuleContext, args: dict[str, Any]) -> AsyncCommand | ModuleResult:
        built = self._script(args)
        return built if isinstance(built, ModuleResult) else prepare_command(ctx, built[0], args, built[1])


MODULE = CommandModule
