"""The smoke deploy (issue 8): playbooks/local.yml to two real sshd hosts on loopback, the tiny chat
model fetched from a local git-lfs repository (file://) on one and uploaded on the other; the real
target venv (torch from pip's cache), the real server process, `glmops tunnel`, the official openai
client. Then a re-run (changed=0) and faults: a killed server, a truncated model file, a host down.

The tests of this module run in order on one deployment (the cold deploy is the expensive part).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import ROOT, events, glmops, recap, results
from sshd import free_port

pytestmark = pytest.mark.timeout(1500)

PLAYBOOK = str(ROOT / "playbooks" / "local.yml")
KEY_H2 = "sk-smoke-h2-key"


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True)


def make_lfs_repo(model: Path, work: Path) -> str:
    """A bare git repository holding `model` with its weights in git-lfs; returns its file:// URL."""
    src, bare = work / "src", work / "tiny-chatglm3.git"
    shutil.copytree(model, src)
    _git("init", "-q", "-b", "main", cwd=src)
    _git("lfs", "track", "*.safetensors", cwd=src)
    _git("add", "-A", cwd=src)
    _git("commit", "-q", "-m", "tiny model", cwd=src)
    _git("init", "-q", "--bare", "-b", "main", str(bare), cwd=work)
    _git("remote", "add", "origin", str(bare), cwd=src)
    _git("push", "-q", "origin", "main", cwd=src)
    assert (bare / "lfs" / "objects").is_dir(), "the weights must travel as LFS objects"
    return f"file://{bare}"


class Deployment:
    """Two hosts, their inventory, and helpers to run the playbook against them."""

    def __init__(self, root: Path, models: Path, repo_url: str, h1: Any, h2: Any):
        self.root = root
        self.h1, self.h2 = h1, h2
        self.ports = {"h1": free_port(), "h2": free_port()}
        self.env = {"XDG_STATE_HOME": str(root / "state")}
        self.client_env = root / "client.env"
        self.hostvars = {
            "h1": {**h1.hostvars(), "deploy_dir": str(root / "h1"), "api_port": self.ports["h1"],
                   "model_source": "git", "model_repo_url": repo_url, "embedding_model": "none"},
            "h2": {**h2.hostvars(), "deploy_dir": str(root / "h2"), "api_port": self.ports["h2"], "api_keys": [KEY_H2],
                   "model_source": "upload", "model_upload_from": str(models / "tiny-chatglm3"),
                   "embedding_model": "tiny-bge", "embedding_model_source": "upload",
                   "embedding_model_upload_from": str(models / "tiny-bge")},
        }
        self.inventory = self.write_inventory(self.hostvars)

    def write_inventory(self, hostvars: dict[str, dict[str, Any]], name: str = "inventory.yml") -> Path:
        common = {"profile": "cpu", "transformers_pin": "transformers==4.57.6", "model_id": "tiny-chatglm3",
                  "client_env_file": str(self.client_env), "server_health_timeout": 600}
        path = self.root / name
        path.write_text(yaml.safe_dump({"all": {"children": {"local": {"vars": common, "hosts": hostvars}}}}))
        return path

    def run(self, *extra: str, inventory: Path | None = None, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        return glmops("run", PLAYBOOK, "-i", str(inventory or self.inventory), "--json", *extra, env=self.env, timeout=timeout)

    def path(self, host: str, *parts: str) -> Path:
        return self.root / host / Path(*parts)

    def server_pid(self, host: str) -> int:
        return int(self.path(host, "run", "server.pid").read_text().split()[0])

    def stop(self) -> None:
        """Stop both servers (their process groups) and any tunnel this test opened."""
        glmops("tunnel", "stop", "--all", env=self.env)
        for host in ("h1", "h2"):
            try:
                os.killpg(self.server_pid(host), signal.SIGKILL)
            except (OSError, ValueError):
                pass


def _failures(output: str) -> str:
    return "\n".join(f"{e['host']} {e['task']}: {e.get('msg')}" for e in events(output)
                     if e["event"] == "host_result" and e["status"] in ("failed", "unreachable"))


def _task_status(output: str, task: str) -> dict[str, str]:
    return {host: event["status"] for host, event in results(output, task).items()}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, sshd_factory: Any) -> Any:
    root = tmp_path_factory.mktemp("deploy")
    made = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_models.py"), str(root / "models")],
                          capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr
    (root / "git").mkdir()
    repo_url = make_lfs_repo(root / "models" / "tiny-chatglm3", root / "git")
    h1 = sshd_factory(host="127.0.0.2", fast_shell=True)
    h2 = sshd_factory(host="127.0.0.3", fast_shell=True)
    dep = Deployment(root, root / "models", repo_url, h1, h2)
    dep.cold = dep.run()  # type: ignore[attr-defined]
    yield dep
    dep.stop()


