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
import secrets
import select
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paramiko

from glmops.connection.base import (Become, CommandResult, CommandTimeout, Connection, LineCallback, LineSplitter, ProgressCallback,
                                    RunInterrupted, install_script, private_create, wrap_command)
from glmops.connection.partfile import (MISMATCH_RC, finish_script, follow_sha256_script, parse_verified, prepare_part_script,
                                        part_name, resume_offset, sha256_cmd)
from glmops.connection.sshopts import SSHSettings
from glmops.errors import AuthenticationFailure, ConnectionFailure, HostKeyError

CHUNK = 1 << 20
# SFTP write requests that fit one SSH packet (OpenSSH channels take 32 KiB packets; paramiko's
# default 32 KiB requests plus their header took two packets each: about 1.3x slower here).
SFTP_WRITE = 32768 - 128
SMALL_UPLOAD = 512 * 1024  # below this, files go through the shell (base64) instead of SFTP
STREAM_HASH_MIN = 1024 * 1024  # from this many new bytes on, the host hashes an upload while it arrives
FOLLOW_TIMEOUT = 600.0  # seconds the host-side hash may take to catch up after the last byte was written
HOST_KEY_POLICIES = ("yes", "accept-new", "no")
# Host key algorithms in the order we ask for them when known_hosts has none for the host yet.
PREFERRED_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256")
_RECORD_LOCK = threading.Lock()  # accept-new: hosts connecting in parallel append to one file


def _update_all(hashers: list[Any], chunk: bytes) -> None:
    """Feed one chunk to every hash (the whole file and, on a resume, the new suffix)."""
    for hasher in hashers:
        hasher.update(chunk)


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

    def __init__(self, begin: bytes, end: bytes, with_rc: bool, lines: LineSplitter | None = None):
        self.begin, self.end, self.with_rc = begin, end, with_rc
        self.lines = lines  # gets the command's bytes as soon as they cannot be part of the end marker
        self.sent = 0
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
            if self.lines is not None:
                held = self._held()
                self._send(len(self.buf) - held)
                if held:  # the marker starts with a newline: the text before it is a whole line either way
                    self.lines.line_done()
            return
        self._send(at)
        if self.with_rc:
            newline = self.buf.find(b"\n", at + len(self.end))
            if newline < 0:
                self.scan = at
                return
            self.rc = int(self.buf[at + len(self.end) : newline])
        self.data = bytes(self.buf[:at])
        self.buf = bytearray()
        if self.lines is not None:
            self.lines.flush()

    def _held(self) -> int:
        """How many bytes at the end of the buffer could be the beginning of the end marker."""
        at = self.buf.find(b"\n", max(self.sent, len(self.buf) - len(self.end) + 1))
        while at >= 0:
            if self.end.startswith(self.buf[at:]):
                return len(self.buf) - at
            at = self.buf.find(b"\n", at + 1)
        return 0

    def _send(self, upto: int) -> None:
        """Pass the command's output up to `upto` (exclusive) on to the line callback."""
        if self.lines is not None and upto > self.sent:
            self.lines.feed(bytes(self.buf[self.sent : upto]))
            self.sent = upto

    def partial(self) -> str:
        """What the command wrote so far (it will not end normally); the line callback gets the rest."""
        if self.data is None and self.lines is not None:
            self._send(len(self.buf))
            self.lines.flush()
        return (self.data if self.data is not None else bytes(self.buf)).decode(errors="replace")


