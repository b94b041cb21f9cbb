"""daemon: keep a command running detached on the host (setsid, pid file, log), without systemd."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules import _detached
from glmops.modules.base import Arg, Change, Diff, Done, Module, ModuleContext, ModuleResult, Plan


class DaemonModule(Module):
    name = "daemon"
    doc = (
        "Run a shell command as a daemon that outlives the SSH session (for hosts without systemd, "
        "such as AutoDL containers): started in its own session with setsid, stdin from /dev/null, "
        "stdout and stderr appended to `log_file` (created with mode 0600), its pid in `pid_file`, its exit code in the `.rc` "
        "file beside it when it ends. The started command (with `chdir` and `environment`) is kept in "
        "the `.cmd` file beside the pid file (mode 0600), so `glmops restart` can start it again. "
        "`started` is a no-op when the same command already runs from that pid file (a reused pid is "
        "recognised by its start time), and restarts it when the command changed; a live pid without a "
        "recorded start time (the `.start` file gone) fails the task, nothing is signalled or started. "
        "The start holds a lock on the host (the `.lock` file beside the pid file): of two runs at once "
        "one starts the process, the other reports it running (not changed), or fails when it runs "
        "another command. `stopped` sends "
        "TERM to its process group, waits `stop_timeout`, then KILL; `restarted` always restarts. "
        "After a start it watches the process for `wait` seconds: when it dies, the task fails with "
        "its exit code and the log's last `log_lines` lines. Returns pid, running, command, "
        "exit_code, uptime_s."
    )
    args = {
        "name": Arg("str", help="A label for messages (e.g. glmops-serve)."),
        "command": Arg("str", required=True, aliases=("cmd",), help="The shell command line to run (sh syntax)."),
        "state": Arg("str", default="started", choices=("started", "stopped", "restarted"), help="What to ensure."),
        "pid_file": Arg("path", required=True, help="Where the pid goes; .cmd, .rc, .start, .lock files go beside it."),
        "log_file": Arg("path", required=True, help="stdout and stderr are appended here."),
        "chdir": Arg("path", help="Working directory of the command."),
        "environment": Arg("dict", help="Environment variables of the command (with the task's `environment:`)."),
        "wait": Arg("float", default=2.0, help="Seconds to watch a started process before calling the start good."),
        "stop_timeout": Arg("float", default=30.0, help="Seconds between TERM and KILL when stopping."),
        "log_lines": Arg("int", default=20, help="Lines of the log shown when the start fails."),
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if not str(args.get("command") or "").strip():
            raise ArgumentError("'command' is empty", field="command")
        if args["pid_file"] == args["log_file"]:
            raise ArgumentError("'pid_file' and 'log_file' must differ", field="log_file")
        for key in args.get("environment") or {}:
            name = str(key)
            if not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
                raise ArgumentError(f"invalid environment variable name {name!r}", field="environment",
                                    hint="names are letters, digits and _, not starting with a digit")

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        paths = _detached.Paths(args["pid_file"], args["log_file"])
        label = args.get("name") or args["command"].split()[0]
        environment = {**ctx.environment, **(args.get("environment") or {})}
        script = _detached.build_script(args["command"], chdir=args.get("chdir"), environment=environment)
        current = _detached.status(ctx, paths)
        state = args["state"]
        same = current.running and current.script == script

        if current.unverified:
            return self._result(f"{label}: {_detached.unverified_message(paths, current.pid)}", current, args, failed=True)
        if state == "started" and same:
            return self._result(f"{label} is running (pid {current.pid})", current, args)
        if state == "stopped":
            if not current.running:
                return self._result(f"{label} is not running", current, args)
            done = yield self._stop(paths, args, reason=f"stop {label}", unknown_is_running=True)
            if not done.ran:
                return self._result(f"{label} would be stopped (pid {current.pid})", current, args)
            stopped = done.value
            after = stopped.status or current
            if after.running:
                return self._result(f"{label} (pid {current.pid}) did not stop", after, args, failed=True)
            how = " (killed after the TERM grace period)" if stopped.killed else ""
            return self._result(f"{label} stopped (was pid {current.pid}){how}", after, args)

        why = ("restarted" if state == "restarted" else "command changed" if current.running else "was not running")
        verb = "restarted" if current.running else "started"
        diff = None
        if current.script != script:
            diff = Diff(current.script or "", script, f"{paths.cmd_file} (running)" if current.running else "(not running)",
                        paths.cmd_file)
        if current.running:
            done = yield replace(self._stop(paths, args, reason=f"stop {label} to start it again", unknown_is_running=False), diff=diff)
            diff = None  # shown with the stop
            if not done.ran:
                return self._result(f"{label} would be {verb} ({why})", current, args)
            if done.value.status is not None and done.value.status.running:
                return self._result(f"{label} (pid {current.pid}) did not stop", done.value.status, args, failed=True)
        done = yield Change(call=lambda ctx: self._start(ctx, paths, script, label, args), may_fail=True, diff=diff,
                            reason=f"start {label}")
        if not done.ran:
            return self._result(f"{label} would be {verb} ({why})", current, args)
        started = done.value
        if started.attached:  # another run started it between our look and our start
            if started.script == script:
                return self._result(f"{label} is running (pid {started.pid}; another run started it just now)", started, args)
            return self._result(f"another run started {label} with a different command (pid {started.pid}) while this "
                                f"one was starting it; nothing was started or stopped (see {paths.cmd_file})",
                                started, args, failed=True)
        if not started.running:
            log = _detached.tail(ctx, paths.log_file, args["log_lines"]).rstrip("\n")
            code = f"exit code {started.exit_code}" if started.exit_code is not None else "no exit code recorded"
            msg = f"{label} exited right after the start ({code}); last lines of {paths.log_file}:\n{log or '(empty)'}"
            result = self._result(msg, started, args, failed=True)
            result.data["log_tail"] = log
            return result
        return self._result(f"{label} {verb} (pid {started.pid}; {why})", started, args)

    @staticmethod
    def _stop(paths: _detached.Paths, args: dict[str, Any], *, reason: str, unknown_is_running: bool) -> Change:
        """The change that stops the daemon: it counts as a change only when the process is gone after it
        (no status read after the stop: still running when `unknown_is_running`)."""

        def stop(ctx: ModuleContext) -> Done:
            stopped = _detached.stop(ctx, paths, grace=args["stop_timeout"])
            still = stopped.status.running if stopped.status is not None else unknown_is_running
            return Done(ran=True, rc=1 if still else 0, value=stopped)

        return Change(call=stop, may_fail=True, reason=reason)

    @staticmethod
    def _start(ctx: ModuleContext, paths: _detached.Paths, script: str, label: str, args: dict[str, Any]) -> Done:
        """Start the daemon; a start that found another run's process (attached) changed nothing."""
        started = _detached.start(ctx, paths, script, wait=args["wait"],
                                  on_watch=lambda seconds: ctx.progress(seconds, args["wait"], f"watching {label}", unit="s"))
        return Done(ran=True, rc=1 if started.attached else 0, value=started)

    @staticmethod
    def _result(msg: str, status: _detached.Status, args: dict[str, Any], *, failed: bool = False) -> ModuleResult:
        data = {**status.as_dict(), "command": args["command"], "pid_file": args["pid_file"], "log_file": args["log_file"]}
        return ModuleResult(failed=failed, msg=msg, data=data)

MODULE = DaemonModule
