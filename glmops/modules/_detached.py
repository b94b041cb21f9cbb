"""Detached processes on a host: start one in its own session, ask whether it runs, stop it, read its log.

Modules (`daemon`, `model_fetch`, async work) use this instead of writing `nohup ... &` by hand.

A process is started as::

    setsid /bin/sh -c WRAPPER glmops-detached CMD_FILE RC_FILE >> LOG 2>&1 < /dev/null &

- `setsid` gives it its own session and process group, so nothing that kills the persistent remote
  shell's process group (a command timeout) reaches it, and it has no terminal to lose;
- stdin is /dev/null and stdout+stderr are appended to the log, so no descriptor of the SSH channel
  is left open (the channel's commands never wait for it, its output never leaks into them);
- the wrapper runs the script stored in CMD_FILE (the command with its `cd` and `export`s, mode
  0600: it may hold secrets) and writes the exit code to RC_FILE when it ends;
- its pid goes to the pid file and its start time (from /proc, else `ps -o lstart`) to a `.start`
  file beside it, so a later status is not fooled by a reused pid. A pid without a readable start
  time is `unverified`: not called running, and never signalled (it cannot be proved to be ours);
- the log is created under umask 077 (mode 0600: a server may log secrets), the process itself
  keeps the caller's umask;
- "is one running? if not, start it" happens under an exclusive lock on `DIR/NAME.lock`
  (flock(2), taken by perl, which Debian, Ubuntu and macOS ship, else by util-linux flock(1); the
  kernel drops it when its holder dies, so no stale lock is left), in one remote command: two runs
  at once start one process; the other gets the running one back, marked `attached`.

Files beside the pid file `DIR/NAME.pid`: `DIR/NAME.cmd`, `DIR/NAME.rc`, `DIR/NAME.start`, `DIR/NAME.lock`.
All functions take anything with `run(cmd, *, stdin=None, timeout=None) -> CommandResult` (a
Connection or a ModuleContext). Every path is shlex-quoted.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from glmops.connection.base import CommandResult

WRAPPER = 'trap : TERM INT HUP; /bin/sh "$1"; rc=$?; printf "%s\\n" "$rc" > "$2.tmp" && mv -f "$2.tmp" "$2"'
ARGV0 = "glmops-detached"

# sh functions shared by the scripts below. ident PID: a token that changes when the pid is reused
# (start time since boot in clock ticks from /proc; `ps -o lstart` elsewhere); empty when PID is not
# running (a zombie counts as not running). group_alive PGID: a live member of the process group.
FUNCTIONS = r"""
ident() {
  if [ -r "/proc/$1/stat" ]; then
    sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '$1 != "Z" { print $20 }'
  elif [ -d /proc/1 ]; then
    :
  else
    ps -o lstart= -p "$1" 2>/dev/null | tr -s ' ' '_'
  fi
}
uptime_of() {
  if [ -r "/proc/$1/stat" ] && [ -r /proc/uptime ]; then
    t=$(sed 's/.*) //' "/proc/$1/stat" | awk '{ print $20 }'); hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
    awk -v t="$t" -v hz="$hz" '{ printf "%d\n", $1 - t / hz }' /proc/uptime
  else
    ps -o etime= -p "$1" 2>/dev/null | tr -d ' '
  fi
}
group_alive() {
  if [ -d /proc/1 ]; then
    cat /proc/[0-9]*/stat 2>/dev/null | sed 's/.*) //' | awk -v g="$1" '$3 == g && $1 != "Z" { n++ } END { exit n == 0 }'
  else
    kill -0 "-$1" 2>/dev/null
  fi
}
"""


# LOCKED LOCK_FILE WAIT INNER: run `sh -c INNER` holding an exclusive flock on LOCK_FILE, waiting up to WAIT
# seconds for it (exit 75 when that runs out). perl's lexical handle is close-on-exec, so neither the inner
# shell nor a daemon it starts holds the lock; `flock -o` likewise closes it before running the command.
LOCK_PERL = (
    'open(my $f, ">>", shift) or die "cannot open the lock file: $!\\n"; my ($wait, $t0) = (shift, time); '
    'until (flock($f, LOCK_EX | LOCK_NB)) { exit 75 if time - $t0 >= $wait; select(undef, undef, undef, 0.05) } '
    'system(@ARGV); exit($? == -1 ? 127 : ($? & 127) ? 128 + ($? & 127) : $? >> 8)'
)
LOCK_WAIT = 30  # seconds a start waits for another run's start to finish (that takes well under one)
LOCK_BUSY = 75  # exit code: the lock was not free within LOCK_WAIT
ALREADY_RUNNING = 3  # exit code of the locked part: the process of the pid file runs, nothing started

WATCH_MARK = "@@watched"  # start()'s progress lines while it watches a new process (they hold no '=')


class Runner(Protocol):
    def run(self, cmd: str, *, stdin: bytes | None = None, timeout: float | None = None,
            on_line: Callable[[str, str], None] | None = None) -> CommandResult: ...


@dataclass(frozen=True)
class Paths:
    """Where one detached process keeps its state on the host."""

    pid_file: str
    log_file: str

    @property
    def base(self) -> str:
        return self.pid_file[: -len(".pid")] if self.pid_file.endswith(".pid") else self.pid_file

    @property
    def cmd_file(self) -> str:
        """The script that was started (restart runs it again)."""
        return self.base + ".cmd"

    @property
    def rc_file(self) -> str:
        """The exit code, written when the process ends."""
        return self.base + ".rc"

    @property
    def start_file(self) -> str:
        """The process's start time as recorded at start (guards against pid reuse)."""
        return self.base + ".start"

    @property
    def lock_file(self) -> str:
        """Held (flock) while a start checks whether one runs and starts it."""
        return self.base + ".lock"


