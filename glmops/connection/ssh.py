"""SSH transport: one paramiko connection per host, one long-lived remote shell on it.

Every command is written to that shell as one line: a fresh `/bin/sh -c` with the command quoted
as a single word, its stdin from /dev/null (or a base64 payload), followed by markers that carry the
exit code on stdout and an end-of-command line on stderr. A task therefore costs one round trip
instead of a new exec channel (and a new login-shell start) per command.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import posixpath
import re
import secrets
import select
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paramiko

from glmops.connection.base import Become, CommandResult, Connection, ProgressCallback, wrap_command
from glmops.errors import AuthenticationFailure, ConnectionFailure, HostKeyError

CHUNK = 1 << 20
# SFTP write requests that fit one SSH packet (OpenSSH channels take 32 KiB packets; paramiko's
# default 32 KiB requests plus their header took two packets each: about 1.3x slower here).
SFTP_WRITE = 32768 - 128
SMALL_UPLOAD = 512 * 1024  # below this, files go through the shell (base64) instead of SFTP
HOST_KEY_POLICIES = ("yes", "accept-new", "no")
# Host key algorithms in the order we ask for them when known_hosts has none for the host yet.
PREFERRED_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256")
_RECORD_LOCK = threading.Lock()  # accept-new: hosts connecting in parallel append to one file


def known_hosts_name(hostname: str, port: int) -> str:
    """The name known_hosts uses for a host: `host` on port 22, else `[host]:port`."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def _fix_hint(name: str, path: str) -> str:
    return f"if the host was really reinstalled, remove the old key: ssh-keygen -R '{name}' -f {path}"


