"""`glmops tunnel` end to end: the real command, a real sshd, a real HTTP server as the remote service."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from httpserver import LoopbackHTTPServer
from sshd import SshServer, free_port

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = os.urandom(3 * 1024 * 1024)


@pytest.fixture(scope="module")
def server(sshd_factory) -> SshServer:
    """An sshd of its own: the reconnect test kills its session processes."""
    return sshd_factory(fast_shell=True)


@pytest.fixture(scope="module")
def service() -> Iterator[LoopbackHTTPServer]:
    """The 'remote' API server: /health and a 3 MB file."""
    with LoopbackHTTPServer() as http:
        http.files["/health"] = b'{"status":"ok"}'
        http.files["/big"] = PAYLOAD
        yield http


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Environment for the glmops processes: this checkout first, a private state directory."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def inventory(tmp_path: Path, server: SshServer) -> str:
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": {"box": server.hostvars()}}}))
    return str(path)


def glmops(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glmops", *args], env=env, capture_output=True, text=True, timeout=60, **kwargs)


class Foreground:
    """`glmops tunnel` in the foreground; its output lines are collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "glmops", "tunnel", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                self.reader.join(5)
                break
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} in the output:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(5)


def get(port: int, path: str = "/health", timeout: float = 10) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        return response.read()


