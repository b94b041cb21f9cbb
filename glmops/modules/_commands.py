"""What command, shell and raw share: creates/removes checks and Ansible-shaped results."""

from __future__ import annotations

import shlex
import time
from datetime import datetime
from typing import Any

from glmops.modules.base import Arg, AsyncCommand, Change, ModuleContext, ModuleResult, Plan

COMMON_ARGS = {
    "chdir": Arg("path", help="Change into this directory before running the command."),
    "creates": Arg("path", help="A path (glob allowed): when it exists, the command is not run."),
    "removes": Arg("path", help="A path (glob allowed): when it does not exist, the command is not run."),
    "stdin": Arg("str", help="Text fed to the command's standard input."),
    "stdin_add_newline": Arg("bool", default=True, help="Add a newline to stdin."),
    "strip_empty_ends": Arg("bool", default=True, help="Strip empty lines at the end of stdout/stderr in the result."),
}


def guard_script(args: dict[str, Any]) -> str | None:
    """sh that exits 0 when creates/removes say the command must run, 1 when it must be skipped."""
    tests = []
    if args.get("creates"):
        tests.append(f'for f in {glob_word(args["creates"])}; do [ -e "$f" ] && exit 1; done')
    if args.get("removes"):
        tests.append(f'found=; for f in {glob_word(args["removes"])}; do [ -e "$f" ] && found=1; done; [ -n "$found" ] || exit 1')
    return "; ".join(tests) + "; exit 0" if tests else None


def glob_word(path: str) -> str:
    """Quote a path but leave glob characters active (as Ansible's creates/removes allow)."""
    if not any(c in path for c in "*?["):
        return shlex.quote(path)
    out = []
    for part in _split_glob(path):
        out.append(part if part in ("*", "?") or part.startswith("[") else shlex.quote(part))
    return "".join(out)


def _split_glob(path: str) -> list[str]:
    parts: list[str] = []
    buffer = ""
    index = 0
    while index < len(path):
        char = path[index]
        if char in "*?":
            if buffer:
                parts.append(buffer)
                buffer = ""
            parts.append(char)
        elif char == "[" and "]" in path[index:]:
            end = path.index("]", index)
            if buffer:
                parts.append(buffer)
                buffer = ""
            bracket = path[index : end + 1]
            parts.append(bracket if all(c.isalnum() or c in "[]!-" for c in bracket) else shlex.quote(bracket))
            index = end
        else:
            buffer += char
        index += 1
    if buffer:
        parts.append(buffer)
    return parts


WOULD_RUN = "command would have run if not in check mode"


def prepare_command(ctx: ModuleContext, script: str, args: dict[str, Any], shown_cmd: Any) -> AsyncCommand | ModuleResult:
    """What a command task runs, or its result when creates/removes say not to run it."""
    guard = guard_script(args)
    if guard:
        check = ctx.run(guard, cwd=args.get("chdir"))
        if check.rc == 1:
            reason = f"{args['creates']} exists" if args.get("creates") else f"{args['removes']} does not exist"
            return ModuleResult(changed=False, msg=f"skipped, since {reason}", data={"cmd": shown_cmd, "rc": 0, "stdout": "", "stderr": ""})
    stdin = args.get("stdin")
    data = None
    if stdin is not None:
        data = (stdin + ("\n" if args.get("stdin_add_newline", True) else "")).encode()
    return AsyncCommand(script=script, stdin=data, chdir=args.get("chdir"), shown=shown_cmd, guarded=bool(guard))


def in_check_mode(prepared: AsyncCommand) -> ModuleResult | None:
    """As Ansible: a command that creates/removes decided to run shows as changed in check mode; any other is skipped."""
    return None if prepared.guarded else ModuleResult(skipped=True, msg=WOULD_RUN, data={"cmd": prepared.shown})


def command_result(shown_cmd: Any, rc: int, stdout: str, stderr: str, start: float, end: float, *, strip: bool = True) -> ModuleResult:
    """Ansible's result shape of a command that ran."""
    if strip:
        stdout, stderr = stdout.rstrip("\n"), stderr.rstrip("\n")
    failed = rc != 0
    return ModuleResult(
        changed=True,
        failed=failed,
        msg=f"non-zero return code {rc}" if failed else "",
        data={
            "cmd": shown_cmd,
            "rc": rc,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_lines": stdout.splitlines(),
            "stderr_lines": stderr.splitlines(),
            "start": datetime.fromtimestamp(start).isoformat(sep=" "),
            "end": datetime.fromtimestamp(end).isoformat(sep=" "),
            "delta": f"{end - start:.6f}",
        },
    )


def run_command(ctx: ModuleContext, script: str, args: dict[str, Any], shown_cmd: Any) -> Plan:
    """Run `script` unless creates/removes say not to (check mode: see in_check_mode); return Ansible's result shape."""
    prepared = prepare_command(ctx, script, args, shown_cmd)
    if isinstance(prepared, ModuleResult):
        return prepared
    start = time.time()
    result = yield Change(command=prepared.script, stdin=prepared.stdin, cwd=prepared.chdir, may_fail=True,
                          check_result=in_check_mode(prepared), reason="run the command")
    if not result.ran:
        return ModuleResult(msg=WOULD_RUN, data={"cmd": shown_cmd})
    return command_result(shown_cmd, result.rc, result.stdout, result.stderr, start, time.time(), strip=args.get("strip_empty_ends", True))
