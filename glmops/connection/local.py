"""Run tasks on the controller itself (`connection: local`)."""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import secrets
import select
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from glmops.connection.base import (Become, CommandResult, CommandTimeout, Connection, LineCallback, LineSplitter, ProgressCallback,
                                    RunInterrupted, install_script, private_create, wrap_command)
from glmops.errors import ConnectionFailure


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


def _pump(
    proc: subprocess.Popen[bytes], stdin: bytes | None, deadline: float | None, lines: dict[str, LineSplitter],
    *, close_stdin: bool = True,
) -> tuple[bytes, bytes, bool]:
    """Feed `stdin` and read stdout and stderr until both end or `deadline` (time.monotonic()) passes.

    Returns (stdout, stderr, ended); `lines[name]` gets each stream's bytes as they arrive. Pipes
    that ended are closed.
    """
    chunks: dict[int, bytearray] = {}
    splitters: dict[int, LineSplitter] = {}
    with selectors.DefaultSelector() as selector:
        for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            if pipe is not None and not pipe.closed:
                selector.register(pipe, selectors.EVENT_READ, name)
                chunks[pipe.fileno()] = bytearray()
                splitters[pipe.fileno()] = lines[name]
        out_fd = proc.stdout.fileno() if proc.stdout and not proc.stdout.closed else -1
        view, sent = memoryview(stdin or b""), 0
        if proc.stdin is not None and not proc.stdin.closed and close_stdin:
            if view:
                selector.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
            else:
                proc.stdin.close()
        while selector.get_map():
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                break
            for key, _ in selector.select(wait):
                if key.data == "stdin":
                    try:
                        sent += os.write(key.fd, view[sent : sent + select.PIPE_BUF])
                    except BrokenPipeError:
                        sent = len(view)
                    if sent >= len(view):
                        selector.unregister(key.fileobj)
                        key.fileobj.close()  # type: ignore[union-attr]
                    continue
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd] += data
                    splitters[key.fd].feed(data)
                else:
                    selector.unregister(key.fileobj)
                    splitters[key.fd].flush()
                    key.fileobj.close()  # type: ignore[union-attr]
        ended = not selector.get_map()
        if not ended and not close_stdin:  # the last look after a kill: give up on the pipes
            for key in list(selector.get_map().values()):
                if key.data != "stdin":
                    splitters[key.fd].flush()
                key.fileobj.close()  # type: ignore[union-attr]
    out = bytes(chunks.get(out_fd, b""))
    err = b"".join(bytes(v) for fd, v in chunks.items() if fd != out_fd)
    return out, err, ended


def _posix_shell() -> str:
    """The /bin/sh commands run with. A controller without it or without process groups (os.killpg,
    signal.SIGKILL: what stops a command and its children on a timeout or Ctrl-C), i.e. native
    Windows, gets a clear error instead of a traceback or a command that cannot be stopped."""
    missing = [name for name, ok in (("/bin/sh", os.path.exists("/bin/sh")), ("os.killpg", hasattr(os, "killpg")),
                                     ("signal.SIGKILL", hasattr(signal, "SIGKILL"))) if not ok]
    if os.name != "posix" or missing:
        raise ConnectionFailure(f"connection: local needs a POSIX controller (Linux, macOS, or WSL on Windows); this one has no "
                                f"{', '.join(missing) or 'POSIX'}",
                                hint="run glmops from WSL, or reach the host over SSH instead of connection: local "
                                     "(inventory, day-2, tunnel and SSH hosts work here)")
    return "/bin/sh"


class LocalConnection(Connection):
    """The controller as a host: commands run with /bin/sh via subprocess."""

    def __init__(self, host: str = "localhost"):
        self.host = host
        self.user = getpass.getuser()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._running_lock = threading.Lock()
        self._interrupted = False

    def connect(self) -> None:
        _posix_shell()

    def _exec(self, script: str, *, stdin: bytes | None, timeout: float | None, on_line: LineCallback | None) -> CommandResult:
        with self._running_lock:
            if self._interrupted:
                raise RunInterrupted(self.host)
            proc = subprocess.Popen(
                [_posix_shell(), "-c", script],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout or Ctrl-C kills all of it
            )
            self._running.add(proc)
        try:
            return self._wait(proc, stdin, timeout, on_line)
        finally:
            with self._running_lock:
                self._running.discard(proc)
            if self._interrupted:
                raise RunInterrupted(self.host)

    def interrupt(self) -> None:
        """Ctrl-C: TERM, then KILL, the process group of every command running now."""
        with self._running_lock:
            self._interrupted = True
            running = list(self._running)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in running:
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            if sig == signal.SIGTERM and running:
                time.sleep(0.2)

    def _wait(self, proc: subprocess.Popen[bytes], stdin: bytes | None, timeout: float | None,
              on_line: LineCallback | None) -> CommandResult:
        """Read the command's output as it comes; on timeout kill its process group."""
        deadline = time.monotonic() + timeout if timeout else None
        lines = {name: LineSplitter(name, on_line) for name in ("stdout", "stderr")}
        out, err, finished = _pump(proc, stdin, deadline, lines)
        if not finished:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            # what is still in the pipes; a process that left the group may hold them open: 2 s at most
            more_out, more_err, _ = _pump(proc, None, time.monotonic() + 2, lines, close_stdin=False)
            for splitter in lines.values():
                splitter.flush()
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
            proc.wait()
            raise CommandTimeout((out + more_out).decode(errors="replace"), (err + more_err).decode(errors="replace"))
        proc.wait()
        return CommandResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def _sudo(self, become: Become | None) -> bool:
        return become is not None and become.user != self.user

    def _install_as(self, become: Become, dest: str, mode: int | None, *, data: bytes | None = None, source: str | None = None) -> None:
        """Write `data` (or the file `source`) to `dest` as the become user: temporary file, mode, rename."""
        directory, name = os.path.split(dest)
        tmp = os.path.join(directory, f".{name}.glmops-tmp-{secrets.token_hex(4)}")
        t = shlex.quote(tmp)
        inner = f"{private_create(f'cat > {t}')} && {install_script(tmp, dest, mode)} || {{ rc=$?; rm -f {t}; exit $rc; }}"
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
