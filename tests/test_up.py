"""`glmops up` and `glmops down` (issue 18): a login line to a real sshd that takes a password (root's, in a
private mount namespace: tests/sshd.py, the machine's accounts untouched), the plan, the refusal without a
terminal, a deploy of the tiny model with the `local` playbook, a streamed answer through the real tunnel, a
re-run with changed=0, and `down` leaving no process and the ports free. Bad input: not a login line, a wrong
password (nothing written), a disk that does not fit (refused before anything moves, with the numbers).

The tests of this module run in order on one host and one user config (the deploy is the expensive part).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import alive, glmops
from sshd import free_port

pytestmark = pytest.mark.timeout(900)

PASSWORD = "up-S3cret-pw"
PROMPT = "你好，请用一句话介绍你自己。"  # the question glmops up asks


class User:
    """A user of the controller: own HOME (no ~/.ssh keys), config, state and known_hosts."""

    def __init__(self, root: Path, server: Any):
        self.root, self.server = root, server
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.config = root / "config" / "glmops"
        self.env = {"HOME": str(self.home), "XDG_CONFIG_HOME": str(root / "config"), "XDG_STATE_HOME": str(root / "state"),
                    "GLMOPS_KNOWN_HOSTS": str(root / "known_hosts"), "GLMOPS_INVENTORY": ""}
        self.login = f"ssh -p {server.port} root@{server.host}"
        self.name = f"127-0-0-1-{server.port}"
        self.deploy_dir = root / "deploy"
        self.api_port, self.local_port = free_port(), free_port()

    def up(self, *args: str, input: str = "", timeout: float = 600) -> Any:
        import subprocess

        from helpers import ROOT

        env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **self.env}
        return subprocess.run([sys.executable, "-m", "glmops", "up", *args], env=env, input=input, capture_output=True,
                              text=True, timeout=timeout)

    def glmops(self, *args: str, timeout: float = 120) -> Any:
        return glmops(*args, env=self.env, timeout=timeout)

    @property
    def inventory(self) -> Path:
        return self.config / "inventory.yml"

    def deploy_vars(self) -> list[str]:
        """-e for a deploy of the tiny model to this machine (as tests/test_deploy_smoke.py's inventory)."""
        values = {"deploy_dir": str(self.deploy_dir), "api_port": self.api_port, "transformers_pin": "transformers==4.57.6",
                  "embedding_model": "none", "server_health_timeout": 600}
        return [arg for key, value in values.items() for arg in ("-e", f"{key}={value}")]


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory, sshd_factory: Any) -> Any:
    server = sshd_factory(password=PASSWORD, fast_shell=True)
    person = User(tmp_path_factory.mktemp("up"), server)
    yield person
    person.glmops("tunnel", "stop", "--all")
    pid_file = person.deploy_dir / "run" / "server.pid"
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text().split()[0]), 9)
        except (OSError, ValueError):
            pass


