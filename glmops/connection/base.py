"""The connection protocol every transport implements (SSH, local).

A module never builds transport-specific code: it calls `conn.run(cmd)` with a POSIX sh command
string in which every interpolated value was quoted with `shlex.quote`, and `conn.put_bytes` /
`conn.put_file` / `conn.get_file` for files. Uploads are atomic: data lands in a temporary file
beside the destination which is then renamed over it.

`Connection.run()` is written once, here: it wraps the command (`wrap_command`: cwd, environment,
become) and applies the timeout policy (exit code 124 and a message on stderr). A transport
implements only the primitive `_exec(script, stdin=, timeout=, on_line=)`, which runs one complete
sh command line, hands each output line to `on_line` as it arrives (use `LineSplitter`), and on
timeout kills the command with its process group and raises `CommandTimeout`.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

from glmops.errors import GlmopsError

ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes total)
LineCallback = Callable[[str, str], None]  # (stream: "stdout" or "stderr", one line without its newline)


class RunInterrupted(GlmopsError):
    """The run was interrupted (Ctrl-C): the command was stopped, or refused because it came after."""

    def __init__(self, host: str):
        super().__init__(f"interrupted (Ctrl-C): the commands running on {host} were stopped")


@dataclass(frozen=True)
class Become:
    """Privilege escalation with sudo."""

    user: str = "root"
    method: str = "sudo"


@dataclass
class CommandResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class CommandTimeout(Exception):
    """Raised by a transport's `_exec` when a command ran past its timeout (and was killed);
    carries what it had written so far."""

    def __init__(self, stdout: str, stderr: str):
        super().__init__("timeout")
        self.stdout, self.stderr = stdout, stderr


class LineSplitter:
    """Cuts one output stream into lines for a LineCallback, as the bytes arrive."""

    def __init__(self, stream: str, on_line: LineCallback | None):
        self.stream, self.on_line = stream, on_line
        self.pending = bytearray()
        self.ended_early = False  # line_done() sent the pending text: the newline that follows is its end

    def feed(self, data: bytes) -> None:
        if self.on_line is None or not data:
            return
        if self.ended_early:
            self.ended_early = False
            if data.startswith(b"\n"):
                data = data[1:]
        self.pending += data
        *lines, rest = self.pending.split(b"\n")
        self.pending = bytearray(rest)
        for line in lines:
            self.on_line(self.stream, line.decode(errors="replace"))

    def line_done(self) -> None:
        """The text so far is a whole line (a newline or the end of the output comes next): send it now."""
        if self.on_line is not None and self.pending:
            self.flush()
            self.ended_early = True

    def flush(self) -> None:
        """The last line, when the output did not end with a newline."""
        if self.on_line is not None and self.pending:
            line, self.pending = bytes(self.pending), bytearray()
            self.on_line(self.stream, line.decode(errors="replace"))


def wrap_command(
    cmd: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    become: Become | None = None,
    login_user: str | None = None,
) -> str:
    """Return one self-contained sh command line that runs `cmd` with env, cwd and become applied.

    `cmd` runs in a subshell through `eval` of a single quoted word, so a syntax error, an `exit`,
    a `cd` or an `export` in it cannot affect the caller's (long-lived) shell, and no extra shell
    has to be started.
    """
    parts: list[str] = []
    if cwd:
        parts.append(f"cd {shlex.quote(cwd)} || exit 1")
    for key, value in (env or {}).items():
        if not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise ValueError(f"invalid environment variable name: {key!r}")
        parts.append(f"export {key}={shlex.quote(str(value))}")
    parts.append(f"eval {shlex.quote(cmd)}")
    script = "; ".join(parts)
    if become and become.user != login_user:
        # -n: never prompt (a password prompt would hang the run); -H: the target user's HOME.
        return f"sudo -n -H -u {shlex.quote(become.user)} -- /bin/sh -c {shlex.quote(script)}"
    return f"( {script}\n)"


def private_create(write: str) -> str:
    """sh that runs `write` (a command whose `> FILE` creates a temporary file) so that the file is new
    and private: umask 077 (no one else can open it before it gets its final mode) and noclobber (the
    `>` opens with O_EXCL, so it never writes through a symlink or into a file that was already there).
    """
    return f"(umask 077 && set -C && {write})"


def install_script(tmp: str, dest: str, mode: int | None) -> str:
    """sh that gives the temporary file `tmp` its final mode and renames it onto `dest`.

    `mode` None: the mode (and, when permitted, the owner) of the file `dest` is now, read through a
    symlink (`stat -L`: a symlink's own 0777 is never copied; the rename replaces the link itself),
    or for a new file the default of the login's umask (0666 & ~umask), as a plain `>` would give.
    """
    t, d = shlex.quote(tmp), shlex.quote(dest)
    if mode is not None:
        perms = f"chmod {mode:o} {t}"
    else:
        perms = (
            f"if [ -e {d} ]; then m=$(stat -L -c %a {d} 2>/dev/null || stat -L -f %Lp {d}) && chmod \"$m\" {t}"
            f" && o=$(stat -L -c %u:%g {d} 2>/dev/null || stat -L -f %u:%g {d}) && {{ chown \"$o\" {t} 2>/dev/null || true; }}; "
            f"else chmod \"$(printf %o $(( 0666 & ~0$(umask) )))\" {t}; fi"
        )
    return f"{perms} && mv -f {t} {d}"


class Connection(ABC):
    """One host's transport. Opened once per run and reused by every task."""

    host: str  # the inventory name
    user: str | None = None  # the login user, when known

    @abstractmethod
    def connect(self) -> None:
        """Open the connection. Raises ConnectionFailure (UNREACHABLE) on failure."""

    def run(
        self,
        cmd: str,
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        become: Become | None = None,
        timeout: float | None = None,
        on_line: LineCallback | None = None,
    ) -> CommandResult:
        """Run `cmd` with /bin/sh on the host and return its exit code and decoded output.

        `on_line(stream, line)` is called for each line of stdout and stderr as it arrives (the
        result still holds the whole output). A command that runs past `timeout` seconds is killed
        with its process group and returns exit code 124 with what it had written so far.
        """
        script = self._wrap(cmd, env=env, cwd=cwd, become=become)
        try:
            return self._exec(script, stdin=stdin, timeout=timeout, on_line=on_line)
        except CommandTimeout as exc:
            stderr = exc.stderr if not exc.stderr or exc.stderr.endswith("\n") else exc.stderr + "\n"
            return CommandResult(124, exc.stdout, f"{stderr}command timed out after {timeout} s and was killed")

    def _wrap(self, cmd: str, *, env: Mapping[str, str] | None = None, cwd: str | None = None,
              become: Become | None = None) -> str:
        """The complete command line for `cmd` (wrap_command); a transport may add to it (sudo's password)."""
        return wrap_command(cmd, env=env, cwd=cwd, become=become, login_user=self.user)

    @abstractmethod
    def _exec(self, script: str, *, stdin: bytes | None, timeout: float | None, on_line: LineCallback | None) -> CommandResult:
        """Run one complete sh command line (already wrapped); stream lines to `on_line`; on
        timeout kill it with its process group and raise CommandTimeout."""

    @abstractmethod
    def put_bytes(self, data: bytes, remote_path: str, *, mode: int | None = None, become: Become | None = None) -> None:
        """Write `data` to `remote_path` atomically (temporary file + rename), creating no directories."""

    @abstractmethod
    def put_file(
        self,
        local_path: str,
        remote_path: str,
        *,
        mode: int | None = None,
        become: Become | None = None,
        progress: ProgressCallback | None = None,
        sha256: str | None = None,
    ) -> str:
        """Upload a local file to `remote_path` atomically; return the sha256 (hex) of what landed.

        `progress(done, total)` is first called with where the transfer starts (0, or the bytes of an
        interrupted earlier upload that are kept), then as data goes out; done - first = bytes sent.
        `sha256`: the local file's hash when the caller already has it (it is not computed again).
        """

    def kept_parts(self, remote_paths: list[str], *, become: Become | None = None) -> dict[str, tuple[str, int]]:
        """{remote_path: (part file, bytes)} for the destinations whose interrupted put_file left a part
        file *beside* them (same filesystem), which the next put_file resumes from when it is a prefix
        of the file: those bytes need no new space there. The default (a transport that never resumes): {}.
        """
        return {}

    @abstractmethod
    def get_file(self, remote_path: str, local_path: str, *, become: Become | None = None) -> None:
        """Download `remote_path` to `local_path` (written atomically on the controller)."""

    def interrupt(self) -> None:
        """Stop the commands running now (their whole process groups) and refuse any later one.

        Called from another thread than the one running the command (on Ctrl-C); never blocks
        on the command. The default does nothing.
        """

    @abstractmethod
    def close(self) -> None:
        """Close the connection and anything it started."""

    def __enter__(self) -> "Connection":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