@dataclass
class Status:
    """What the host says about a detached process."""

    running: bool
    pid: int | None = None
    exit_code: int | None = None  # once it ended (None: still running, never started, or killed hard)
    script: str | None = None  # the script it was started with (the .cmd file)
    uptime_s: int | None = None
    unverified: bool = False  # the recorded pid is alive, but no start time was recorded: cannot prove it is ours
    attached: bool = False  # start() found it already running (another run started it) and started nothing

    def as_dict(self) -> dict[str, Any]:
        return {"running": self.running, "pid": self.pid, "exit_code": self.exit_code, "uptime_s": self.uptime_s}


def build_script(command: str, *, chdir: str | None = None, environment: Mapping[str, Any] | None = None) -> str:
    """The sh script a detached process runs: `cd`, `export`s, then the command on its own line."""
    lines = []
    if chdir:
        lines.append(f"cd {shlex.quote(chdir)} || exit 1")
    for key, value in (environment or {}).items():
        if not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise ValueError(f"invalid environment variable name: {key!r}")
        lines.append(f"export {key}={shlex.quote(str(value))}")
    lines.append(command)
    return "\n".join(lines) + "\n"


def parse_duration(text: str) -> int | None:
    """Seconds from `123` (Linux /proc) or ps's etime `[[dd-]hh:]mm:ss`; None when unreadable."""
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return int(text)
    days, _, rest = text.rpartition("-")
    try:
        parts = [int(p) for p in rest.split(":")]
        seconds = 0
        for part in parts:
            seconds = seconds * 60 + part
        return seconds + (int(days) * 86400 if days else 0)
    except ValueError:
        return None


def status_lines(paths: Paths) -> str:
    """sh (to run after FUNCTIONS) that prints key=value lines about the process, then its script
    between '@@script' and '@@status-end' lines; other output may follow."""
    q = shlex.quote
    return (
        f"pid=$(cat {q(paths.pid_file)} 2>/dev/null | head -n 1); "
        f"rec=$(cat {q(paths.start_file)} 2>/dev/null | head -n 1); "
        'case "$pid" in ""|*[!0-9]*) pid="";; esac; echo "pid=$pid"; '
        'running=0; unverified=0; if [ -n "$pid" ]; then cur=$(ident "$pid"); '
        'if [ -n "$cur" ]; then if [ -z "$rec" ]; then unverified=1; elif [ "$cur" = "$rec" ]; then running=1; fi; fi; fi; '
        'echo "running=$running"; echo "unverified=$unverified"; '
        '[ "$running" = 1 ] && echo "uptime=$(uptime_of "$pid")"; '
        f"[ -f {q(paths.rc_file)} ] && echo \"rc=$(cat {q(paths.rc_file)})\"; "
        f"echo @@script; cat {q(paths.cmd_file)} 2>/dev/null; printf '\\n@@status-end\\n'"
    )