def test_cold_deploy_to_two_hosts(deployment: Deployment) -> None:
    run = deployment.cold  # type: ignore[attr-defined]
    assert run.returncode == 0, _failures(run.stdout) + run.stderr[-3000:]
    stats = recap(run.stdout)
    assert stats["h1"]["failed"] == stats["h2"]["failed"] == 0
    assert stats["h1"]["changed"] > 0 and stats["h2"]["changed"] > 0
    # the chat model came through git-lfs on h1 (real weights, not pointer files), by upload on h2
    for host in ("h1", "h2"):
        weights = deployment.path(host, "models", "tiny-chatglm3", "model.safetensors")
        assert weights.stat().st_size > 100_000, f"{host}: {weights} is not the real weights file"
    assert not deployment.path("h1", "models", "tiny-chatglm3", ".git").exists(), "drop_git_dir removes .git"
    # the config the server runs with
    for host in ("h1", "h2"):
        config = yaml.safe_load(deployment.path(host, "api_server.yaml").read_text())
        assert config["model_path"] == str(deployment.path(host, "models", "tiny-chatglm3"))
        assert config["port"] == deployment.ports[host]
        assert (config["backend"], config["device"], config["dtype"]) == ("transformers", "cpu", "float32")
    assert yaml.safe_load(deployment.path("h1", "api_server.yaml").read_text())["embedding_model_path"] is None
    assert yaml.safe_load(deployment.path("h2", "api_server.yaml").read_text())["api_keys"] == [KEY_H2]
    assert oct(deployment.path("h2", "api_server.yaml").stat().st_mode & 0o777) == "0o600"
    # the role's own check: healthy, then one real chat answer, printed
    answers = results(run.stdout, "The answer")
    assert set(answers) == {"h1", "h2"} and all("answers:" in e["msg"] for e in answers.values())
    # the key is never printed
    assert KEY_H2 not in run.stdout and KEY_H2 not in run.stderr
    # the controller's .env for clients: /v1 base URLs, mode 0600
    env_file = deployment.client_env.read_text()
    assert "OPENAI_BASE_URL=http://127.0.0.1:6006/v1" in env_file and "ZHIPU_BASE_URL=http://127.0.0.1:6006/v1" in env_file
    assert oct(deployment.client_env.stat().st_mode & 0o777) == "0o600"


def test_openai_client_through_the_tunnel(deployment: Deployment) -> None:
    from openai import AuthenticationError, OpenAI

    local_port = free_port()
    opened = glmops("tunnel", "open", "h2", "-i", str(deployment.inventory), "--local-port", str(local_port), "--background",
                    env=deployment.env, timeout=60)
    assert opened.returncode == 0, opened.stdout + opened.stderr
    client = OpenAI(base_url=f"http://127.0.0.1:{local_port}/v1", api_key=KEY_H2, max_retries=0, timeout=120)
    answer = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": "你好"}], max_tokens=8)
    assert answer.choices[0].message.content and answer.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": "你好"}],
                                                 max_tokens=8, stream=True))
    assert len(chunks) > 2 and "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(client.embeddings.create(model="tiny-bge", input=["你好"]).data[0].embedding) > 0
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"http://127.0.0.1:{local_port}/v1", api_key="wrong", max_retries=0).models.list()
    glmops("tunnel", "stop", "h2", env=deployment.env)


def test_second_run_changes_nothing(deployment: Deployment) -> None:
    pid = deployment.server_pid("h1")
    run = deployment.run()
    assert run.returncode == 0, _failures(run.stdout)
    stats = recap(run.stdout)
    assert {host: s["changed"] for host, s in stats.items()} == {"localhost": 0, "h1": 0, "h2": 0}, [
        (e["host"], e["task"]) for e in events(run.stdout) if e["event"] == "host_result" and e["status"] == "changed"]
    assert deployment.server_pid("h1") == pid, "a re-run with nothing to do must not restart the server"
    # healthy and not restarted: no question asked (server_smoke_every_run), so the re-run stays fast
    assert {h: e["status"] for h, e in results(run.stdout, "Ask the model one question").items()} == {"h1": "skipped", "h2": "skipped"}


def test_killed_server_is_started_again(deployment: Deployment) -> None:
    os.killpg(deployment.server_pid("h1"), signal.SIGKILL)
    run = deployment.run()
    assert run.returncode == 0, _failures(run.stdout)
    assert _task_status(run.stdout, "Start the API server if it is not running") == {"h1": "changed", "h2": "ok"}
    answered = {h for h, e in results(run.stdout, "The answer").items() if e["status"] == "ok"}
    assert answered == {"h1"}  # the restarted server answers; the untouched one is not asked again


def test_truncated_model_file_is_caught_and_repaired(deployment: Deployment) -> None:
    weights = deployment.path("h2", "models", "tiny-chatglm3", "model.safetensors")
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size // 2)
    run = deployment.run()
    fetch = results(run.stdout, "Fetch the chat model")["h2"]
    if fetch["status"] == "failed":  # verification stops the deploy with the file named; the next run repairs
        assert "model.safetensors" in fetch["msg"], fetch["msg"]
        assert run.returncode == 2
        run = deployment.run()
        fetch = results(run.stdout, "Fetch the chat model")["h2"]
    assert run.returncode == 0, _failures(run.stdout)
    assert fetch["status"] == "changed", fetch
    assert weights.stat().st_size == size
    # the model changed: the server was restarted (handler) and answers again
    assert results(run.stdout, "Restart glmops server")["h2"]["status"] == "changed"
    assert results(run.stdout, "The answer")["h2"]["status"] == "ok"


def test_a_host_down_does_not_stop_the_other(deployment: Deployment) -> None:
    hostvars = json.loads(json.dumps(deployment.hostvars))
    hostvars["h2"]["ansible_port"] = free_port("127.0.0.3")  # nothing listens there
    inventory = deployment.write_inventory(hostvars, "inventory-h2-down.yml")
    run = deployment.run(inventory=inventory)
    assert run.returncode == 4, run.stdout[-3000:]
    stats = recap(run.stdout)
    assert stats["h2"]["unreachable"] == 1
    assert stats["h1"]["failed"] == 0 and stats["h1"]["unreachable"] == 0
    assert results(run.stdout, "Poll /health")["h1"]["status"] == "ok"  # h1 went on to the end: healthy
