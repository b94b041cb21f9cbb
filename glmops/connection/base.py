"""The connection protocol every transport implements (SSH, local).

A module never builds transport-specific code: it calls `conn.run(cmd)` with a POSIX sh command
string in which every interpolated value was quoted with `shlex.quote`, and `conn.put_bytes` /
`conn.put_file` / `conn.get_file` for files. Uploads are atomic: data lands in a temporary file
beside the destination which is then renamed over it.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes total)


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


class Connection(ABC):
    """One host's transport. Opened once per run and reused by every task."""

    host: str  # the inventory name
    user: str | None = None  # the login user, when known

    @abstractmethod
    def connect(self) -> None:
        """Open the connection. Raises ConnectionFailure (UNREACHABLE) on failure."""

    @abstractmethod
    def run(
        self,
        cmd: str,
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        become: Become | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run `cmd` with /bin/sh on the host and return its exit code and decoded output."""

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

    @abstractmethod
    def get_file(self, remote_path: str, local_path: str, *, become: Become | None = None) -> None:
        """Download `remote_path` to `local_path` (written atomically on the controller)."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection and anything it started."""

    def __enter__(self) -> "Connection":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
