"""Run tasks on the controller itself (`connection: local`)."""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import secrets
import shlex
import shutil
import signal
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
        proc = subprocess.Popen(
            ["/bin/sh", "-c", script],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so a timeout kills all of it
        )
        try:
            out, err = proc.communicate(stdin or None, timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                out, err = proc.communicate(timeout=2)
            except subprocess.TimeoutExpired as exc:  # a process that left the group still holds the pipes
                out, err = exc.stdout or b"", exc.stderr or b""
                for pipe in (proc.stdout, proc.stderr):
                    if pipe:
                        pipe.close()
                proc.wait()
            text = err.decode(errors="replace")
            text += "\n" if text and not text.endswith("\n") else ""
            return CommandResult(124, out.decode(errors="replace"), f"{text}command timed out after {timeout} s and was killed")
        return CommandResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def _sudo(self, become: Become | None) -> bool:
        return become is not None and become.user != self.user

    def _install_as(self, become: Become, dest: str, mode: int | None, *, data: bytes | None = None, source: str | None = None) -> None:
        """Write `data` (or the file `source`) to `dest` as the become user: temporary file, mode, rename."""
        directory, name = os.path.split(dest)
        tmp = os.path.join(directory, f".{name}.glmops-tmp-{secrets.token_hex(4)}")
        t, d = shlex.quote(tmp), shlex.quote(dest)
        if mode is not None:
            perms = f"chmod {mode:o} {t}"
        else:
            perms = f'if [ -e {d} ]; then chmod "$(stat -c %a {d} 2>/dev/null || stat -f %Lp {d})" {t}; fi'
        inner = f"cat > {t} && {perms} && mv -f {t} {d} || {{ rc=$?; rm -f {t}; exit $rc; }}"
        if source is not None:  # the controller user reads the file, the become user writes it
            result = self.run(f"{wrap_command(inner, become=become, login_user=self.user)} < {shlex.quote(source)}")
        else:
            result = self.run(inner, stdin=data, become=become)
        if result.rc != 0:
            raise OSError(f"writing {dest} as {become.user} failed: {result.stderr.strip()}")

    def put_bytes(self, data: bytes, remote_path: str, *, mode: int | None = None, become: Become | None = None) -> None:
        if self._sudo(become):
            self._install_as(become, remote_path, mode, data=data)  # type: ignore[arg-type]
            return
        _write_atomic(remote_path, data, mode)

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
        if progress:
            progress(0, os.path.getsize(local_path))  # where the copy starts (a local copy never resumes)
        if self._sudo(become):
            self._install_as(become, remote_path, mode, source=local_path)  # type: ignore[arg-type]
            if progress:
                size = os.path.getsize(local_path)
                progress(size, size)
            return sha256 or _sha256_of(local_path)
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
        return sha256 or _sha256_of(remote_path)

    def get_file(self, remote_path: str, local_path: str, *, become: Become | None = None) -> None:
        if self._sudo(become):
            result = self.run(f"base64 < {shlex.quote(remote_path)}", become=become)
            if result.rc != 0:
                raise OSError(f"reading {remote_path} as {become.user} failed: {result.stderr.strip()}")  # type: ignore[union-attr]
            _write_atomic(local_path, base64.b64decode(result.stdout), None)
            return
        with open(remote_path, "rb") as handle:
            _write_atomic(local_path, handle.read(), None)

    def close(self) -> None:
        return None


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