class HostKeyVerifier:
    """Checks a server's key against a known_hosts file, per the host_key_checking policy."""

    def __init__(self, path: str, policy: str = "yes"):
        if policy not in HOST_KEY_POLICIES:
            raise ConnectionFailure(
                f"invalid host_key_checking value {policy!r}", hint="use one of: " + ", ".join(HOST_KEY_POLICIES)
            )
        self.path = os.path.expanduser(path)
        self.policy = policy

    def _load(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        if os.path.exists(self.path):
            try:
                keys.load(self.path)
            except (OSError, paramiko.SSHException) as exc:
                raise ConnectionFailure(f"cannot read known_hosts file {self.path}: {exc}") from None
        return keys

    def _line_of(self, name: str, keytype: str) -> int:
        """The line of `name`'s entry in the file (for the error message); 0 when not found."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                for number, line in enumerate(handle, 1):
                    entry = paramiko.hostkeys.HostKeyEntry.from_line(line.strip())
                    if entry and entry.key.get_name() == keytype:
                        probe = paramiko.HostKeys()
                        probe._entries.append(entry)  # lookup() handles hashed names
                        if probe.lookup(name):
                            return number
        except (OSError, paramiko.SSHException, ValueError):
            return 0
        return 0

    def known_types(self, hostname: str, port: int) -> list[str]:
        """Key types known_hosts holds for the host, to ask the server for those first (as ssh does)."""
        if self.policy == "no":
            return []
        try:
            known = self._load().lookup(known_hosts_name(hostname, port))
        except ConnectionFailure:
            return []
        return list(known.keys()) if known else []

    def verify(self, hostname: str, port: int, key: paramiko.PKey) -> None:
        """Raise HostKeyError unless the key is known (or recorded under accept-new)."""
        if self.policy == "no":
            return
        name = known_hosts_name(hostname, port)
        known = self._load().lookup(name)
        keytype = key.get_name()
        if known is not None and keytype in known:
            if known[keytype] == key:
                return
            line = self._line_of(name, keytype)
            where = f"{self.path}:{line}" if line else self.path
            raise HostKeyError(
                f"HOST KEY CHANGED for {name}: the server's {keytype} key "
                f"(SHA256:{_fingerprint(key)}) differs from the one recorded in {where}; "
                "this can mean someone is intercepting the connection. Refusing to connect.",
                hint=_fix_hint(name, self.path),
            )
        if self.policy == "accept-new":
            with _RECORD_LOCK:
                again = self._load().lookup(name)
                if again is None or again.get(keytype) != key:
                    self._record(name, key)
            return
        raise HostKeyError(
            f"unknown host key for {name} ({keytype} SHA256:{_fingerprint(key)}); it is not in {self.path}",
            hint="check the fingerprint, then run again with --accept-new-host-keys "
            "(or set host_key_checking: accept-new) to record it",
        )

    def _record(self, name: str, key: paramiko.PKey) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        existing = b""
        if os.path.exists(self.path):
            with open(self.path, "rb") as handle:
                existing = handle.read()
        if existing and not existing.endswith(b"\n"):
            existing += b"\n"
        line = f"{name} {key.get_name()} {key.get_base64()}\n".encode()
        tmp = f"{self.path}.glmops-{os.getpid()}-{secrets.token_hex(4)}"
        with open(tmp, "wb") as handle:
            handle.write(existing + line)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


def _fingerprint(key: paramiko.PKey) -> str:
    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class _Stream:
    """One output stream of the shell: the bytes between a command's begin and end markers.

    Anything before the begin marker (late output of an earlier command's background job) and after
    the end marker is dropped, so stray output can neither corrupt a result nor hide a marker.
    """

    def __init__(self, begin: bytes, end: bytes, with_rc: bool):
        self.begin, self.end, self.with_rc = begin, end, with_rc
        self.buf = bytearray()
        self.started = False
        self.scan = 0
        self.data: bytes | None = None
        self.rc: int | None = None

    def feed(self, chunk: bytes) -> None:
        if self.data is not None:
            return
        self.buf += chunk
        if not self.started:
            at = self.buf.find(self.begin)
            if at < 0:
                del self.buf[: max(0, len(self.buf) - len(self.begin))]
                return
            del self.buf[: at + len(self.begin)]
            self.started = True
        at = self.buf.find(self.end, self.scan)
        if at < 0:
            self.scan = max(0, len(self.buf) - len(self.end) + 1)
            return
        if self.with_rc:
            newline = self.buf.find(b"\n", at + len(self.end))
            if newline < 0:
                self.scan = at
                return
            self.rc = int(self.buf[at + len(self.end) : newline])
        self.data = bytes(self.buf[:at])
        self.buf = bytearray()

    def partial(self) -> str:
        return (self.data if self.data is not None else bytes(self.buf)).decode(errors="replace")


class CommandTimeout(Exception):
    """A command ran past its timeout; carries what it had written so far."""

    def __init__(self, stdout: str, stderr: str):
        super().__init__("timeout")
        self.stdout, self.stderr = stdout, stderr


class RemoteShell:
    """The long-lived `sh` on one channel, fed one command at a time."""

    def __init__(self, transport: paramiko.Transport):
        self.channel = transport.open_session()
        self.channel.exec_command("exec /bin/sh")
        self._fd = self.channel.fileno()  # makes select() wake for stdout and stderr data
        first = self.execute("echo $$", stdin=None, timeout=60)
        if first.rc != 0 or not first.stdout.strip().isdigit():
            raise ConnectionFailure(f"the remote shell did not start: {first.stderr.strip() or first.stdout.strip()}")
        self.pid = int(first.stdout.strip())  # also its process group: sshd starts sessions with setsid()

    def alive(self) -> bool:
        return not (self.channel.closed or self.channel.exit_status_ready())

    def execute(self, script: str, *, stdin: bytes | None, timeout: float | None) -> CommandResult:
        """Run one complete sh command line and return its result; raises CommandTimeout, EOFError."""
        token = f"__glmops_{secrets.token_hex(8)}"
        if stdin:
            feed = f"printf %s {shlex.quote(base64.b64encode(stdin).decode())} | base64 -d | {script}"
        else:
            feed = f"{script} </dev/null"
        line = (
            f"printf '{token}_b\\n'; printf '{token}_b\\n' >&2; {feed}\n"
            f"printf '\\n{token}_rc=%d\\n' $?; printf '\\n{token}_e\\n' >&2\n"
        )
        out = _Stream(f"{token}_b\n".encode(), f"\n{token}_rc=".encode(), with_rc=True)
        err = _Stream(f"{token}_b\n".encode(), f"\n{token}_e\n".encode(), with_rc=False)
        self.channel.sendall(line.encode())
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            while self.channel.recv_ready():
                out.feed(self.channel.recv(CHUNK))
            while self.channel.recv_stderr_ready():
                err.feed(self.channel.recv_stderr(CHUNK))
            if out.data is not None and err.data is not None:
                return CommandResult(out.rc or 0, out.data.decode(errors="replace"), err.data.decode(errors="replace"))
            if self.channel.closed or (
                self.channel.exit_status_ready() and not (self.channel.recv_ready() or self.channel.recv_stderr_ready())
            ):
                raise EOFError("the remote shell exited")
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise CommandTimeout(out.partial(), err.partial())
            select.select([self._fd], [], [], wait)

    def close(self) -> None:
        try:
            self.channel.close()
        except Exception:  # noqa: BLE001 - closing a dead channel
            pass


class SSHConnection(Connection):
    """A host reached over SSH with paramiko."""

    def __init__(
        self,
        host: str,
        *,
        hostname: str,
        port: int = 22,
        user: str | None = None,
        key_filename: str | None = None,
        password: str | None = None,
        known_hosts: str = "~/.ssh/known_hosts",
        host_key_checking: str = "yes",
        connect_timeout: float = 10.0,
    ):
        self.host = host
        self.hostname = hostname
        self.port = port
        self.user = user or getpass.getuser()
        self.key_filename = os.path.expanduser(key_filename) if key_filename else None
        self.password = password
        self.verifier = HostKeyVerifier(known_hosts, host_key_checking)
        self.connect_timeout = connect_timeout
        self.transport: paramiko.Transport | None = None
        self._shell: RemoteShell | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()  # one command at a time on the shell

    # -- connecting -------------------------------------------------------------------------
    def _where(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    def connect(self) -> None:
        with self._lock:
            if self.transport is not None and self.transport.is_active():
                return
            if self.transport is not None:  # dropped since: start over on a new transport
                self.close()
            self._connect()

    def _key_types(self, offered: tuple[str, ...]) -> tuple[str, ...]:
        """Host key algorithms: those known_hosts has for this host first, then ed25519, ..."""
        wanted: list[str] = []
        for known in self.verifier.known_types(self.hostname, self.port):
            wanted += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if known == "ssh-rsa" else [known]
        wanted += PREFERRED_KEY_TYPES
        first = [k for k in dict.fromkeys(wanted) if k in offered]
        return tuple(first + [k for k in offered if k not in first])

    def _connect(self) -> None:
        try:
            sock = socket.create_connection((self.hostname, self.port), timeout=self.connect_timeout)
        except socket.gaierror as exc:
            raise ConnectionFailure(f"cannot resolve host name {self.hostname!r}: {exc.strerror}") from None
        except (ConnectionRefusedError, TimeoutError, OSError) as exc:
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else (
                "timed out" if isinstance(exc, (TimeoutError, socket.timeout)) else str(exc.strerror or exc)
            )
            raise ConnectionFailure(f"cannot connect to {self.hostname}:{self.port}: {reason}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = self.connect_timeout  # a port that accepts but never speaks SSH
        options = transport.get_security_options()
        preferred = [k for k in ("curve25519-sha256", "curve25519-sha256@libssh.org") if k in options.kex]
        options.kex = tuple(preferred + [k for k in options.kex if k not in preferred])
        # AES-GCM first: authenticated encryption in one pass, about 1.4x the upload throughput of aes-ctr + hmac here.
        gcm = [c for c in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if c in options.ciphers]
        options.ciphers = tuple(gcm + [c for c in options.ciphers if c not in gcm])
        options.key_types = self._key_types(tuple(options.key_types))
        try:
            transport.start_client(timeout=self.connect_timeout)
            self.verifier.verify(self.hostname, self.port, transport.get_remote_server_key())
            self._authenticate(transport)
        except HostKeyError:
            transport.close()
            raise
        except paramiko.AuthenticationException as exc:
            transport.close()
            raise AuthenticationFailure(
                f"authentication failed for {self._where()}: {exc}",
                hint="check ansible_user and ansible_ssh_private_key_file (or ansible_password)",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise ConnectionFailure(f"SSH handshake with {self.hostname}:{self.port} failed: {exc or type(exc).__name__}") from None
        transport.set_keepalive(30)
        self.transport = transport

    def _authenticate(self, transport: paramiko.Transport) -> None:
        if self.key_filename:
            try:
                key = paramiko.PKey.from_path(self.key_filename)
            except FileNotFoundError:
                raise ConnectionFailure(f"private key file not found: {self.key_filename}") from None
            except paramiko.PasswordRequiredException:
                raise ConnectionFailure(f"private key {self.key_filename} is encrypted; load it into ssh-agent") from None
            except (paramiko.SSHException, ValueError) as exc:
                raise ConnectionFailure(f"cannot read private key {self.key_filename}: {exc}") from None
            transport.auth_publickey(self.user, key)
            return
        if self.password is not None:
            password = str(self.password)
            try:
                transport.auth_password(self.user, password)
            except paramiko.BadAuthenticationType as exc:
                if "keyboard-interactive" not in exc.allowed_types:
                    raise
                # Servers with PasswordAuthentication off often still ask for the password this way.
                transport.auth_interactive(self.user, lambda _title, _text, prompts: [password for _ in prompts])
            return
        # No key or password given: try the agent, then the user's default keys, as ssh does.
        for key in paramiko.Agent().get_keys():
            try:
                transport.auth_publickey(self.user, key)
                return
            except paramiko.AuthenticationException:
                continue
        for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
            path = os.path.expanduser(f"~/.ssh/{name}")
            if os.path.exists(path):
                try:
                    transport.auth_publickey(self.user, paramiko.PKey.from_path(path))
                    return
                except (paramiko.AuthenticationException, paramiko.SSHException):
                    continue
        raise paramiko.AuthenticationException("no key or password was accepted")

    def _ensure_shell(self) -> RemoteShell:
        self.connect()
        if self._shell is None or not self._shell.alive():
            if self._shell is not None:
                self._shell.close()
            try:
                self._shell = RemoteShell(self.transport)  # type: ignore[arg-type]
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise ConnectionFailure(f"cannot open a shell on {self._where()}: {exc}") from None
        return self._shell

    # -- commands -------------------------------------------------------------------------
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
        with self._lock:
            shell = self._ensure_shell()
            try:
                return shell.execute(script, stdin=stdin, timeout=timeout)
            except CommandTimeout as exc:
                self._kill_shell(shell)
                stderr = exc.stderr if not exc.stderr or exc.stderr.endswith("\n") else exc.stderr + "\n"
                return CommandResult(124, exc.stdout, f"{stderr}command timed out after {timeout} s and was killed")
            except (EOFError, OSError, paramiko.SSHException) as exc:
                shell.close()
                self._shell = None
                if self.transport is None or not self.transport.is_active():
                    raise ConnectionFailure(f"lost the connection to {self._where()}: {exc}") from None
                return CommandResult(255, "", f"the remote shell ended unexpectedly (the command ended it): {exc}")

    def _kill_shell(self, shell: RemoteShell) -> None:
        """Kill the timed-out command with its whole process group; the next run opens a new shell."""
        try:
            channel = self.transport.open_session()  # type: ignore[union-attr]
            channel.exec_command(f"kill -TERM -- -{shell.pid} 2>/dev/null; sleep 0.2; kill -KILL -- -{shell.pid} 2>/dev/null")
            channel.recv_exit_status()
            channel.close()
        except (paramiko.SSHException, OSError):
            pass
        shell.close()
        self._shell = None

    # -- files ----------------------------------------------------------------------------
    def _sftp_client(self) -> paramiko.SFTPClient:
        self.connect()
        if self._sftp is None:
            self._sftp = self.transport.open_sftp_client()  # type: ignore[union-attr]
        return self._sftp

    def _check(self, result: CommandResult, action: str) -> None:
        if result.rc != 0:
            raise OSError(f"{action} failed on {self.host}: {result.stderr.strip() or result.stdout.strip()}")

    @staticmethod
    def _install_script(tmp: str, dest: str, mode: int | None) -> str:
        """sh that gives `tmp` the requested mode (or the existing file's mode and owner) and renames it."""
        t, d = shlex.quote(tmp), shlex.quote(dest)
        if mode is not None:
            perms = f"chmod {mode:o} {t}"
        else:
            perms = (
                f"if [ -e {d} ]; then m=$(stat -c %a {d} 2>/dev/null || stat -f %Lp {d}) && chmod \"$m\" {t}"
                f" && o=$(stat -c %u:%g {d} 2>/dev/null || stat -f %u:%g {d}) && {{ chown \"$o\" {t} 2>/dev/null || true; }}; fi"
            )
        return f"{perms} && mv -f {t} {d}"

    def put_bytes(self, data: bytes, remote_path: str, *, mode: int | None = None, become: Become | None = None) -> None:
        if len(data) > SMALL_UPLOAD:
            with tempfile.NamedTemporaryFile(delete=False) as handle:
                handle.write(data)
                tmp_local = handle.name
            try:
                self.put_file(tmp_local, remote_path, mode=mode, become=become)
            finally:
                os.unlink(tmp_local)
            return
        directory, name = posixpath.split(remote_path)
        tmp = posixpath.join(directory, f".{name}.glmops-tmp-{secrets.token_hex(4)}")
        script = f"base64 -d > {shlex.quote(tmp)} && {self._install_script(tmp, remote_path, mode)} || {{ rc=$?; rm -f {shlex.quote(tmp)}; exit $rc; }}"
        result = self.run(script, stdin=base64.b64encode(data) if data else b"", become=become)
        self._check(result, f"writing {remote_path}")

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
        """Upload over SFTP into a deterministic part file (resumed if an earlier upload broke off),
        check its size and sha256 on the host, then give it its mode and rename it into place.

        With become, the part file lives in the login user's home and is piped into a `sudo` that
        writes the destination, so the file is created by (and owned by) the become user.
        """
        with self._lock:
            return self._put_file(local_path, remote_path, mode=mode, become=become, progress=progress, sha256=sha256)

    def _put_file(
        self, local_path: str, remote_path: str, *, mode: int | None, become: Become | None, progress: ProgressCallback | None,
        sha256: str | None = None,
    ) -> str:
        size = os.path.getsize(local_path)
        needs_sudo = become is not None and become.user != self.user
        directory, name = posixpath.split(remote_path)
        if needs_sudo:
            home = self.run('printf %s "$HOME"').stdout or "/tmp"
            part = posixpath.join(home, f".glmops-upload-{hashlib.sha256(remote_path.encode()).hexdigest()[:16]}.part")
        else:
            part = posixpath.join(directory, f".{name}.glmops-part")
        sftp = self._sftp_client()
        offset, digest = self._resumable_offset(sftp, local_path, part, size)
        if progress:
            progress(offset, size)  # where this transfer starts: 0, or the part kept from a broken upload
        try:
            with open(local_path, "rb") as source, sftp.open(part, "ab" if offset else "wb") as target, \
                    ThreadPoolExecutor(max_workers=1) as hasher:
                target.set_pipelined(True)
                target.MAX_REQUEST_SIZE = SFTP_WRITE  # type: ignore[misc]
                source.seek(offset)
                done = offset
                hashing = None
                while chunk := source.read(CHUNK):
                    if sha256 is None:  # hashed as it is read (no second pass), in a thread while the chunk is sent
                        if hashing is not None:
                            hashing.result()
                        hashing = hasher.submit(digest.update, chunk)
                    target.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, size)
                if hashing is not None:
                    hashing.result()
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not os.path.exists(local_path):
                raise
            raise OSError(f"cannot upload to {self.host}:{part}: {exc.strerror or exc}") from None
        q = shlex.quote(part)
        verify = self.run(f"wc -c < {q} && {{ sha256sum {q} 2>/dev/null || shasum -a 256 {q}; }}")
        fields = verify.stdout.split()
        sha256 = sha256 or digest.hexdigest()
        if verify.rc != 0 or fields[:1] != [str(size)] or fields[1:2] != [sha256]:
            self.run(f"rm -f {q}")
            got = f"{fields[0]} bytes" if fields else verify.stderr.strip()
            raise OSError(
                f"upload of {local_path} to {self.host}:{remote_path} failed verification "
                f"(expected {size} bytes with the same sha256, got {got}); run again to retry"
            )
        if needs_sudo:
            tmp = posixpath.join(directory, f".{name}.glmops-tmp-{secrets.token_hex(4)}")
            t = shlex.quote(tmp)
            inner = f"cat > {t} && {self._install_script(tmp, remote_path, mode)} || {{ rc=$?; rm -f {t}; exit $rc; }}"
            install = wrap_command(inner, become=become, login_user=self.user)
            result = self.run(f"{install} < {q}; rc=$?; rm -f {q}; exit $rc")
        else:
            result = self.run(f"{self._install_script(part, remote_path, mode)} || {{ rc=$?; rm -f {q}; exit $rc; }}")
        self._check(result, f"installing {remote_path}")
        return sha256

    def _resumable_offset(self, sftp: paramiko.SFTPClient, local_path: str, part: str, size: int) -> tuple[int, Any]:
        """Bytes of an earlier, interrupted upload of the same file that can be kept (0 if none),
        and the sha256 state of the local file up to there."""
        try:
            have = sftp.stat(part).st_size or 0
        except OSError:
            return 0, hashlib.sha256()
        if have == 0 or have > size:
            return 0, hashlib.sha256()
        prefix = hashlib.sha256()
        with open(local_path, "rb") as handle:
            left = have
            while left:
                chunk = handle.read(min(CHUNK, left))
                prefix.update(chunk)
                left -= len(chunk)
        q = shlex.quote(part)
        remote = self.run(f"sha256sum {q} 2>/dev/null || shasum -a 256 {q}")
        if remote.rc == 0 and remote.stdout.split()[:1] == [prefix.hexdigest()]:
            return have, prefix
        return 0, hashlib.sha256()

    def get_file(self, remote_path: str, local_path: str, *, become: Become | None = None) -> None:
        with self._lock:
            self._get_file(remote_path, local_path, become=become)

    def _get_file(self, remote_path: str, local_path: str, *, become: Become | None) -> None:
        tmp = f"{local_path}.glmops-tmp-{secrets.token_hex(4)}"
        try:
            if become is not None and become.user != self.user:
                result = self.run(f"base64 < {shlex.quote(remote_path)}", become=become)
                self._check(result, f"reading {remote_path}")
                with open(tmp, "wb") as handle:
                    handle.write(base64.b64decode(result.stdout))
            else:
                self._sftp_client().get(remote_path, tmp)
            os.replace(tmp, local_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # noqa: BLE001
                pass
            self._sftp = None
        if self._shell is not None:
            self._shell.close()
            self._shell = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None

