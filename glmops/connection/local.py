"""Run tasks on the controller itself (`connection: local`)."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping

from glmops.connection.base import Become, CommandResult, Connection, ProgressCallback, wrap_command


def _write_atomic(path: str, data: bytes, mode: int | None) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".glmops-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        elif os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class LocalConnection(Connection):
    """The controller as a host: commands run with /bin/sh via subprocess."""

    def __init__(self, host: str = "localhost"):
        self.host = host
        self.user = getpass.getuser()

    def connect(self) -> None:
        return None

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
        script = wrap_command(cmd, env=env, cwd=cwd, become=become, login_user=self.user)
        try:
            proc = subprocess.run(
                ["/bin/sh", "-c", script],
                input=stdin or b"",
                capture_output=True,
                timeout=timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            return CommandResult(124, (exc.stdout or b"").decode(errors="replace"), f"command timed out after {timeout} s")
        return CommandResult(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))

    def put_bytes(self, data: bytes, remote_path: str, *, mode: int | None = None, become: Become | None = None) -> None:
        _write_atomic(remote_path, data, mode)

    def put_file(
        self,
        local_path: str,
        remote_path: str,
        *,
        mode: int | None = None,
        become: Become | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        directory = os.path.dirname(os.path.abspath(remote_path))
        fd, tmp = tempfile.mkstemp(prefix=".glmops-", dir=directory)
        os.close(fd)
        try:
            shutil.copyfile(local_path, tmp)
            os.chmod(tmp, mode if mode is not None else (os.stat(remote_path).st_mode & 0o7777 if os.path.exists(remote_path) else 0o644))
            os.replace(tmp, remote_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        if progress:
            size = os.path.getsize(remote_path)
            progress(size, size)

    def get_file(self, remote_path: str, local_path: str, *, become: Become | None = None) -> None:
        with open(remote_path, "rb") as handle:
            _write_atomic(local_path, handle.read(), None)

    def close(self) -> None:
        return None
