"""The llama_cpp profile deployed for real (issue 9): playbooks/local.yml with `profile: llama_cpp` to a real
sshd on loopback. The tiny ChatGLM3 checkpoint (scripts/make_tiny_ggml.py --hf) is uploaded, llama-cpp-python
installed into the target venv (the wheel pip cached at bootstrap), the checkpoint converted to q4_0 GGUF on
the host by glmops.server.gguf_convert, and `glmops serve` answers the official openai client from it.
Then a re-run changes nothing. The tests of this module run in order on one deployment.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from helpers import ROOT, events, glmops, recap, results
from sshd import free_port

pytestmark = pytest.mark.timeout(1500)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, sshd_factory: Any) -> Any:
    root = tmp_path_factory.mktemp("deploy-llama")
    made = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_ggml.py"), str(root / "made"), "--dtype", "f32", "--hf"],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    host = sshd_factory(host="127.0.0.4", fast_shell=True)
    port = free_port()
    hostvars = {**host.hostvars(), "deploy_dir": str(root / "h"), "api_port": port, "profile": "llama_cpp",
                "model_id": "tiny-chatglm3", "model_source": "upload", "model_upload_from": made.stdout.split()[3],
                "embedding_model": "none", "transformers_pin": "transformers==4.57.6", "server_health_timeout": 600,
                "client_env_file": str(root / "client.env")}
    inventory = root / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"local": {"hosts": {"h": hostvars}}}}}))

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return glmops("run", str(ROOT / "playbooks" / "local.yml"), "-i", str(inventory), "--json", *extra,
                      env={"XDG_STATE_HOME": str(root / "state")}, timeout=1200)

    cold = run()
    yield {"root": root / "h", "port": port, "run": run, "cold": cold}
    pid_file = root / "h" / "run" / "server.pid"
    if pid_file.exists():
        subprocess.run(["kill", "--", f"-{pid_file.read_text().split()[0]}"], capture_output=True)


def _failures(output: str) -> str:
    return "\n".join(f"{e['host']} {e['task']}: {e.get('msg')}" for e in events(output)
                     if e["event"] == "host_result" and e["status"] in ("failed", "unreachable"))


def test_llama_cpp_profile_converts_once_and_serves(deployment: dict) -> None:
    from openai import OpenAI

    cold = deployment["cold"]
    assert cold.returncode == 0, _failures(cold.stdout) + cold.stderr[-3000:]
    assert results(cold.stdout, "Convert the model to GGUF (once)")["h"]["status"] == "changed"
    gguf = deployment["root"] / "models" / "chatglm3-q4_0.gguf"
    assert gguf.read_bytes()[:4] == b"GGUF"
    config = yaml.safe_load((deployment["root"] / "api_server.yaml").read_text())
    assert (config["backend"], config["model_path"]) == ("llama_cpp", str(gguf))
    assert "answers:" in results(cold.stdout, "The answer")["h"]["msg"]  # the role's own question, answered
    client = OpenAI(base_url=f"http://127.0.0.1:{deployment['port']}/v1", api_key="none", max_retries=0, timeout=60)
    assert client.models.list().data[0].id == "chatglm3-6b"
    chunks = list(client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": "你好"}], max_tokens=8, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_second_run_changes_nothing(deployment: dict) -> None:
    gguf = deployment["root"] / "models" / "chatglm3-q4_0.gguf"
    converted_at = gguf.stat().st_mtime_ns
    run = deployment["run"]()
    assert run.returncode == 0, _failures(run.stdout)
    assert {host: stats["changed"] for host, stats in recap(run.stdout).items()} == {"localhost": 0, "h": 0}, [
        (e["host"], e["task"]) for e in events(run.stdout) if e["event"] == "host_result" and e["status"] == "changed"]
    assert gguf.stat().st_mtime_ns == converted_at
