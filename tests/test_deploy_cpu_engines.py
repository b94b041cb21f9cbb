"""Both CPU engines deployed for real on ChatGLM3's own checkpoint format (issues 9 and 17): playbooks/local.yml to a
real sshd on loopback, with the tiny checkpoint of scripts/make_tiny_chatglm.py (config.json with auto_map, the
remote code, tokenizer.model, model.safetensors with ChatGLM3's tensor names and its rotary inv_freq buffer) uploaded.
The target venv gets the deployed pins (python_env: torch 2.13.0, transformers 4.40.2) and the engines from pip's
cache (the wheels bootstrap built). First `profile: llama_cpp`: the llama_cpp role converts the checkpoint to GGUF
on the host (glmops.server.gguf_convert), then a re-run changes nothing. Then the same host with `profile:
chatglm_cpp`: the chatglm_cpp role runs chatglm.cpp's own converter in the target venv (it loads the checkpoint
through the remote code with AutoModel/AutoTokenizer, so it needs the pinned transformers), then a re-run changes
nothing. Both files are f32, so each engine's served greedy answer must equal, token for token, what the
transformers backend serves from the checkpoint itself in the same venv (ChatGLM3's remote code under the pins).
The tests of this module run in order on one deployment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from helpers import ROOT, events, glmops, recap, results
from sshd import free_port

pytestmark = pytest.mark.timeout(1500)

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
PROMPTS: list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None]] = [
    ([{"role": "system", "content": "You are ChatGLM3."}, {"role": "user", "content": "你好，给我讲一个故事"}], None),
    ([{"role": "user", "content": "北京天气？"},
      {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "北京"}'}}]},
      {"role": "tool", "tool_call_id": "c1", "content": '{"weather": "sunny"}'}], TOOLS),
]
ANSWER_TOKENS = 32  # greedy tokens compared per prompt


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, sshd_factory: Any, tiny_chatglm: Path) -> Any:
    root = tmp_path_factory.mktemp("deploy-cpu")
    host = sshd_factory(host="127.0.0.4", fast_shell=True)
    port = free_port()
    hostvars = {**host.hostvars(), "deploy_dir": str(root / "h"), "api_port": port, "profile": "llama_cpp",
                "llama_cpp_quant": "f32", "chatglm_cpp_quant": "f32",
                "model_id": "tiny-chatglm3", "model_source": "upload", "model_upload_from": str(tiny_chatglm),
                "embedding_model": "none", "server_health_timeout": 600, "client_env_file": str(root / "client.env")}
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
    return "\n".join(f"{e['host']} {e['task']}: {e.get('msg')} {str((e.get('result') or {}).get('stderr') or '')[-1500:]}" for e in events(output)
                     if e["event"] == "host_result" and e["status"] in ("failed", "unreachable"))


def _changed(output: str) -> list[tuple[str, str]]:
    return [(e["host"], e["task"]) for e in events(output) if e["event"] == "host_result" and e["status"] == "changed"]


def greedy_answers(port: int) -> list[tuple[str | None, int, int, str]]:
    """Per prompt of PROMPTS: the served greedy answer (temperature 0) through the official openai client:
    its text, prompt tokens, completion tokens and finish reason."""
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
    answers = []
    for messages, tools in PROMPTS:
        extra = {"tools": tools} if tools else {}
        reply = client.chat.completions.create(model="chatglm3-6b", messages=messages, max_tokens=ANSWER_TOKENS, temperature=0, **extra)
        answers.append((reply.choices[0].message.content, reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.choices[0].finish_reason))
    return answers


@pytest.fixture(scope="module")
def transformers_answers(deployment: dict, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str | None, int, int, str]]:
    """The reference: `glmops serve` with the transformers backend on the uploaded checkpoint, run by the target venv's
    python (its pinned torch and transformers, glmops's installed wheel): ChatGLM3's remote code, float32 on the CPU,
    the prompt built by the checkpoint's own tokenizer (build_chat_input; the CPU engines build their ids themselves)."""
    assert deployment["cold"].returncode == 0, _failures(deployment["cold"].stdout)
    work = tmp_path_factory.mktemp("reference")
    port = free_port()
    config = work / "api_server.yaml"
    config.write_text(yaml.safe_dump({"backend": "transformers", "model_path": str(deployment["root"] / "models" / "tiny-chatglm3"),
                                      "device": "cpu", "port": port, "max_context": 1024}))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    with open(work / "stderr.log", "wb") as stderr:
        server = subprocess.Popen([str(deployment["root"] / "venv" / "bin" / "glmops"), "serve", "--config", str(config)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        health = _wait_healthy(port, server, work / "stderr.log")
        assert (health["backend"], health["dtype"]) == ("transformers", "float32"), health
        return greedy_answers(port)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def _wait_healthy(port: int, server: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError("the transformers server exited: " + log.read_text(errors="replace")[-3000:])
        try:
            reply = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            if reply.status_code == 200:
                return reply.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the transformers server was not healthy after {timeout} s: " + log.read_text(errors="replace")[-3000:])


def _assert_same_greedy_answers(served: list, reference: list) -> None:
    assert len(served) == len(reference) == len(PROMPTS)
    for (text, prompt, completion, finish), expected in zip(served, reference):
        assert completion >= 16 and text, (served, reference)  # long enough for the comparison to mean something
        assert (text, prompt, completion, finish) == expected


def test_llama_cpp_profile_converts_once_and_serves_the_checkpoints_greedy_answers(deployment: dict, transformers_answers: list) -> None:
    cold = deployment["cold"]
    assert cold.returncode == 0, _failures(cold.stdout) + cold.stderr[-3000:]
    assert results(cold.stdout, "Convert the model to GGUF (once)")["h"]["status"] == "changed"
    gguf = deployment["root"] / "models" / "chatglm3-f32.gguf"
    assert gguf.read_bytes()[:4] == b"GGUF"
    config = yaml.safe_load((deployment["root"] / "api_server.yaml").read_text())
    assert (config["backend"], config["model_path"]) == ("llama_cpp", str(gguf))
    assert "answers:" in results(cold.stdout, "The answer")["h"]["msg"]  # the role's own question, answered
    health = httpx.get(f"http://127.0.0.1:{deployment['port']}/health").json()
    assert (health["backend"], health["dtype"]) == ("llama_cpp", "f32")
    _assert_same_greedy_answers(greedy_answers(deployment["port"]), transformers_answers)


def test_second_run_changes_nothing(deployment: dict) -> None:
    gguf = deployment["root"] / "models" / "chatglm3-f32.gguf"
    converted_at = gguf.stat().st_mtime_ns
    run = deployment["run"]()
    assert run.returncode == 0, _failures(run.stdout)
    assert {host: stats["changed"] for host, stats in recap(run.stdout).items()} == {"localhost": 0, "h": 0}, _changed(run.stdout)
    assert gguf.stat().st_mtime_ns == converted_at


def test_chatglm_cpp_profile_converts_with_chatglm_cpps_converter_and_serves_the_same_answers(deployment: dict, transformers_answers: list,
                                                                                              tmp_path: Path) -> None:
    run = deployment["run"]("-e", "profile=chatglm_cpp")
    assert run.returncode == 0, _failures(run.stdout) + run.stderr[-3000:]
    assert results(run.stdout, "Convert the model to GGML (once)")["h"]["status"] == "changed"
    ggml = deployment["root"] / "models" / "chatglm3-ggml-f32.bin"
    direct = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_ggml.py"), str(tmp_path), "--dtype", "f32"],
                            capture_output=True, text=True, timeout=300)
    assert direct.returncode == 0, direct.stderr
    # chatglm.cpp's converter, on the checkpoint through its remote code, wrote the very bytes make_tiny_ggml.py
    # writes directly for the same weights (the file tests/server/test_cpu_backends.py serves)
    assert ggml.read_bytes() == Path(direct.stdout.split()[1]).read_bytes()
    config = yaml.safe_load((deployment["root"] / "api_server.yaml").read_text())
    assert (config["backend"], config["model_path"]) == ("chatglm_cpp", str(ggml))
    health = httpx.get(f"http://127.0.0.1:{deployment['port']}/health").json()
    assert (health["backend"], health["dtype"]) == ("chatglm_cpp", "f32")  # the file's header: model type 3 (ChatGLM3), f32
    _assert_same_greedy_answers(greedy_answers(deployment["port"]), transformers_answers)
    again = deployment["run"]("-e", "profile=chatglm_cpp")
    assert again.returncode == 0, _failures(again.stdout)
    assert {host: stats["changed"] for host, stats in recap(again.stdout).items()} == {"localhost": 0, "h": 0}, _changed(again.stdout)
