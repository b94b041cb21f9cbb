"""A private OpenSSH server on loopback for tests and benchmarks (see RECIPES: sshd on loopback)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

SSHD = "/usr/sbin/sshd"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    """PIDs of every live descendant of `pid` (read from /proc; nothing is looked up by name)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _keygen(path: str) -> None:
    if not os.path.exists(path):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)


class SshServer:
    """sshd with its own host key, client key and known_hosts, in `state_dir`.

    `fast_shell=True` adds `SetEnv SHLVL=1`, which makes root's .bashrc on this machine skip its
    pyenv setup (the default keeps the realistic, slower login shell).
    """

    def __init__(self, state_dir: str, port: int | None = None, host: str = "127.0.0.1", fast_shell: bool = False,
                 netns: str | None = None, password: str | None = None):
        self.netns = netns  # run sshd inside this network namespace (`ip netns exec`), as a separate host
        # password: root logs in with this password too (see _password_prefix), with its home in state_dir/home
        self.password = password
        self.state_dir = os.path.abspath(state_dir)
        self.host = host
        self.port = port or (2222 if netns else free_port(host))
        self.user = "root"
        self.fast_shell = fast_shell
        self.client_key = os.path.join(self.state_dir, "client_ed25519")
        self.host_key = os.path.join(self.state_dir, "host_ed25519")
        self.known_hosts = os.path.join(self.state_dir, "known_hosts")
        self.log = os.path.join(self.state_dir, "sshd.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def hostvars(self) -> dict[str, Any]:
        return {
            "ansible_host": self.host,
            "ansible_port": self.port,
            "ansible_user": self.user,
            "ansible_ssh_private_key_file": self.client_key,
            "glmops_known_hosts": self.known_hosts,
        }

    def _config(self) -> str:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key}",
            f"PidFile {self.state_dir}/sshd.pid",
            f"AuthorizedKeysFile {self.state_dir}/authorized_keys",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "AllowTcpForwarding yes",
            "PrintMotd no",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
        ]
        if self.fast_shell:
            lines.append("SetEnv SHLVL=1")  # root's .bashrc here returns early: no pyenv init per session
        if self.password is not None:
            lines = [line for line in lines if not line.startswith(("PermitRootLogin", "PasswordAuthentication", "AuthorizedKeysFile"))]
            lines += ["PermitRootLogin yes", "PasswordAuthentication yes",
                      f"AuthorizedKeysFile .ssh/authorized_keys {self.state_dir}/authorized_keys"]
        return "\n".join(lines) + "\n"

    @property
    def home(self) -> str:
        """The user's home in the sessions of a password server (its ~/.ssh/authorized_keys is read)."""
        return os.path.join(self.state_dir, "home")

    def _password_prefix(self) -> list[str]:
        """Run sshd in a private mount namespace where /etc/passwd and /etc/shadow are copies that give
        the user this server's password and a home in state_dir: sshd checks passwords without PAM
        (UsePAM no) against /etc/shadow, so the machine's own accounts and files stay untouched."""
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=self.password, capture_output=True,
                                text=True, check=True).stdout.strip()
        files = {}
        for name in ("passwd", "shadow"):
            with open(f"/etc/{name}") as handle:
                rows = [line.rstrip("\n").split(":") for line in handle if line.strip()]
            for row in rows:
                if row[0] == self.user and name == "passwd":
                    row[5] = self.home
                elif row[0] == self.user:
                    row[1] = hashed
            files[name] = os.path.join(self.state_dir, name)
            with open(files[name], "w") as handle:
                handle.write("".join(":".join(row) + "\n" for row in rows))
            os.chmod(files[name], 0o644 if name == "passwd" else 0o600)
        script = 'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/shadow && shift 2 && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", files["passwd"], files["shadow"]]

    def start(self) -> "SshServer":
        """Write keys, known_hosts and sshd_config, start sshd in the foreground, wait for the port."""
        if not os.path.exists(SSHD) or not shutil.which("ssh-keygen"):
            raise RuntimeError(f"{SSHD} or ssh-keygen is missing (openssh-server): run `bash scripts/bootstrap.sh` first")
        os.makedirs(self.state_dir, exist_ok=True)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        _keygen(self.host_key)
        _keygen(self.client_key)
        shutil.copyfile(self.client_key + ".pub", os.path.join(self.state_dir, "authorized_keys"))
        os.chmod(os.path.join(self.state_dir, "authorized_keys"), 0o600)
        with open(self.host_key + ".pub") as handle:
            keytype, key = handle.read().split()[:2]
        with open(self.known_hosts, "w") as handle:
            handle.write(f"[{self.host}]:{self.port} {keytype} {key}\n")
        config = os.path.join(self.state_dir, "sshd_config")
        with open(config, "w") as handle:
            handle.write(self._config())
        check = subprocess.run([SSHD, "-t", "-f", config], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd rejected {config}: {check.stderr.strip()}")
        with open(self.log, "ab") as log:
            prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
            if self.password is not None:
                prefix += self._password_prefix()
            self.proc = subprocess.Popen([*prefix, SSHD, "-D", "-e", "-f", config], stdin=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(self.log, errors="replace") as log:
                    raise RuntimeError(f"sshd exited at start: {log.read()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sshd did not start listening on {self.host}:{self.port}")

    def sessions(self) -> list[int]:
        """PIDs of the processes this server started for its clients (sessions and their commands)."""
        return _children(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def stop(self) -> None:
        """Stop the listener and every session it started (by PID). Safe to call twice."""
        if self.proc is None:
            return
        leftovers = self.sessions()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc = None

    def __enter__(self) -> "SshServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