def parse_status(text: str) -> Status:
    """Turn the status script's output into a Status."""
    head, _, rest = text.partition("@@script\n")
    script = rest.partition("\n@@status-end\n")[0]
    values: dict[str, str] = {}
    for line in head.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    pid = int(values["pid"]) if values.get("pid", "").isdigit() else None
    running = values.get("running") == "1" and pid is not None
    rc_text = values.get("rc", "")
    exit_code = int(rc_text) if rc_text.lstrip("-").isdigit() and not running else None
    return Status(
        running=running,
        pid=pid,
        exit_code=exit_code,
        script=script if script else None,
        uptime_s=parse_duration(values.get("uptime", "")) if running else None,
        unverified=values.get("unverified") == "1" and not running,
        attached=values.get("attached") == "1" and running,
    )


def unverified_message(paths: Paths, pid: int | None) -> str:
    """Why a live pid without a recorded start time is neither signalled nor started over, and what to do."""
    return (f"pid {pid} from {paths.pid_file} is alive, but its start time is not recorded ({paths.start_file} "
            f"is missing or empty), so it cannot be proved to be the process started there; nothing was signalled. "
            f"If it is, stop it by hand (kill -TERM -{pid}); if it is not, remove {paths.pid_file}")


def _checked(result: CommandResult, action: str) -> CommandResult:
    if result.rc != 0 and "@@script" not in result.stdout:
        raise OSError(f"{action} failed: {(result.stderr or result.stdout).strip()}")
    return result


def status(runner: Runner, paths: Paths) -> Status:
    """Is the process of this pid file running (the same process that was started, not a reused pid)?"""
    return parse_status(_checked(runner.run(FUNCTIONS + status_lines(paths)), "reading the process status").stdout)


def locked(lock_file: str, inner: str, wait: float = LOCK_WAIT) -> str:
    """sh that runs the sh script `inner` holding an exclusive lock on `lock_file` (see LOCK_PERL); its exit
    code is inner's, LOCK_BUSY when the lock stayed taken for `wait` seconds, 69 with neither perl nor flock(1)."""
    q = shlex.quote
    run_inner = f"/bin/sh -c {q(inner)}"
    return (
        f"if command -v perl >/dev/null 2>&1; then perl -MFcntl=:flock -e {q(LOCK_PERL)} {q(lock_file)} {int(wait)} {run_inner}; "
        f"elif command -v flock >/dev/null 2>&1; then flock -o -w {int(wait)} -E {LOCK_BUSY} {q(lock_file)} {run_inner}; "
        f"else echo {q(f'neither perl nor flock(1) on the host: cannot take the lock {lock_file}')} >&2; (exit 69); fi"
    )


def _launch_script(paths: Paths) -> str:
    """sh (after FUNCTIONS) for the locked part of a start: exit ALREADY_RUNNING when the process of the pid
    file runs (verified by its start time); else write the .cmd file from stdin, start, record pid and start time."""
    q = shlex.quote
    launch_args = f"/bin/sh -c {q(WRAPPER)} {ARGV0} {q(paths.cmd_file)} {q(paths.rc_file)} >> {q(paths.log_file)} 2>&1 < /dev/null &"
    perl = "perl -MPOSIX -e 'POSIX::setsid() >= 0 or die qq(setsid: $!\\n); exec @ARGV or die qq(exec: $!\\n)'"
    return (
        f"pid=$(cat {q(paths.pid_file)} 2>/dev/null | head -n 1); rec=$(cat {q(paths.start_file)} 2>/dev/null | head -n 1); "
        'case "$pid" in ""|*[!0-9]*) ;; *) cur=$(ident "$pid"); '
        f'[ -n "$cur" ] && [ "$cur" = "$rec" ] && exit {ALREADY_RUNNING};; esac; '
        f"mask=$(umask); umask 077; cat > {q(paths.cmd_file)}.tmp && mv -f {q(paths.cmd_file)}.tmp {q(paths.cmd_file)} || exit 1; "
        f": >> {q(paths.log_file)} || exit 1; umask \"$mask\"; rm -f {q(paths.rc_file)}; "
        f"if command -v setsid >/dev/null 2>&1; then setsid {launch_args} else {perl} {launch_args} fi; "
        f"pid=$!; cur=$(ident \"$pid\"); echo \"${{cur:-ended}}\" > {q(paths.start_file)}.tmp && mv -f {q(paths.start_file)}.tmp {q(paths.start_file)}; "
        f"echo \"$pid\" > {q(paths.pid_file)}.tmp && mv -f {q(paths.pid_file)}.tmp {q(paths.pid_file)}"
    )


