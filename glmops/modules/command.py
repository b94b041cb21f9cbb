"""command: run a program with arguments, without a shell."""

from __future__ import annotations

import re
import shlex
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules._commands import COMMON_ARGS, prepare_command, run_command
from glmops.modules.base import Arg, AsyncCommand, Module, ModuleContext, ModuleResult, Plan, refuse_option


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
        "expand_argument_vars": Arg("bool", default=True, help="Expand $VAR, ${VAR} (from the host's environment; "
                                    "unset ones stay as written) and a leading ~ in each word, as Ansible."),
        "executable": Arg("str", help="Ignored with a warning, as Ansible's command module does (use shell)."),
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
        if words:
            refuse_option(words[0], "argv" if args.get("argv") else "cmd")  # sh's exec would read it as its option
        if args.get("expand_argument_vars", True) and any("$" in w or w.startswith("~") for w in words):
            return expanded_argv(words), args.get("cmd") or words
        return "exec " + " ".join(shlex.quote(w) for w in words), args.get("cmd") or words

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        built = self._script(args)
        return built if isinstance(built, ModuleResult) else run_command(ctx, built[0], args, built[1])

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        result = super().run(ctx, args)
        if args.get("executable"):
            result.warnings.append("As of Ansible 2.4, the parameter 'executable' is no longer supported with the "
                                   f"'command' module. Not using '{args['executable']}'.")
        return result

    def async_command(self, ctx: ModuleContext, args: dict[str, Any]) -> AsyncCommand | ModuleResult:
        built = self._script(args)
        return built if isinstance(built, ModuleResult) else prepare_command(ctx, built[0], args, built[1])



_VAR = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)  # Python's os.path.expandvars, which Ansible applies
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TILDE = re.compile(r"^~([A-Za-z0-9_.][A-Za-z0-9_.-]*)?(/|$)")


def expanded_argv(words: list[str]) -> str:
    """sh that runs `words` with Ansible's expansion of each word done by the host's shell, and nothing else.

    `$NAME`/`${NAME}` take the variable's value, an unset one stays as written (as os.path.expandvars
    leaves it); a leading `~` or `~user` is the home directory. Every other character is literal:
    each word stays one word (no splitting, globbing or command substitution). The words are built
    in variables first, then `exec "$__glmops_w0" "$__glmops_w1" ...`.
    """
    lines, refs = [], []
    for index, word in enumerate(words):
        var = f"__glmops_w{index}"
        tilde = _TILDE.match(word)
        lines.append(f"{var}={tilde.group(0)}" if tilde else f"{var}=")
        rest = word[tilde.end():] if tilde else word
        position = 0
        for match in _VAR.finditer(rest):
            literal = rest[position:match.start()]
            if literal:
                lines.append(f'{var}="${var}"{shlex.quote(literal)}')
            name = match.group(1)[1:-1] if match.group(1).startswith("{") else match.group(1)
            if _NAME.match(name):
                lines.append(f'if [ -n "${{{name}+set}}" ]; then {var}="${var}${{{name}}}"; '
                             f'else {var}="${var}"{shlex.quote(match.group(0))}; fi')
            else:
                lines.append(f'{var}="${var}"{shlex.quote(match.group(0))}')
            position = match.end()
        if rest[position:]:
            lines.append(f'{var}="${var}"{shlex.quote(rest[position:])}')
        refs.append(f'"${var}"')
    return "\n".join(lines + ["exec " + " ".join(refs)])


MODULE = CommandModule