def _port_free(port: int) -> bool:
    """Whether a new server could listen on the port (connections in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _no_traceback(done: Any) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("line, expected", [
    ("ssh -p notaport root@region-9.autodl.com", "invalid port 'notaport'"),
    ("ssh -p 12345 root@region-9.autodl.com uptime", "unexpected word 'uptime' after the host"),
    ("ssh -Z root@host", "unknown ssh option '-Z'"),
    ("no-such-host", "is neither a login line nor a host in"),
])
def test_not_a_login_line_is_refused_with_what_was_expected(tmp_path: Path, line: str, expected: str) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    done = glmops("up", line, "-y", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert expected in done.stderr and "ssh -p 12345 root@region-9.autodl.com" in done.stderr, done.stderr
    _no_traceback(done)
    assert not (tmp_path / "config" / "glmops" / "inventory.yml").exists()


@pytest.mark.parametrize("option, expected", [
    (("--playbook", "no-such-playbook"), "no playbook 'no-such-playbook'"),
    (("--profile", "fp64"), "unknown profile 'fp64'"),
])
def test_bad_options_are_refused_before_logging_in(tmp_path: Path, option: tuple[str, str], expected: str) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    done = glmops("up", f"ssh -p {free_port()} root@127.0.0.1", *option, "-y", env=env)  # nothing listens there
    assert done.returncode == 1 and expected in done.stderr and "connection refused" not in done.stderr, done.stderr
    _no_traceback(done)


def test_a_refused_password_writes_nothing(user: User) -> None:
    done = user.up(user.login, "-y", input="wrong-password\n")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "authentication failed" in done.stderr
    _no_traceback(done)
    assert not user.inventory.exists(), "nothing is recorded for a host that refused the login"
    assert not (Path(user.server.home) / ".ssh" / "authorized_keys").exists()
    assert "wrong-password" not in done.stdout + done.stderr


# -- the plan -------------------------------------------------------------------------------
def test_password_once_then_key_plan_and_no_terminal_refuses(user: User) -> None:
    done = user.up(user.login, "--playbook", "local", "--profile", "cpu", "--local-port", str(user.local_port),
                   *user.deploy_vars(), input=PASSWORD + "\n")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "stdin is not a terminal; nothing was changed" in done.stderr and "-y" in done.stderr
    _no_traceback(done)
    # the password was asked once and a key installed: glmops's own, as this user has none
    key = user.config / "id_ed25519"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    authorized = (Path(user.server.home) / ".ssh" / "authorized_keys").read_text()
    assert (key.with_suffix(".pub")).read_text().split()[1] in authorized
    assert PASSWORD not in out
    # the host is recorded with what a re-run and the day-2 commands need
    hosts = yaml.safe_load(user.inventory.read_text())["all"]["children"]["local"]["hosts"]
    entry = hosts[user.name]
    assert (entry["ansible_host"], entry["ansible_port"], entry["ansible_user"]) == ("127.0.0.1", user.server.port, "root")
    assert entry["ansible_ssh_private_key_file"] == str(key)
    assert entry["deploy_dir"] == str(user.deploy_dir) and entry["tunnel_local_port"] == user.local_port
    assert oct((user.config / f"{user.name}.key").stat().st_mode & 0o777) == "0o600"
    # the plan, before anything changed on the host
    plan = done.stdout.partition("PLAN")[2]
    assert "playbook  local" in plan and "cpu (requested)" in plan and f"{user.deploy_dir} on {user.name}" in plan
    assert re.search(r"RAM\s+\d+\.\d GB", plan) and re.search(r"disk\s+\d+\.\d GB free at .*; needs \d+\.\d GB; .* free after", plan)
    assert "Python packages" in plan and "time      about" in plan
    assert not user.deploy_dir.exists()


def test_autodl_is_detected_by_its_files(user: User) -> None:
    turbo, data = user.root / "network_turbo", user.root / "autodl-tmp"
    turbo.write_text("export http_proxy=http://127.0.0.1:9/\n")
    data.mkdir()
    done = user.up(user.login, "--name", "autodl-like", "-e", f"network_turbo_file={turbo}", "-e", f"autodl_data_dir={data}",
                   "-i", str(user.root / "autodl-inventory.yml"), input=PASSWORD + "\n")  # asked only when no key works yet
    assert done.returncode == 1, done.stdout + done.stderr  # no terminal: the plan only
    plan = done.stdout.partition("PLAN")[2]
    assert plan, done.stdout + done.stderr
    assert "AutoDL container" in plan and "playbook  autodl" in plan and f"{data}/glmops on autodl-like" in plan, plan
    assert "chat model chatglm3-6b: 12.5 GB from ModelScope" in plan and "bge-large-zh-v1.5: 1.3 GB from ModelScope" in plan
    assert not (data / "glmops").exists()


def test_a_disk_that_does_not_fit_is_refused_before_anything_moves(user: User) -> None:
    free = shutil.disk_usage(user.root).free
    model = user.root / "huge-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with open(model / "model.safetensors", "wb") as handle:  # sparse: real apparent size, no real blocks
        handle.truncate(free + 200 * 10**9)
    done = user.up(user.name, "--playbook", "local", "--profile", "cpu", "--model-from", str(model), "-y",
                   "-e", f"deploy_dir={user.root / 'huge-deploy'}")
    assert done.returncode == 1, done.stdout + done.stderr
    match = re.search(r"not enough disk at (\S+): the deploy needs (\d+\.\d) GB \(.*\), (\d+\.\d) GB is free; nothing was", done.stderr)
    assert match, done.stderr
    assert float(match.group(2)) > float(match.group(3)) and "deploy_dir" in done.stderr
    _no_traceback(done)
    assert not (user.root / "huge-deploy").exists(), "nothing was uploaded or created"


# -- the deploy -----------------------------------------------------------------------------
def test_up_deploys_answers_reruns_and_down_leaves_nothing(user: User, tiny_models: dict[str, Path]) -> None:
    args = (user.name, "--playbook", "local", "--profile", "cpu", "--model-from", str(tiny_models["chat"]), "-y", *user.deploy_vars())
    first = user.up(*args)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-5000:]
    assert _answer(first.stdout, user), "a streamed answer through the tunnel"
    assert f"http://127.0.0.1:{user.local_port}/v1" in first.stdout and "glmops down" in first.stdout
    key = (user.config / f"{user.name}.key").read_text().strip()
    assert key not in out
    env_file = user.config / f"{user.name}.env"
    assert f"OPENAI_BASE_URL=http://127.0.0.1:{user.local_port}/v1" in env_file.read_text()
    assert f"OPENAI_API_KEY={key}" in env_file.read_text()
    # the API really wants the key, through the tunnel
    from openai import AuthenticationError, OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{user.local_port}/v1", api_key=key, max_retries=0, timeout=120)
    assert client.models.list().data
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"http://127.0.0.1:{user.local_port}/v1", api_key="wrong", max_retries=0).models.list()
    assert (user.deploy_dir / "models" / tiny_models["chat"].name / "config.json").exists()
    server_pid = int((user.deploy_dir / "run" / "server.pid").read_text().split()[0])

    again = user.up(user.name, "-y")  # the recorded settings: nothing else to say
    assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    assert re.search(rf"{re.escape(user.name)}\s*:.*changed=0", again.stdout), again.stdout[-3000:]
    assert "(nothing changed," in again.stdout and "is already open" in again.stdout
    assert _answer(again.stdout, user)
    assert int((user.deploy_dir / "run" / "server.pid").read_text().split()[0]) == server_pid

    # the next steps it printed work as printed
    status = user.glmops("status", user.name, "-i", str(user.inventory))
    assert status.returncode == 0 and " up " in status.stdout, status.stdout + status.stderr
    chat = user.glmops("chat", user.name, "你好", "--stream", "--max-tokens", "4", "-i", str(user.inventory))
    assert chat.returncode == 0 and chat.stdout.strip(), chat.stdout + chat.stderr

    tunnel_pids = [s["pid"] for s in _tunnel_states(user)]
    assert tunnel_pids
    down = user.glmops("down", user.name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped" in down.stdout and "closed the tunnel" in down.stdout
    for pid in [server_pid, *tunnel_pids]:
        assert not alive(pid), f"pid {pid} still runs after glmops down"
    assert not any(_in_group(pid, server_pid) for pid in _pids()), "no process of the server's group is left"
    assert _port_free(user.local_port) and _port_free(user.api_port)
    again_down = user.glmops("down", user.name)  # again: nothing to do, no error
    assert again_down.returncode == 0 and "not running" in again_down.stdout, again_down.stdout + again_down.stderr
    # --purge: asked first (no terminal: refused unless -y), then the deploy folder goes
    refused = user.glmops("down", user.name, "--purge")
    assert refused.returncode == 1 and "stdin is not a terminal" in refused.stderr and user.deploy_dir.is_dir()
    purged = user.glmops("down", user.name, "--purge", "-y")
    assert purged.returncode == 0 and f"removed {user.deploy_dir}" in purged.stdout, purged.stdout + purged.stderr
    assert not user.deploy_dir.exists()


def _answer(stdout: str, user: User) -> str:
    """The text streamed after the question, before the summary."""
    return stdout.partition(f"> {PROMPT}\n")[2].partition(f"\n\n{user.name} is up")[0]


def _tunnel_states(user: User) -> list[dict[str, Any]]:
    import json

    folder = Path(user.env["XDG_STATE_HOME"]) / "glmops" / "tunnels"
    return [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _in_group(pid: int, group: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return int(fields[2]) == group and fields[0] != "Z"