def start(runner: Runner, paths: Paths, script: str, *, wait: float = 1.0,
          on_watch: Callable[[float], None] | None = None, lock_wait: float = LOCK_WAIT) -> Status:
    """Start `script` (see build_script) detached, unless the process of this pid file runs; then watch it
    for up to `wait` seconds.

    Returns the status after the wait: `running` False with an `exit_code` when it died at once. When the
    process of the pid file was found running (another run started it meanwhile), nothing is started and
    the status has `attached` set: the caller compares its `script` with the one it wanted.
    `on_watch(seconds)` is told, as the host reports it, how long the process has been watched.
    Raises OSError when another start holds the lock for `lock_wait` seconds.
    """
    q = shlex.quote
    steps = int(max(wait, 0) * 10)
    body = (
        f"mkdir -p {q(posixpath.dirname(paths.pid_file) or '.')} {q(posixpath.dirname(paths.log_file) or '.')} || exit 1; "
        + locked(paths.lock_file, FUNCTIONS + _launch_script(paths), lock_wait) + "; lrc=$?; "
        f'if [ "$lrc" = {ALREADY_RUNNING} ]; then echo attached=1; '
        f'elif [ "$lrc" = {LOCK_BUSY} ]; then echo {q(f"another start holds the lock {paths.lock_file} for over {int(lock_wait)} s")} >&2; '
        f"exit {LOCK_BUSY}; "
        'elif [ "$lrc" != 0 ]; then exit "$lrc"; '
        f"else pid=$(cat {q(paths.pid_file)}); "
        f"i=0; while [ $i -lt {steps} ] && [ -n \"$(ident \"$pid\")\" ]; do sleep 0.1; i=$((i + 1)); "
        f"[ $((i % 5)) = 0 ] && echo \"{WATCH_MARK} $i\"; done; fi; "
    )

    def watched(stream: str, line: str) -> None:
        if on_watch is not None and stream == "stdout" and line.startswith(WATCH_MARK + " "):
            on_watch(int(line.split()[1]) / 10)

    result = runner.run(FUNCTIONS + body + status_lines(paths), stdin=script.encode(),
                        timeout=max(wait, 0) + lock_wait + 60, on_line=watched)
    return parse_status(_checked(result, "starting the process").stdout)


@dataclass
class StopResult:
    was_running: bool
    killed: bool = False  # needed SIGKILL after the grace period
    status: Status | None = None
    unverified: bool = False  # the recorded pid was alive without a recorded start time: not signalled


def stop(runner: Runner, paths: Paths, *, grace: float = 10.0) -> StopResult:
    """TERM the process group, wait up to `grace` seconds for all of it to end, then KILL it.

    Only the process the pid file recorded is signalled: a reused pid is left alone, and so is a live pid
    whose start time was not recorded (the .start file missing or empty: `unverified`, nothing is sent).
    """
    steps = int(max(grace, 0) * 10)
    body = (
        FUNCTIONS + status_lines(paths).partition("echo @@script")[0]
        + 'if [ "$running" = 1 ]; then echo stopping=1; kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; '
        f'i=0; while [ $i -lt {steps} ] && group_alive "$pid"; do sleep 0.1; i=$((i + 1)); done; '
        'if group_alive "$pid"; then kill -KILL "-$pid" 2>/dev/null; echo killed=1; '
        'j=0; while [ $j -lt 50 ] && group_alive "$pid"; do sleep 0.1; j=$((j + 1)); done; fi; fi; '
        "echo @@after; " + status_lines(paths)
    )
    result = _checked(runner.run(body, timeout=max(grace, 0) + 60), "stopping the process")
    before, _, after = result.stdout.partition("@@after\n")
    return StopResult(was_running="stopping=1" in before.splitlines(), killed="killed=1" in before.splitlines(),
                      status=parse_status(after), unverified=parse_status(before).unverified)


def tail(runner: Runner, log_file: str, lines: int = 50) -> str:
    """The last `lines` lines of the log ('' when there is none)."""
    result = runner.run(f"tail -n {int(lines)} -- {shlex.quote(log_file)} 2>/dev/null || true")
    return result.stdout
