"""pause: wait a number of seconds or minutes, or for Enter at a prompt (on the controller)."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult


class PauseModule(Module):
    name = "pause"
    doc = (
        "Wait `seconds` or `minutes`, or show `prompt` and wait for Enter (the input is returned as "
        "`user_input`). With no terminal on stdin a prompt without a time does not wait (a warning says so). "
        "Returns Ansible's start, stop, delta (whole seconds), stdout, user_input, echo."
    )
    on_controller = True
    args = {
        "seconds": Arg("int", help="Seconds to wait."),
        "minutes": Arg("int", help="Minutes to wait."),
        "prompt": Arg("str", help="Text shown; without a time, waits for Enter."),
        "echo": Arg("bool", default=True, help="Show what is typed at the prompt."),
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if args.get("seconds") is not None and args.get("minutes") is not None:
            raise ArgumentError("give only one of 'seconds' and 'minutes'", field="seconds")

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        wait = args["seconds"] if args.get("seconds") is not None else (args["minutes"] * 60 if args.get("minutes") is not None else None)
        start = datetime.now()
        result = ModuleResult()
        user_input = ""
        if wait is not None:
            time.sleep(max(0, wait))
            stdout = f"Paused for {float(wait) if args.get('seconds') is not None else float(args['minutes'])} " + \
                     ("seconds" if args.get("seconds") is not None else "minutes")
        elif sys.stdin is not None and sys.stdin.isatty():
            print(f"[{ctx.host}] {args.get('prompt') or 'Press enter to continue'}:", end=" ", flush=True)
            if args["echo"]:
                user_input = sys.stdin.readline().rstrip("\n")
            else:
                import getpass

                user_input = getpass.getpass("")
            stdout = "Paused for %.2f minutes" % ((datetime.now() - start).total_seconds() / 60)
        else:
            result.warnings.append("pause: stdin is not a terminal, not waiting for Enter")
            stdout = "Paused for 0.0 minutes"
        stop = datetime.now()
        result.data = {"start": str(start), "stop": str(stop), "delta": int((stop - start).total_seconds()), "rc": 0,
                       "stderr": "", "stdout": stdout, "user_input": user_input, "echo": args["echo"]}
        return result


MODULE = PauseModule