class RemoteShell:
    """The long-lived `sh` on one channel, fed one command at a time."""

    def __init__(self, transport: paramiko.Transport, dead: Callable[[], str | None] = lambda: None):
        self._dead = dead  # says why the host was given up on (keepalives unanswered), else None
        self.channel = transport.open_session(timeout=60)
        self.channel.exec_command("exec /bin/sh")
        self._fd = self.channel.fileno()  # makes select() wake for stdout and stderr data
        first = self.execute("echo $$", stdin=None, timeout=60)
        if first.rc != 0 or not first.stdout.strip().isdigit():
            raise ConnectionFailure(f"the remote shell did not start: {first.stderr.strip() or first.stdout.strip()}")
        self.pid = int(first.stdout.strip())  # also its process group: sshd starts sessions with setsid()

    def alive(self) -> bool:
        return not (self.channel.closed or self.channel.exit_status_ready())

    def execute(self, script: str, *, stdin: bytes | None, timeout: float | None,
                on_line: LineCallback | None = None) -> CommandResult:
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
        out_lines, err_lines = (LineSplitter("stdout", on_line), LineSplitter("stderr", on_line)) if on_line else (None, None)
        out = _Stream(f"{token}_b\n".encode(), f"\n{token}_rc=".encode(), with_rc=True, lines=out_lines)
        err = _Stream(f"{token}_b\n".encode(), f"\n{token}_e\n".encode(), with_rc=False, lines=err_lines)
        self.channel.sendall(line.encode())
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            while self.channel.recv_ready():
                out.feed(self.channel.recv(CHUNK))
            while self.channel.recv_stderr_ready():
                err.feed(self.channel.recv_stderr(CHUNK))
            if out.data is not None and err.data is not None:
                return CommandResult(out.rc or 0, out.data.decode(errors="replace"), err.data.decode(errors="replace"))
            reason = self._dead()
            if reason:
                raise EOFError(reason)
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


