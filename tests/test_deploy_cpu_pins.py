"""The deployed pins, proven (issue 17, item 3): playbooks/cpu.yml builds the target venv exactly as roles/python_env
does for the `cpu` profile (a fresh venv, no reuse: the shipped torch_pin, transformers_pin and sentencepiece, the
glmops wheel with its server extra), uploads the tiny checkpoint in ChatGLM3's own format (its remote code runs:
scripts/make_tiny_chatglm.py) and the tiny embedding model to a test sshd host, and the server answers the official
openai client (chat, stream, embeddings). Nothing in the inventory overrides a pin.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import ROOT, events, glmops, results
from sshd import free_port

pytestmark = pytest.mark.timeout(1200)

HOST = "cpu-box"
SHIPPED = yaml.safe_load((ROOT / "roles" / "python_env" / "defaults" / "main.yml").read_text())


@pytest.fixture(scope="module")
def cpu_deploy(tmp_path_factory: pytest.TempPathFactory, sshd_factory: Any, tiny_chatglm: Path,
               tiny_models: dict[str, Path]) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("cpu-pins")
    host = sshd_factory(host="127.0.0.4", fast_shell=True)
    port = free_port()
    hostvars = {**host.hostvars(), "deploy_dir": str(root / "glmops"), "api_port": port, "profile": "cpu",
                "model_source": "upload", "model_id": "tiny-chatglm3", "model_upload_from": str(tiny_chatglm),
                "embedding_model": "tiny-bge", "embedding_model_source": "upload", "embedding_model_upload_from": str(tiny_models["embed"]),
                "client_env_file": str(root / "client.env")}
    inventory = root / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"cpu": {"hosts": {HOST: hostvars}}}}}))
    start = time.monotonic()
    run = glmops("run", str(ROOT / "playbooks" / "cpu.yml"), "-i", str(inventory), "--json",
                 env={"XDG_STATE_HOME": str(root / "state")}, timeout=1100)
    deploy = {"run": run, "seconds": time.monotonic() - start, "root": root, "port": port}
    yield deploy
    try:
        os.killpg(int((root / "glmops" / "run" / "server.pid").read_text().split()[0]), signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass


def test_the_shipped_cpu_pins_serve_the_chatglm_checkpoint(cpu_deploy: dict[str, Any]) -> None:
    run = cpu_deploy["run"]
    print(f"cold cpu deploy with the shipped pins: {cpu_deploy['seconds']:.0f} s")
    failures = [f"{e['task']}: {e.get('msg')}" for e in events(run.stdout) if e["event"] == "host_result" and e["status"] == "failed"]
    assert run.returncode == 0, "\n".join(failures) + run.stderr[-3000:]
    assert results(run.stdout, "The answer")[HOST]["status"] == "ok"
    venv_python = cpu_deploy["root"] / "glmops" / "venv" / "bin" / "python"
    installed = subprocess.run([str(venv_python), "-c", "import importlib.metadata as m; "
                                "print(*(m.version(p) for p in ('torch', 'transformers', 'sentencepiece', 'glmops')))"],
                               capture_output=True, text=True, check=True).stdout.split()
    assert f"torch=={installed[0].split('+')[0]}" == SHIPPED["torch_pin"]
    assert f"transformers=={installed[1]}" == SHIPPED["transformers_pin"]
    assert SHIPPED["python_env_profile_packages"]["cpu"] == ["sentencepiece"]
    # the venv's own, not borrowed from elsewhere
    listed = subprocess.run([str(venv_python), "-m", "pip", "list", "--local", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout
    assert "torch==" in listed and "transformers==" in listed and "sentencepiece==" in listed


def test_the_deployed_server_answers_the_openai_client(cpu_deploy: dict[str, Any]) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{cpu_deploy['port']}/v1", api_key="none", max_retries=0, timeout=120)
    answer = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": "你好"}], max_tokens=8)
    assert answer.choices[0].message.content and answer.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": "你好"}],
                                                 max_tokens=8, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(client.embeddings.create(model="tiny-bge", input=["你好"]).data[0].embedding) > 0
