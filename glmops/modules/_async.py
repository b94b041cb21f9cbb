"""Ansible's `async:` / `poll:` for modules that declare `supports_async`, and what `async_status` reads.

A job runs detached on the host (glmops.modules._detached: own session, stdin from a file or
/dev/null) with its stdout and stderr in files, under `~/.glmops_async/JID.*` of the user the task
runs as (Ansible uses ~/.ansible_async). `timeout` (coreutils) ends it after `async` seconds.
- `poll: N` (N > 0, default 10): glmops checks the job every N seconds and the task ends with the
  command's result, as if it ran in the foreground; a dropped SSH connection does not stop the job.
- `poll: 0`: the task returns at once with `ansible_job_id`, `started: 1`, `finished: 0`; read the
  outcome later with `async_status: jid=...` (typically with `until: job.finished`).
"""

from __future__ import annotations

import json
import posixpath
import secrets
import shlex
import time
from typing import Any

from glmops.modules import _detached
from glmops.modules._commands import WOULD_RUN, command_result, in_check_mode
from glmops.modules.base import AsyncCommand, Change, Module, ModuleContext, ModuleResult, Plan, drive

JOBS_DIR = ".glmops_async"
DEFAULT_POLL = 10


def jobs_dir(ctx: ModuleContext) -> str:
    """~/.glmops_async of the user the task runs as (created, mode 0700)."""
    result = ctx.run(f'd="$HOME"/{JOBS_DIR} && mkdir -p "$d" && chmod 700 "$d" && printf %s "$d"')
    if result.rc != 0 or not result.stdout.startswith("/"):
        raise OSError(f"cannot create ~/{JOBS_DIR} on the host: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def job_paths(directory: str, jid: str) -> _detached.Paths:
    return _detached.Paths(pid_file=posixpath.join(directory, f"{jid}.pid"), log_file=posixpath.join(directory, f"{jid}.log"))


def valid_jid(jid: str) -> bool:
    return bool(jid) and all(c.isalnum() or c in "._-" for c in jid) and not jid.startswith(("-", "."))


def start_job(ctx: ModuleContext, command: AsyncCommand, seconds: int) -> tuple[str, str]:
    """Start `command` detached with a time limit; return (job id, jobs dir)."""
    directory = jobs_dir(ctx)
    jid = f"j{secrets.randbelow(10**12):012d}.{int(time.time())}"
    base = posixpath.join(directory, jid)
    q = shlex.quote
    stdin = "/dev/null"
    if command.stdin is not None:
        stdin = base + ".in"
        ctx.conn.put_bytes(command.stdin, stdin, mode=0o600, become=ctx.become)
    meta = {"jid": jid, "cmd": command.shown, "started": time.time(), "async": seconds}
    ctx.conn.put_bytes(json.dumps(meta).encode(), base + ".meta", mode=0o600, become=ctx.become)
    inner = q(command.script)
    line = (f"if command -v timeout >/dev/null 2>&1; then timeout -s TERM {int(seconds)} /bin/sh -c {inner}; "
            f"else /bin/sh -c {inner}; fi < {q(stdin)} > {q(base + '.out')} 2> {q(base + '.err')}")
    script = _detached.build_script(line, chdir=command.chdir, environment=ctx.environment)
    _detached.start(ctx, job_paths(directory, jid), script, wait=0)
    return jid, directory


def job_result(ctx: ModuleContext, directory: str, jid: str) -> dict[str, Any]:
    """Ansible's async_status answer: started/finished, and the command's result once it ended."""
    paths = job_paths(directory, jid)
    base = posixpath.join(directory, jid)
    q = shlex.quote
    probe = ctx.run(_detached.FUNCTIONS + _detached.status_lines(paths) + f"; echo @@meta; cat {q(base + '.meta')} 2>/dev/null; echo")
    if "@@script" not in probe.stdout:
        raise OSError(f"cannot read job {jid}: {(probe.stderr or probe.stdout).strip()}")
    status = _detached.parse_status(probe.stdout)
    meta_text = probe.stdout.partition("@@meta\n")[2].strip()
    if not meta_text:
        return {"failed": True, "msg": f"could not find job {jid} (in {directory})", "ansible_job_id": jid, "started": False, "finished": False}
    meta = json.loads(meta_text)
    out: dict[str, Any] = {"ansible_job_id": jid, "started": True, "finished": False, "results_file": base + ".out"}
    if status.running:
        return out
    rc = status.exit_code if status.exit_code is not None else -9
    texts = ctx.run(f"cat {q(base + '.out')} 2>/dev/null; printf '\\n@@glmops-err@@\\n'; cat {q(base + '.err')} 2>/dev/null")
    stdout, _, stderr = texts.stdout.partition("\n@@glmops-err@@\n")
    result = command_result(meta.get("cmd"), rc, stdout, stderr, float(meta.get("started", 0)), time.time())
    out.update(result.as_dict(), finished=True)
    if rc == 124:
        out["msg"] = f"async task did not complete within the requested time - {meta.get('async')}s"
    elif status.exit_code is None:
        out["msg"] = f"job {jid} ended without an exit code (killed?)"
    return out


def cleanup(ctx: ModuleContext, directory: str, jid: str) -> None:
    base = shlex.quote(posixpath.join(directory, jid))
    ctx.run(f"rm -f -- {base}.pid {base}.log {base}.cmd {base}.rc {base}.start {base}.lock {base}.in {base}.meta {base}.out {base}.err")


def run_async(module: Module, ctx: ModuleContext, args: dict[str, Any], seconds: int, poll: int | None) -> ModuleResult:
    """Run a task with `async: seconds` and `poll:` as Ansible does (the start is the plan's change)."""
    return drive(ctx, async_plan(module, ctx, args, seconds, poll))


def async_plan(module: Module, ctx: ModuleContext, args: dict[str, Any], seconds: int, poll: int | None) -> Plan:
    """Start the module's command detached, then poll it (poll > 0) or leave it running (poll: 0)."""
    prepared = module.async_command(ctx, args)
    if isinstance(prepared, ModuleResult):  # creates/removes said no
        return prepared
    started = yield Change(call=lambda ctx: start_job(ctx, prepared, seconds), check_result=in_check_mode(prepared),
                           reason="start the async job")
    if not started.ran:
        return ModuleResult(msg=WOULD_RUN, data={"cmd": prepared.shown})
    jid, directory = started.value
    if poll == 0:
        return ModuleResult(data={"ansible_job_id": jid, "started": True, "finished": False,
                                                "results_file": posixpath.join(directory, f"{jid}.out")})
    interval = DEFAULT_POLL if poll is None else poll
    began = time.monotonic()
    while True:
        time.sleep(min(interval, 0.2) if time.monotonic() - began < 1 else interval)  # short jobs end quickly
        answer = job_result(ctx, directory, jid)
        elapsed = time.monotonic() - began
        if answer["finished"]:
            cleanup(ctx, directory, jid)
            data = {k: v for k, v in answer.items() if k not in ("changed", "failed", "msg")}
            return ModuleResult(changed=answer.get("changed", True), failed=answer.get("failed", False), msg=answer.get("msg", ""), data=data)
        ctx.progress(min(elapsed, seconds), seconds, f"async job {jid}", unit="s")
        if elapsed > seconds + 5:  # no `timeout` on the host: end it here
            _detached.stop(ctx, job_paths(directory, jid), grace=2)
            return ModuleResult(failed=True, msg=f"async task did not complete within the requested time - {seconds}s",
                                data={"ansible_job_id": jid, "finished": True})