class Keepalive:
    """ssh's ServerAliveInterval / ServerAliveCountMax for one transport.

    Every `interval` seconds the server is asked for a reply (a `keepalive@openssh.com` global
    request, as ssh sends). When `count` intervals pass without that reply, the host is taken as
    gone (frozen VM, network dropped without a reset): the transport is closed, which ends every
    wait on it (commands, SFTP, channel opens), and `reason` says how long it waited.
    """

    def __init__(self, transport: paramiko.Transport, interval: float, count: int, label: str):
        self.transport, self.interval, self.count, self.label = transport, interval, count, label
        self.reason: str | None = None
        self._stop = threading.Event()
        if interval > 0:
            threading.Thread(target=self._loop, name=f"glmops-keepalive-{label}", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.transport.is_active():
                return
            answered = threading.Event()

            def ask() -> None:
                try:
                    self.transport.global_request("keepalive@openssh.com", wait=True)
                except Exception:  # noqa: BLE001 - a dead transport: the loop sees it
                    pass
                finally:
                    answered.set()

            asked = time.monotonic()
            threading.Thread(target=ask, daemon=True).start()
            missed = 0
            while not answered.wait(self.interval):
                if self._stop.is_set() or not self.transport.is_active():
                    return
                missed += 1
                if missed >= self.count:
                    waited = time.monotonic() - asked
                    self.reason = (
                        f"{self.label} stopped answering: no reply to keepalives for {waited:.0f} s "
                        f"(ServerAliveInterval {self.interval:g} s, ServerAliveCountMax {self.count})"
                    )
                    self.transport.close()
                    return

    def stop(self) -> None:
        self._stop.set()


class SSHConnection(Connection):
    """A host reached over SSH with paramiko (through ProxyJump hosts when configured)."""

    def __init__(
        self,
        host: str,
        *,
        hostname: str | None = None,
        port: int = 22,
        user: str | None = None,
        key_filename: str | None = None,
        password: str | None = None,
        known_hosts: str = "~/.ssh/known_hosts",
        host_key_checking: str = "yes",
        connect_timeout: float = 10.0,
        settings: SSHSettings | None = None,
        become_password: str | None = None,
    ):
        if settings is None:
            settings = SSHSettings(
                hostname=hostname or host, port=port, user=user, key_filenames=[key_filename] if key_filename else [],
                explicit_key=key_filename, known_hosts=known_hosts, host_key_checking=host_key_checking,
            )
        self.settings = settings
        self.warnings = list(settings.warnings)  # unsupported ssh options: the runner shows them once
        self.host = host
        self.hostname = settings.hostname
        self.port = settings.port
        self.user = settings.user or getpass.getuser()
        self.key_filename = os.path.expanduser(settings.explicit_key) if settings.explicit_key else None
        self.password = password
        self.become_password = become_password
        self.verifier = HostKeyVerifier(settings.known_hosts, settings.host_key_checking)
        self.connect_timeout = connect_timeout
        self.transport: paramiko.Transport | None = None
        self._jumps: list[paramiko.Transport] = []
        self._keepalives: list[Keepalive] = []
        self._askpass: str | None = None
        self._shell: RemoteShell | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()  # one command at a time on the shell
        self._interrupted = False  # Ctrl-C: the running command was stopped, later ones are refused

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

    def _key_types(self, offered: tuple[str, ...], hostname: str, port: int) -> tuple[str, ...]:
        """Host key algorithms: those known_hosts has for this host first, then ed25519, ..."""
        wanted: list[str] = []
        for known in self.verifier.known_types(hostname, port):
            wanted += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if known == "ssh-rsa" else [known]
        wanted += PREFERRED_KEY_TYPES
        first = [k for k in dict.fromkeys(wanted) if k in offered]
        return tuple(first + [k for k in offered if k not in first])

    def _connect(self) -> None:
        jumps = self.settings.proxy_jump
        try:
            if not jumps:
                sock: socket.socket | paramiko.Channel = self._tcp(self.hostname, self.port)
            else:
                sock = self._tcp(jumps[0].hostname, jumps[0].port, via=f" (jump host {jumps[0].hostname})")
                for index, hop in enumerate(jumps):
                    user = hop.user or getpass.getuser()  # as ssh: the local user, not the target's
                    label = f"jump host {user}@{hop.hostname}:{hop.port}"
                    transport = self._handshake(sock, hop.hostname, hop.port, user,
                                                hop.key_filenames + self.settings.key_filenames, None, label)
                    self._jumps.append(transport)
                    self._keepalives.append(self._keepalive(transport, label))
                    target = jumps[index + 1] if index + 1 < len(jumps) else None
                    address = (target.hostname, target.port) if target else (self.hostname, self.port)
                    try:
                        sock = transport.open_channel("direct-tcpip", address, ("127.0.0.1", 0), timeout=self.connect_timeout)
                    except (paramiko.ChannelException, paramiko.SSHException, OSError, EOFError) as exc:
                        reason = exc.text if isinstance(exc, paramiko.ChannelException) else str(exc) or type(exc).__name__
                        raise ConnectionFailure(f"{label} cannot reach {address[0]}:{address[1]}: {reason}",
                                                hint="check the host and port as the jump host sees them (ProxyJump)") from None
            self.transport = self._handshake(sock, self.hostname, self.port, self.user, self.settings.key_filenames,
                                             self.password, self._where())
        except BaseException:
            self._close_jumps()
            raise
        self._keepalives.append(self._keepalive(self.transport, self.host))

    def _keepalive(self, transport: paramiko.Transport, label: str) -> Keepalive:
        return Keepalive(transport, self.settings.keepalive_interval, self.settings.keepalive_count, label)

    def _tcp(self, hostname: str, port: int, via: str = "") -> socket.socket:
        try:
            sock = socket.create_connection((hostname, port), timeout=self.connect_timeout)
        except socket.gaierror as exc:
            raise ConnectionFailure(f"cannot resolve host name {hostname!r}{via}: {exc.strerror}") from None
        except (ConnectionRefusedError, TimeoutError, OSError) as exc:
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else (
                "timed out" if isinstance(exc, (TimeoutError, socket.timeout)) else str(exc.strerror or exc)
            )
            raise ConnectionFailure(f"cannot connect to {hostname}:{port}{via}: {reason}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _handshake(self, sock: socket.socket | paramiko.Channel, hostname: str, port: int, user: str,
                   keys: list[str], password: str | None, label: str) -> paramiko.Transport:
        """SSH handshake, host key check and login on `sock`; returns the authenticated transport."""
        transport = paramiko.Transport(sock)
        transport.banner_timeout = self.connect_timeout  # a port that accepts but never speaks SSH
        transport.auth_timeout = max(self.connect_timeout, 30.0)
        options = transport.get_security_options()
        preferred = [k for k in ("curve25519-sha256", "curve25519-sha256@libssh.org") if k in options.kex]
        options.kex = tuple(preferred + [k for k in options.kex if k not in preferred])
        # AES-GCM first: one AEAD call per packet instead of AES-CTR plus a separate HMAC (bulk
        # transfers through `glmops tunnel` ran about 1.3x faster here). OpenSSH offers it since
        # 6.2; servers without it get AES-CTR as before.
        gcm = [c for c in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if c in options.ciphers]
        options.ciphers = tuple(gcm + [c for c in options.ciphers if c not in gcm])
        options.key_types = self._key_types(tuple(options.key_types), hostname, port)
        try:
            transport.start_client(timeout=self.connect_timeout)
            self.verifier.verify(hostname, port, transport.get_remote_server_key())
            self._authenticate(transport, user, keys, password)
        except HostKeyError:
            transport.close()
            raise
        except ConnectionFailure:
            transport.close()
            raise
        except paramiko.AuthenticationException as exc:
            transport.close()
            raise AuthenticationFailure(
                f"authentication failed for {label}: {exc}",
                hint="check ansible_user and ansible_ssh_private_key_file (or give the password with --ask-pass)",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise ConnectionFailure(f"SSH handshake with {hostname}:{port} failed: {exc or type(exc).__name__}") from None
        return transport

    def _authenticate(self, transport: paramiko.Transport, user: str, keys: list[str], password: str | None) -> None:
        """Keys named for the host, then the password, then ssh-agent and ~/.ssh/id_*, as ssh does."""
        tried: set[str] = set()
        for path in keys:
            explicit = path == self.key_filename
            if not os.path.exists(path):
                if explicit:
                    raise ConnectionFailure(f"private key file not found: {path}")
                continue  # ssh skips a missing IdentityFile from its config too
            tried.add(path)
            try:
                key = paramiko.PKey.from_path(path)
            except paramiko.PasswordRequiredException:
                if explicit:
                    raise ConnectionFailure(f"private key {path} is encrypted; load it into ssh-agent") from None
                continue
            except (paramiko.SSHException, ValueError) as exc:
                if explicit:
                    raise ConnectionFailure(f"cannot read private key {path}: {exc}") from None
                continue
            try:
                transport.auth_publickey(user, key)
                return
            except paramiko.AuthenticationException:
                continue
        if password is not None:
            secret = str(password)
            try:
                transport.auth_password(user, secret)
                return
            except paramiko.BadAuthenticationType as exc:
                if "keyboard-interactive" not in exc.allowed_types:
                    raise
            # Servers with PasswordAuthentication off often still ask for the password this way.
            transport.auth_interactive(user, lambda _title, _text, prompts: [secret for _ in prompts])
            return
        # No key or password worked: the agent, then the user's default keys, as ssh does.
        try:
            agent_keys = paramiko.Agent().get_keys()
        except paramiko.SSHException:
            agent_keys = ()
        for key in agent_keys:
            try:
                transport.auth_publickey(user, key)
                return
            except paramiko.AuthenticationException:
                continue
        for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
            path = os.path.expanduser(f"~/.ssh/{name}")
            if os.path.exists(path) and path not in tried:
                try:
                    transport.auth_publickey(user, paramiko.PKey.from_path(path))
                    return
                except (paramiko.AuthenticationException, paramiko.SSHException):
                    continue
        raise paramiko.AuthenticationException("no key or password was accepted")

    def dead_reason(self) -> str | None:
        """Why the host was given up on by a keepalive (None while it answers)."""
        for keepalive in self._keepalives:
            if keepalive.reason:
                return keepalive.reason
        return None

    def _ensure_shell(self) -> RemoteShell:
        self.connect()
        if self._shell is None or not self._shell.alive():
            if self._shell is not None:
                self._shell.close()
            try:
                self._shell = RemoteShell(self.transport, dead=self.dead_reason)  # type: ignore[arg-type]
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise self._lost(exc, f"cannot open a shell on {self._where()}") from None
        return self._shell

    def _lost(self, exc: BaseException, what: str | None = None) -> ConnectionFailure:
        """The error for a connection that broke: says how long a frozen host was waited for."""
        reason = self.dead_reason()
        if reason:
            return ConnectionFailure(f"{self.host} ({self._where()}): {reason}",
                                     hint="the host or the network to it is down or frozen; the other hosts went on")
        return ConnectionFailure(f"{what or f'lost the connection to {self._where()}'}: {exc or type(exc).__name__}")

    # -- commands -------------------------------------------------------------------------
    def _wrap(self, cmd: str, *, env: Mapping[str, str] | None = None, cwd: str | None = None,
              become: Become | None = None) -> str:
        """wrap_command, with sudo fed the become password through SUDO_ASKPASS when one was given.

        The password travels inside the line the long-lived shell reads (never in any argv) and
        reaches sudo as an environment variable that sudo's env_reset removes from the command.
        """
        script = wrap_command(cmd, env=env, cwd=cwd, become=become, login_user=self.user)
        if self.become_password is None or not script.startswith("sudo -n "):
            return script
        askpass = self._askpass_script()
        return (f"GLMOPS_SUDO_PASS={shlex.quote(self.become_password)} SUDO_ASKPASS={shlex.quote(askpass)} "
                f"sudo -A {script[len('sudo -n '):]}")

    def _askpass_script(self) -> str:
        """A private helper on the host that prints $GLMOPS_SUDO_PASS (it holds no secret itself)."""
        if self._askpass is None:
            body = "#!/bin/sh\nprintf '%s\\n' \"$GLMOPS_SUDO_PASS\"\n"
            made = self.run(
                'd=$(mktemp -d "${TMPDIR:-/tmp}/glmops-askpass.XXXXXX") && '
                f'printf %s {shlex.quote(body)} > "$d/askpass" && chmod 700 "$d/askpass" && printf %s "$d/askpass"'
            )
            if made.rc != 0 or not made.stdout.startswith("/"):
                raise ConnectionFailure(f"cannot prepare sudo's password helper on {self._where()}: {made.stderr.strip()}")
            self._askpass = made.stdout
        return self._askpass

    def _exec(self, script: str, *, stdin: bytes | None, timeout: float | None, on_line: LineCallback | None) -> CommandResult:
        with self._lock:
            if self._interrupted:
                raise RunInterrupted(self.host)
            shell = self._ensure_shell()
            try:
                result = shell.execute(script, stdin=stdin, timeout=timeout, on_line=on_line)
                if self._interrupted:
                    raise RunInterrupted(self.host)
                return result
            except CommandTimeout:
                self._kill_shell(shell)
                raise
            except (EOFError, OSError, paramiko.SSHException) as exc:
                shell.close()
                self._shell = None
                if self._interrupted:
                    raise RunInterrupted(self.host) from None
                if self.transport is None or not self.transport.is_active() or self.dead_reason():
                    raise self._lost(exc) from None
                return CommandResult(255, "", f"the remote shell ended unexpectedly (the command ended it): {exc}")

    def interrupt(self) -> None:
        """Ctrl-C: kill the remote shell's process group (the running command with it), from another thread."""
        self._interrupted = True
        shell, transport = self._shell, self.transport
        if shell is None or transport is None or not transport.is_active():
            return
        try:
            channel = transport.open_session(timeout=5)
            channel.exec_command(f"kill -TERM -- -{shell.pid} 2>/dev/null; sleep 0.2; kill -KILL -- -{shell.pid} 2>/dev/null")
            channel.recv_exit_status()
            channel.close()
        except (paramiko.SSHException, OSError, EOFError):
            pass

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
        t = shlex.quote(tmp)
        script = f"{private_create(f'base64 -d > {t}')} && {install_script(tmp, remote_path, mode)} || {{ rc=$?; rm -f {t}; exit $rc; }}"
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
            try:
                return self._put_file(local_path, remote_path, mode=mode, become=become, progress=progress, sha256=sha256)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if self.dead_reason():
                    raise self._lost(exc) from None
                raise

    def _put_file(
        self, local_path: str, remote_path: str, *, mode: int | None, become: Become | None, progress: ProgressCallback | None,
        sha256: str | None = None,
    ) -> str:
        size = os.path.getsize(local_path)
        needs_sudo = become is not None and become.user != self.user
        directory, name = posixpath.split(remote_path)
        part = self._part_path(remote_path, needs_sudo)
        sftp = self._sftp_client()
        have = self._prepare_part(part)
        offset, digest = self._resumable_offset(local_path, part, have, size)
        # What the controller hashes while sending: the whole file unless the caller knows its sha256,
        # and on a resume also the new suffix alone (the host hashes only the bytes that arrive).
        suffix = hashlib.sha256() if offset else None
        hashers = [h for h in (digest if sha256 is None or offset else None, suffix) if h is not None]
        if progress:
            progress(offset, size)  # where this transfer starts: 0, or the part kept from a broken upload
        follow: paramiko.Channel | None = None
        try:
            # "r+": never created (nor a symlink followed to create one) by SFTP; _prepare_part made it
            with open(local_path, "rb") as source, sftp.open(part, "r+b") as target, \
                    ThreadPoolExecutor(max_workers=1) as hasher:
                if have and not offset:
                    target.truncate(0)  # a part that was not a prefix of this file: start over
                target.seek(offset)
                target.set_pipelined(True)
                target.MAX_REQUEST_SIZE = SFTP_WRITE  # type: ignore[misc]
                if size - offset >= STREAM_HASH_MIN:
                    follow = self._follow_part(part, offset)
                source.seek(offset)
                done = offset
                hashing = None
                while chunk := source.read(CHUNK):
                    if self._interrupted:  # Ctrl-C: stop now; what was written stays a resumable prefix
                        raise RunInterrupted(self.host)
                    if hashers:  # hashed as it is read (no second pass), in a thread while the chunk is sent
                        if hashing is not None:
                            hashing.result()
                        hashing = hasher.submit(_update_all, hashers, chunk)
                    target.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, size)
                if hashing is not None:
                    hashing.result()
            # the part file is closed: every write was acknowledged, so the host-side hash can end
            streamed = self._follow_result(follow) if follow is not None else None
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not os.path.exists(local_path):
                raise
            raise OSError(f"cannot upload to {self.host}:{part}: {exc.strerror or exc}") from None
        finally:
            if follow is not None:
                follow.close()
        q = shlex.quote(part)
        sha256 = sha256 or digest.hexdigest()
        if needs_sudo:
            tmp = posixpath.join(directory, f".{name}.glmops-tmp-{secrets.token_hex(4)}")
            t = shlex.quote(tmp)
            inner = f"{private_create(f'cat > {t}')} && {install_script(tmp, remote_path, mode)} || {{ rc=$?; rm -f {t}; exit $rc; }}"
            install = f"{self._wrap(inner, become=become)} < {q}; rc=$?; rm -f {q}; exit $rc"
        else:
            install = f"{install_script(part, remote_path, mode)} || {{ rc=$?; rm -f {q}; exit $rc; }}"
        # The host's hash of what arrived spares the second pass when it matches (with the resumed
        # prefix, already compared at resume time); otherwise the full pass decides and reports.
        wanted_suffix = suffix.hexdigest() if suffix is not None else sha256
        whole_ok = not offset or digest.hexdigest() == sha256
        hashed = sha256 if streamed is not None and streamed == wanted_suffix and whole_ok else None
        result = self.run(finish_script(part, install, size=size, sha256=sha256, hashed=hashed))
        if result.rc == MISMATCH_RC or parse_verified(result.stdout) is None:
            raise OSError(
                f"upload of {local_path} to {self.host}:{remote_path} failed verification "
                f"({result.stderr.strip() or 'no size or checksum'}); run again to retry"
            )
        self._check(result, f"installing {remote_path}")
        return sha256

    def _follow_part(self, part: str, offset: int) -> paramiko.Channel | None:
        """Start hashing the part file on the host while it is written (see follow_sha256_script);
        None when the server opens no second session (then the full pass verifies)."""
        try:
            channel = self.transport.open_session(timeout=30)  # type: ignore[union-attr]
            channel.exec_command(follow_sha256_script(part, offset))
        except paramiko.SSHException:
            return None
        return channel

    @staticmethod
    def _follow_result(channel: paramiko.Channel) -> str | None:
        """End the host-side hash (its stdin closes) and return the sha256 it printed, None if it is not to be trusted."""
        channel.shutdown_write()
        channel.settimeout(FOLLOW_TIMEOUT)
        out = err = b""
        try:
            while data := channel.recv(65536):
                out += data
            while data := channel.recv_stderr(65536):
                err += data
        except socket.timeout:
            return None  # the host fell too far behind: the full pass decides
        rc = channel.recv_exit_status()
        digest = out.decode(errors="replace").strip()
        if rc != 0 or err.strip() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            return None
        return digest

    def _part_path(self, remote_path: str, needs_sudo: bool) -> str:
        """Where an upload to `remote_path` writes first: beside it, or with sudo in the login user's home
        (then the become user copies it to the destination)."""
        if not needs_sudo:
            return part_name(remote_path)
        home = self.run('printf %s "$HOME"').stdout or "/tmp"
        return posixpath.join(home, f".glmops-upload-{hashlib.sha256(remote_path.encode()).hexdigest()[:16]}.part")

    def _prepare_part(self, part: str) -> int:
        """Make the part file a private regular file (prepare_part_script); return the bytes it holds."""
        result = self.run(prepare_part_script(part))
        if result.rc != 0 or not result.stdout.strip().isdigit():
            raise OSError(f"cannot prepare the part file {self.host}:{part}: {result.stderr.strip() or result.stdout.strip()}")
        return int(result.stdout.strip())

    def kept_parts(self, remote_paths: list[str], *, become: Become | None = None) -> dict[str, tuple[str, int]]:
        """Part files beside their destination that an interrupted put_file left; see Connection.kept_parts."""
        if not remote_paths or (become is not None and become.user != self.user):
            return {}
        parts = {part_name(path): path for path in remote_paths}
        listing = self.run("for p in " + " ".join(shlex.quote(p) for p in parts)
                           + '; do [ -f "$p" ] && [ ! -L "$p" ] && printf \'%s\\t%s\\n\' "$(wc -c < "$p" | tr -d \' \')" "$p"; done; true')
        kept: dict[str, tuple[str, int]] = {}
        for line in listing.stdout.splitlines():
            size, _, part = line.partition("\t")
            if part in parts and size.isdigit() and int(size):
                kept[parts[part]] = (part, int(size))
        return kept

    def _resumable_offset(self, local_path: str, part: str, have: int, size: int) -> tuple[int, Any]:
        """Bytes of an earlier, interrupted upload of the same file that can be kept (0 if none),
        and the sha256 state of the local file up to there (hashed once, then continued while sending)."""
        prefix = hashlib.sha256()

        def local_prefix(length: int) -> str:
            with open(local_path, "rb") as handle:
                left = length
                while left:
                    chunk = handle.read(min(CHUNK, left))
                    prefix.update(chunk)
                    left -= len(chunk)
            return prefix.hexdigest()

        def remote_sum() -> str | None:
            result = self.run(sha256_cmd(shlex.quote(part)))
            return result.stdout.strip() if result.rc == 0 else None

        offset = resume_offset(have, size, local_prefix, remote_sum)
        return offset, (prefix if offset else hashlib.sha256())

    def get_file(self, remote_path: str, local_path: str, *, become: Become | None = None) -> None:
        with self._lock:
            try:
                self._get_file(remote_path, local_path, become=become)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if self.dead_reason():
                    raise self._lost(exc) from None
                raise

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
        for keepalive in self._keepalives:
            keepalive.stop()
        self._keepalives = []
        if self._askpass is not None and self.transport is not None and self.transport.is_active() and not self.dead_reason():
            try:
                self.run(f"rm -rf -- {shlex.quote(posixpath.dirname(self._askpass))}", timeout=10)
            except Exception:  # noqa: BLE001 - best effort while closing
                pass
        self._askpass = None
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
        self._close_jumps()

    def _close_jumps(self) -> None:
        for transport in reversed(self._jumps):
            transport.close()
        self._jumps = []
