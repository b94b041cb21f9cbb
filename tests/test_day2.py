"""Day-2 commands against a real `glmops serve` (the tiny model) started by the daemon module on the
test sshd: status, logs, chat, facts, doctor, stop, restart; exit codes and --json shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import ROOT, glmops, inventory, write
from sshd import free_port

API_KEY = "sk-day2-test-0123456789"


@pytest.fixture(scope="module")
def deployed(sshd, tiny_models, tmp_path_factory: pytest.TempPathFactory):
    """A deployment laid out as glmops.layout says, its server started through the daemon module."""
    base = tmp_path_factory.mktemp("day2")
    deploy = base / "glmops"
    deploy.mkdir()
    (deploy / "venv").symlink_to(Path(sys.prefix))  # this venv, with glmops importable through PYTHONPATH
    port = free_port()
    (deploy / "api_server.yaml").write_text(yaml.safe_dump({
        "model_path": str(tiny_models["chat"]), "embedding_model_path": str(tiny_models["embed"]), "port": port,
        "api_keys": [API_KEY], "max_tokens": 16, "device": "cpu"}))
    bare = base / "bare"
    bare.mkdir()
    (bare / "venv").symlink_to(Path(sys.prefix))  # the packages are there, nothing else is
    pointers = base / "pointer-model"
    pointers.mkdir()
    (pointers / "config.json").write_text('{"model_type": "chatglm"}')
    (pointers / "model-00001-of-00007.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 1827781090\n")
    hosts = {
        "gpu1": {**sshd.hostvars(), "deploy_dir": str(deploy), "api_port": port, "api_keys": [API_KEY]},
        # nothing deployed here, but something (gpu1's server) listens on its port; its model is LFS pointers
        "bare": {**sshd.hostvars(), "deploy_dir": str(bare), "api_port": port, "model_path": str(pointers), "profile": "cpu"},
    }
    inv = inventory(base / "inventory.yml", hosts)
    book = write(base / "serve.yml", """
        - hosts: gpu1
          gather_facts: false
          tasks:
            - name: start the API server
              daemon:
                name: glmops-serve
                command: "{{ deploy_dir }}/venv/bin/python -m glmops serve --config {{ deploy_dir }}/api_server.yaml"
                environment:
                  PYTHONPATH: "%s"
                  PYTHONUNBUFFERED: "1"
                pid_file: "{{ deploy_dir }}/run/server.pid"
                log_file: "{{ deploy_dir }}/logs/server.log"
    """ % ROOT)
    started = glmops("run", str(book), "-i", str(inv))
    assert started.returncode == 0, started.stdout + started.stderr
    url = f"http://127.0.0.1:{port}/health"
    deadline = time.monotonic() + 300
    while True:  # loading torch and the model: wait for ready (not a timed assertion)
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (deploy / "logs" / "server.log").read_text()[-3000:]
        time.sleep(0.2)
    yield {"inv": str(inv), "deploy": deploy, "port": port, "pointers": pointers}
    pid_file = deploy / "run" / "server.pid"
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text()), 9)
        except (ProcessLookupError, ValueError):
            pass


def _pid(deployed) -> int:
    return int((deployed["deploy"] / "run" / "server.pid").read_text())


def test_status_of_a_running_server(deployed) -> None:
    result = glmops("status", "gpu1", "-i", deployed["inv"], "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    [row] = json.loads(result.stdout)
    assert row["host"] == "gpu1" and row["state"] == "up" and row["health"] == "ok" and row["pid"] == _pid(deployed)
    assert row["port"] == deployed["port"] and row["model"] == "chatglm3-6b" and row["backend"] == "transformers"
    assert row["device"] == "cpu" and row["dtype"] == "float32" and row["uptime_s"] >= 0
    assert row["log_file"] == str(deployed["deploy"] / "logs" / "server.log")
    table = glmops("status", "-i", deployed["inv"])  # all hosts: "bare" has no server of its own
    assert table.returncode == 0, table.stdout + table.stderr  # both answer /health
    assert "gpu1" in table.stdout and "up" in table.stdout and "bare" in table.stdout
    assert "not started by glmops" in table.stdout  # bare's port answers, but no process of its own


def test_logs(deployed) -> None:
    log = deployed["deploy"] / "logs" / "server.log"
    result = glmops("logs", "gpu1", "-i", deployed["inv"], "-n", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == log.read_text().splitlines()[-3:]
    assert "serving chatglm3-6b" in glmops("logs", "gpu1", "-i", deployed["inv"], "-n", "1000").stdout
    missing = glmops("logs", "bare", "-i", deployed["inv"])
    assert missing.returncode == 1 and "no log at" in missing.stderr and "Traceback" not in missing.stderr
    several = glmops("logs", "all", "-i", deployed["inv"])
    assert several.returncode == 1 and "matches 2 hosts" in several.stderr


def test_logs_follow(deployed) -> None:
    log = deployed["deploy"] / "logs" / "server.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    follower = subprocess.Popen([sys.executable, "-m", "glmops", "logs", "gpu1", "-i", deployed["inv"], "-n", "1", "-f",
                                 "--interval", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        seen: list[str] = []

        def wait_for(marker: str) -> None:
            for line in follower.stdout:  # type: ignore[union-attr]
                seen.append(line)
                if marker in line:
                    return
            raise AssertionError(f"{marker!r} never shown; got {seen!r}, stderr {follower.stderr.read()!r}")  # type: ignore[union-attr]

        with open(log, "a") as handle:
            handle.write("first marker\n")
        wait_for("first marker")  # from the initial tail or from following: either way it now follows
        with open(log, "a") as handle:
            handle.write("second marker\n")
        wait_for("second marker")  # appended after the follower had started: only following shows it
    finally:
        follower.terminate()
        follower.wait(10)


def test_chat(deployed) -> None:
    result = glmops("chat", "gpu1", "你好", "-i", deployed["inv"], "--max-tokens", "8", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == {"host", "url", "model", "content", "finish_reason", "usage"}
    assert answer["host"] == "gpu1" and "over SSH" in answer["url"] and answer["model"] == "chatglm3-6b"
    assert answer["finish_reason"] in ("stop", "length") and answer["usage"]["completion_tokens"] <= 8
    streamed = glmops("chat", "gpu1", "tell a story", "-i", deployed["inv"], "--stream", "--system", "be brief",
                      "--max-tokens", "8", "--json")
    assert streamed.returncode == 0, streamed.stderr
    data = json.loads(streamed.stdout)
    assert data["usage"]["completion_tokens"] <= 8 and isinstance(data["content"], str)
    plain = glmops("chat", "hi", "--base-url", f"http://127.0.0.1:{deployed['port']}", "--api-key", API_KEY, "--stream")
    assert plain.returncode == 0 and plain.stdout.endswith("\n")
    denied = glmops("chat", "hi", "--base-url", f"http://127.0.0.1:{deployed['port']}/v1", "--api-key", "wrong-key")
    assert denied.returncode == 1 and "HTTP 401" in denied.stderr and "--api-key" in denied.stderr
    nothing = glmops("chat", "hi", "--base-url", f"http://127.0.0.1:{free_port()}/v1")
    assert nothing.returncode == 1 and "nothing answers" in nothing.stderr and "Traceback" not in nothing.stderr


def test_facts(deployed) -> None:
    result = glmops("facts", "gpu1", "-i", deployed["inv"], "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    for key in ("glmops_gpus", "glmops_driver", "glmops_cuda", "glmops_ram_mb", "glmops_disk_free_mb",
                "glmops_apple_silicon", "glmops_autodl", "glmops_profile", "glmops_profile_reason"):
        assert key in facts, key
    assert facts["host"] == "gpu1" and facts["glmops_gpus"] == [] and facts["glmops_profile"] in ("cpu", "chatglm_cpp")
    assert facts["glmops_disk_path"] == str(deployed["deploy"])
    text = glmops("facts", "gpu1", "-i", deployed["inv"])
    assert "profile:" in text.stdout and facts["glmops_profile_reason"] in text.stdout
    refused = glmops("facts", "gpu1", "-i", deployed["inv"], "-e", "profile=int4", "--json")
    assert refused.returncode == 2 and "needs an NVIDIA GPU" in json.loads(refused.stdout)["glmops_profile_reason"]


def test_doctor(deployed) -> None:
    healthy = glmops("doctor", "gpu1", "-i", deployed["inv"], "--json")
    report = json.loads(healthy.stdout)
    checks = {c["id"]: c for c in report["checks"]}
    assert set(checks["port"]) == {"id", "level", "message", "fix"}
    assert checks["port"]["level"] == "ok" and "used by the glmops server" in checks["port"]["message"]
    assert checks["model"]["level"] == "ok" and "no LFS pointers" in checks["model"]["message"]
    assert checks["embedding_model"]["level"] == "ok" and checks["torch"]["level"] == "ok"
    assert checks["transformers"]["level"] == "ok"  # the tiny model is not ChatGLM3's remote code
    assert healthy.returncode == (2 if not report["ok"] else 0), healthy.stdout
    broken = glmops("doctor", "bare", "-i", deployed["inv"])
    assert broken.returncode == 2, broken.stdout + broken.stderr
    out = broken.stdout
    assert "FAIL  port" in out and f"port {deployed['port']} is already taken" in out and "api_port" in out
    assert "FAIL  model" in out and "model-00001-of-00007.safetensors" in out and "git lfs pull" in out
    assert "FAIL  transformers" in out and "4.40.2" in out and "#1299" in out  # a ChatGLM model with a too-new transformers
    assert "warn  embeddings" in out and ("FAIL  ram" in out) == (os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") < 31 * 2**30)


def test_stop_and_restart(deployed) -> None:
    pid = _pid(deployed)
    stopped = glmops("stop", "gpu1", "-i", deployed["inv"])
    assert stopped.returncode == 0 and "gpu1: stopped" in stopped.stdout
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    down = glmops("status", "gpu1", "-i", deployed["inv"], "--json")
    [row] = json.loads(down.stdout)
    assert down.returncode == 2 and row["state"] == "down" and row["exit_code"] is not None and "glmops logs gpu1" in row["message"]
    assert "not running" in glmops("stop", "gpu1", "-i", deployed["inv"]).stdout
    restarted = glmops("restart", "gpu1", "-i", deployed["inv"], timeout=400)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "restarted" in restarted.stdout and "healthy" in restarted.stdout
    [row] = json.loads(glmops("status", "gpu1", "-i", deployed["inv"], "--json").stdout)
    assert row["state"] == "up" and row["pid"] == _pid(deployed) != pid
    nothing = glmops("restart", "bare", "-i", deployed["inv"])
    assert nothing.returncode == 1 and "no server command recorded" in nothing.stderr and "deploy first" in nothing.stderr


def test_unreachable_and_unknown_hosts(deployed, tmp_path: Path, unreachable_hostvars) -> None:
    inv = inventory(tmp_path / "inv.yml", {"gone": unreachable_hostvars})
    result = glmops("status", "-i", str(inv), "--json")
    [row] = json.loads(result.stdout)
    assert result.returncode == 4 and row["state"] == "unreachable" and "connection refused" in row["message"]
    unknown = glmops("status", "nosuchhost", "-i", deployed["inv"])
    assert unknown.returncode == 1 and "no host matches" in unknown.stderr and "gpu1" in unknown.stderr


def test_commands_are_listed_and_load_lazily() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from glmops.cli import cli\n"
        "out = CliRunner().invoke(cli, ['--help']).output\n"
        "assert all(c in out for c in ('status', 'logs', 'stop', 'restart', 'facts', 'doctor', 'chat')), out\n"
        "for command in ('status', 'logs', 'stop', 'restart', 'facts', 'doctor', 'chat'):\n"
        "    assert CliRunner().invoke(cli, [command, '--help']).exit_code == 0, command\n"
        "heavy = [m for m in ('torch', 'transformers', 'paramiko') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_become_runs_the_day2_commands_as_the_deploy_user(sshd, world_dir: Path) -> None:
    from glmops.connection.factory import open_connection
    from glmops.modules import _detached

    deploy = world_dir / "deploy"
    inv = inventory(world_dir / "inv.yml", {"box": {**sshd.hostvars(), "deploy_dir": str(deploy), "api_port": free_port()}})
    paths = _detached.Paths(str(deploy / "run" / "server.pid"), str(deploy / "logs" / "server.log"))
    conn = open_connection("box", sshd.hostvars())
    try:
        first = _detached.start(_AsUser(conn, "nobody"), paths, _detached.build_script("exec sleep 300"), wait=0)
        assert first.running and Path(f"/proc/{first.pid}").stat().st_uid == 65534
        restarted = glmops("restart", "box", "-i", str(inv), "--become", "--become-user", "nobody", "--no-wait")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        pid = int(Path(paths.pid_file).read_text())
        assert pid != first.pid and Path(f"/proc/{pid}").stat().st_uid == 65534  # started again as nobody, not root
        assert Path(paths.pid_file).stat().st_uid == 65534
        stopped = glmops("stop", "box", "-i", str(inv), "-b", "--become-user", "nobody")
        assert stopped.returncode == 0 and "box: stopped" in stopped.stdout
    finally:
        pid_file = Path(paths.pid_file)
        if pid_file.exists():
            try:
                os.killpg(int(pid_file.read_text()), 9)
            except (ProcessLookupError, ValueError):
                pass
        conn.close()


class _AsUser:
    def __init__(self, conn, user: str):
        from glmops.connection.base import Become

        self.conn, self.become = conn, Become(user)

    def run(self, cmd: str, **kwargs):
        return self.conn.run(cmd, become=self.become, **kwargs)