def port_is_free(port: int) -> bool:
    """Nothing listens on the port: a server can bind it (with SO_REUSEADDR, as servers do, since
    the closed connections of the tunnel linger in TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True


def test_forwards_requests_and_ctrl_c_frees_the_port(inventory, env, service, tmp_path):
    local = free_port()
    tunnel = Foreground(["box", "-i", inventory, "--local-port", str(local), "--remote-port", str(service.port)], env)
    try:
        tunnel.wait_for(" up")
        assert any(f"http://127.0.0.1:{local} -> box:{service.port}" in line for line in tunnel.lines), tunnel.lines
        assert get(local) == b'{"status":"ok"}'
        assert get(local, "/big") == PAYLOAD  # 3 MB, byte for byte
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda: results.append(get(local, "/big"))) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert results == [PAYLOAD] * 8  # concurrent clients, one channel each
        listed = json.loads(glmops(["tunnel", "status", "--json"], env).stdout)
        assert [(t["host"], t["local_port"], t["mode"], t["health"]) for t in listed] == [("box", local, "foreground", "ok")]
    finally:
        code = tunnel.stop()
    assert code == 0, tunnel.lines
    assert any("closed" in line for line in tunnel.lines)
    assert port_is_free(local)
    assert not list((tmp_path / "state" / "glmops" / "tunnels").glob("*.json"))


def test_background_status_stop(inventory, env, service):
    local = free_port()
    started = glmops(["tunnel", "box", "-i", inventory, "--local-port", str(local), "--remote-port", str(service.port), "--background"], env)
    assert started.returncode == 0, started.stderr
    assert f"http://127.0.0.1:{local} -> box:{service.port}" in started.stdout
    try:
        assert get(local) == b'{"status":"ok"}'
        table = glmops(["tunnel", "status"], env)
        assert table.returncode == 0 and "box" in table.stdout and " ok " in table.stdout, table.stdout
        listed = json.loads(glmops(["tunnel", "status", "--json"], env).stdout)
        assert len(listed) == 1 and listed[0]["mode"] == "background"
        pid = listed[0]["pid"]
        again = glmops(["tunnel", "box", "-i", inventory, "--local-port", str(local), "--remote-port", str(service.port), "--background"], env)
        assert again.returncode == 0 and "already open" in again.stdout
    finally:
        stopped = glmops(["tunnel", "stop", "box"], env)
    assert stopped.returncode == 0 and "closed the tunnel" in stopped.stdout, stopped.stdout + stopped.stderr
    assert port_is_free(local)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    assert glmops(["tunnel", "status"], env).stdout.strip() == "no tunnels open"
    assert "no tunnel to box is open" in glmops(["tunnel", "stop", "box"], env).stdout


def test_reconnects_when_the_ssh_session_dies(inventory, env, service, server):
    local = free_port()
    tunnel = Foreground(["box", "-i", inventory, "--local-port", str(local), "--remote-port", str(service.port)], env)
    try:
        tunnel.wait_for(" up")
        assert get(local) == b'{"status":"ok"}'
        sessions = server.sessions()
        assert sessions, "the tunnel's sshd session process"
        for pid in sessions:  # the sshd processes serving this tunnel's connection (children of the listener)
            os.kill(pid, signal.SIGKILL)
        tunnel.wait_for("reconnecting")
        deadline = time.monotonic() + 5
        answer = None
        while answer is None and time.monotonic() < deadline:
            try:
                answer = get(local, timeout=2)
            except OSError:
                time.sleep(0.05)
        assert answer == b'{"status":"ok"}', "\n".join(tunnel.lines)
        tunnel.wait_for("reconnected")
        assert not set(server.sessions()) & set(sessions)
    finally:
        assert tunnel.stop() == 0


def test_frozen_session_is_detected_by_keepalive(inventory, env, service, server):
    local = free_port()
    tunnel = Foreground(["box", "-i", inventory, "--local-port", str(local), "--remote-port", str(service.port), "--keepalive", "0.3"], env)
    frozen: list[int] = []
    try:
        tunnel.wait_for(" up")
        assert get(local) == b'{"status":"ok"}'
        frozen = server.sessions()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        tunnel.wait_for("no answer to keepalive")
        tunnel.wait_for("reconnected")
        assert get(local) == b'{"status":"ok"}'
    finally:
        for pid in frozen:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        assert tunnel.stop() == 0


def test_busy_local_port_names_the_holder_and_a_free_port(inventory, env, service):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        result = glmops(["tunnel", "box", "-i", inventory, "--local-port", str(busy), "--remote-port", str(service.port)], env)
    assert result.returncode != 0
    assert f"local port 127.0.0.1:{busy} is already in use" in result.stderr
    assert f"(pid {os.getpid()})" in result.stderr  # this test process holds it
    assert "--local-port " in result.stderr and "Traceback" not in result.stderr


def test_remote_port_not_listening(inventory, env):
    result = glmops(["tunnel", "box", "-i", inventory, "--local-port", str(free_port()), "--remote-port", str(free_port())], env)
    assert result.returncode != 0
    assert "nothing is listening on 127.0.0.1:" in result.stderr
    assert "is the server running? check with `glmops status HOST`" in result.stderr
    assert "Traceback" not in result.stderr


def test_background_start_failure_is_reported(inventory, env):
    result = glmops(["tunnel", "box", "-i", inventory, "--local-port", str(free_port()), "--remote-port", str(free_port()), "--background"], env)
    assert result.returncode != 0
    assert "nothing is listening" in result.stderr
    assert glmops(["tunnel", "status"], env).stdout.strip() == "no tunnels open"


def test_changed_host_key_is_refused(tmp_path, env, server, service):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(f"[{server.host}]:{server.port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    inventory = tmp_path / "bad.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"box": {**server.hostvars(), "glmops_known_hosts": str(known)}}}}))
    local = free_port()
    result = glmops(["tunnel", "box", "-i", str(inventory), "--local-port", str(local), "--remote-port", str(service.port)], env)
    assert result.returncode != 0
    assert "HOST KEY CHANGED" in result.stderr and "Traceback" not in result.stderr
    assert port_is_free(local)


def test_refused_key_gives_up(tmp_path, env, server, service):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    inventory = tmp_path / "bad.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"box": {**server.hostvars(), "ansible_ssh_private_key_file": str(stranger)}}}}))
    result = glmops(["tunnel", "box", "-i", str(inventory), "--local-port", str(free_port()), "--remote-port", str(service.port)], env)
    assert result.returncode != 0
    assert "authentication failed" in result.stderr and "Traceback" not in result.stderr


def test_unknown_host(inventory, env):
    result = glmops(["tunnel", "nosuchhost", "-i", inventory], env)
    assert result.returncode != 0
    assert "unknown host 'nosuchhost'" in result.stderr and "glmops inventory add nosuchhost" in result.stderr


def test_stop_needs_a_host_or_all(env):
    result = glmops(["tunnel", "stop"], env)
    assert result.returncode != 0 and "--all" in result.stderr
    assert glmops(["tunnel", "stop", "--all"], env).stdout.strip() == "no tunnels open"


def test_status_and_help_do_not_import_paramiko(env):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from glmops.cli import cli\n"
        "for args in (['tunnel', '--help'], ['tunnel', 'open', '--help'], ['tunnel', 'status']):\n"
        "    r = CliRunner().invoke(cli, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "assert 'paramiko' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
