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


def _dead(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


def _impostor() -> subprocess.Popen:
    """An unrelated process whose command line says "tunnel" (what the old check accepted)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "not-a-glmops-tunnel"])


def test_stop_spares_a_process_that_reused_a_dead_tunnels_pid(inventory, env, service, tmp_path):
    local = free_port()
    started = glmops(["tunnel", "box", "-i", inventory, "--local-port", str(local), "--remote-port", str(service.port), "--background"], env)
    assert started.returncode == 0, started.stderr
    path = tmp_path / "state" / "glmops" / "tunnels" / f"box-{local}.json"
    state = json.loads(path.read_text())
    os.kill(state["pid"], signal.SIGKILL)  # killed hard: its state file stays behind
    deadline = time.monotonic() + 10
    while not _dead(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    impostor = _impostor()
    try:
        path.write_text(json.dumps({**state, "pid": impostor.pid}))  # as if the kernel gave the pid to it
        stopped = glmops(["tunnel", "stop", "box"], env)
        assert stopped.returncode == 0 and "no tunnel to box is open" in stopped.stdout, stopped.stdout + stopped.stderr
        time.sleep(0.3)
        assert impostor.poll() is None  # not signalled: its start time is not the tunnel's
        assert state["start"] and not path.exists()  # the start time recorded when the tunnel came up; a stale state
        # a state file of an older glmops (no start time) naming a live process: not signalled, said so
        path.write_text(json.dumps({key: value for key, value in state.items() if key != "start"} | {"pid": impostor.pid}))
        status = glmops(["tunnel", "status"], env)
        assert status.returncode == 0 and "records no start time" in status.stderr and "no tunnels open" in status.stdout
        old = glmops(["tunnel", "stop", "--all"], env)
        assert old.returncode == 1 and f"not closed: pid {impostor.pid} runs" in old.stderr and "older glmops" in old.stderr
        time.sleep(0.3)
        assert impostor.poll() is None and path.exists()
    finally:
        impostor.kill()
        impostor.wait()
    assert "no tunnels open" in glmops(["tunnel", "status"], env).stdout and not path.exists()


@pytest.mark.parametrize("content", ['{"pid": 99999999999, "host": "box", "url": "http://127.0.0.1:1"}', '{"pid": -4}',
                                     '{"pid": true}', "[1, 2]", "{not json"])
def test_a_broken_state_file_is_stale_not_a_traceback(env, tmp_path, content):
    folder = tmp_path / "state" / "glmops" / "tunnels"
    folder.mkdir(parents=True)
    (folder / "box-6006.json").write_text(content)
    status = glmops(["tunnel", "status"], env)
    assert status.returncode == 0 and "no tunnels open" in status.stdout, status.stdout + status.stderr
    assert "ignoring the tunnel state file" in status.stderr and "removed it" in status.stderr and "Traceback" not in status.stderr
    assert not (folder / "box-6006.json").exists()
    (folder / "box-6006.json").write_text(content)
    stopped = glmops(["tunnel", "stop", "--all"], env)
    assert stopped.returncode == 0 and "no tunnels open" in stopped.stdout and "Traceback" not in stopped.stderr
    assert "ignoring the tunnel state file" in stopped.stderr


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
    finally:
        assert tunnel.stop() == 0


def test_frozen_session_is_detected_by_keepalive(inventory, env, service, server):
    local = free_port()
    tunnel = Foreground(["box", "-i", inventory, "--local-port", str(local), "--remote-port", str(service.port), "--keepalive", "0.5"], env)
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


@pytest.fixture
def separate_host(tmp_path: Path) -> Iterator[tuple[SshServer, int]]:
    """A host of its own (RECIPES section 3): a network namespace joined to this one by a veth pair,
    with an sshd and an HTTP server on the namespace's own 127.0.0.1, which this side cannot reach."""
    tag = f"{os.getpid() % 10000}{threading.get_ident() % 100}"
    name, outside = f"glmt{tag}", f"glmt{tag}a"
    subnet = f"10.254.{os.getpid() % 250}"

    def ip(*args: str, netns: bool = False) -> None:
        subprocess.run(["ip", *(["netns", "exec", name, "ip"] if netns else []), *args], check=True, capture_output=True)

    processes: list[subprocess.Popen] = []
    server = None
    try:
        ip("netns", "add", name)
        ip("link", "add", outside, "type", "veth", "peer", "name", "eth1", "netns", name)
        ip("addr", "add", f"{subnet}.1/30", "dev", outside)
        ip("link", "set", outside, "up")
        ip("addr", "add", f"{subnet}.2/30", "dev", "eth1", netns=True)
        ip("link", "set", "eth1", "up", netns=True)
        ip("link", "set", "lo", "up", netns=True)
        web = tmp_path / "web"
        web.mkdir()
        (web / "health").write_text('{"status":"inside"}')
        port = 6006
        processes.append(subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                           "--directory", str(web), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        server = SshServer(str(tmp_path / "sshd"), host=f"{subnet}.2", fast_shell=True, netns=name).start()
        deadline = time.monotonic() + 10
        while subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c",
                              f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)"],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "the HTTP server in the namespace did not start"
            time.sleep(0.1)
        yield server, port
    finally:
        if server is not None:
            server.stop()
        for proc in processes:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", outside], capture_output=True)  # gone with the namespace already, normally


def test_reaches_a_port_only_the_host_itself_sees(separate_host, tmp_path, env):
    server, port = separate_host
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"gpu": server.hostvars()}}}))
    local = free_port()
    tunnel = Foreground(["gpu", "-i", str(inventory), "--local-port", str(local)], env)  # default remote port: 6006
    try:
        tunnel.wait_for(" up")
        assert get(local) == b'{"status":"inside"}'
        assert any(f"-> gpu:{port} (root@{server.host}:2222" in line for line in tunnel.lines), tunnel.lines
    finally:
        assert tunnel.stop() == 0


def test_gives_up_when_the_host_key_changes_while_reconnecting(tmp_path, env, server, service):
    known = tmp_path / "known_hosts"
    known.write_text(Path(server.known_hosts).read_text())
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"box": {**server.hostvars(), "glmops_known_hosts": str(known)}}}}))
    local = free_port()
    tunnel = Foreground(["box", "-i", str(inventory), "--local-port", str(local), "--remote-port", str(service.port)], env)
    try:
        tunnel.wait_for(" up")
        other = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        known.write_text(f"[{server.host}]:{server.port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
        for pid in server.sessions():
            os.kill(pid, signal.SIGKILL)
        code = tunnel.proc.wait(30)
    finally:
        tunnel.stop()
    output = "\n".join(tunnel.lines)
    assert code == 4, output
    assert "giving up" in output and "HOST KEY CHANGED" in output and "Traceback" not in output
    assert port_is_free(local)
