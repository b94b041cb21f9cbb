"""Server config errors, the vllm launcher's command, the chatglm_cpp backend's checks, no heavy imports on the controller."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from glmops.errors import GlmopsError, LoadError
from glmops.server.backends.base import BackendError
from glmops.server.backends.chatglm_cpp import ChatglmCppBackend, check_ggml_file
from glmops.server.config import load_config
from glmops.server.vllm_launcher import CHATGLM3_STOP_TOKEN_IDS, vllm_command, write_generation_config

ROOT = Path(__file__).resolve().parents[2]


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "api_server.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_and_environment_overrides(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, "model_path: /m\n"), environ={})
    assert (config.host, config.port, config.backend, config.device, config.served_model_name) == ("127.0.0.1", 6006, "transformers", "auto", "chatglm3-6b")
    assert config.tokenizer == "/m" and config.api_keys == []
    env = {"GLMOPS_SERVER_PORT": "7000", "GLMOPS_SERVER_API_KEYS": "a,b", "GLMOPS_SERVER_QUANTIZE": "4"}
    config = load_config(config_file(tmp_path, "model_path: /m\nport: 6006\n"), environ=env)
    assert config.port == 7000 and config.api_keys == ["a", "b"] and config.quantize == 4
    assert config.model_aliases == ["chatglm3*"] and config.max_body_bytes == 8 * 2**20 and config.embedding_name == "embedding"
    env = {"GLMOPS_SERVER_MODEL_ALIASES": "chatglm3*,gpt-3.5-turbo", "GLMOPS_SERVER_MAX_BODY_BYTES": "65536"}
    config = load_config(config_file(tmp_path, "model_path: /m\nembedding_model_path: /models/bge-large-zh-v1.5/\n"), environ=env)
    assert config.model_aliases == ["chatglm3*", "gpt-3.5-turbo"] and config.max_body_bytes == 65536
    assert config.embedding_name == "bge-large-zh-v1.5"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("model_path: /m\nprot: 6006\n", ["api_server.yaml:2:1", "unknown key 'prot'", "did you mean: port"]),
        ("model_path: /m\nport: http\n", ["api_server.yaml:2:1", "'port' must be a int"]),
        ("model_path: /m\nquantize: 3\n", ["'quantize' must be 4, 8 or null"]),
        ("model_path: /m\ndevice: gpu\n", ["api_server.yaml:2:1", "'device' must be one of auto, cuda, cpu, mps"]),
        ("model_path: /m\ndevice: cpu\ndtype: float16\n", ["float16 is not supported on the CPU"]),
        ("port: 6006\n", ["'model_path' is required"]),
        ("model_path: /m\napi_keys: 5\n", ["'api_keys' must be a list of strings"]),
        ("- a\n", ["must be a mapping"]),
        ("model_path: /m\nmax_body_bytes: 10\n", ["api_server.yaml:2:1", "'max_body_bytes' must be at least 1024"]),
        ("model_path: /m\nmodel_aliases: 5\n", ["'model_aliases' must be a list of strings"]),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, expected: list[str]) -> None:
    with pytest.raises(LoadError) as info:
        load_config(config_file(tmp_path, text), environ={})
    for part in expected:
        assert part in str(info.value)


def test_bad_config_fails_before_any_model_loads(tmp_path: Path) -> None:
    path = config_file(tmp_path, "model_path: /m\nport: 99999\n")
    result = subprocess.run([sys.executable, "-m", "glmops.server", "--config", path], capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode == 3 and "'port' must be between 1 and 65535" in result.stderr and "Traceback" not in result.stderr


def test_vllm_command(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, "model_path: /models/chatglm3-6b\nbackend: vllm\nport: 6006\ndtype: float16\napi_keys: [sk-1]\n"), environ={})
    argv, env = vllm_command(config, 4, str(tmp_path / "gen"))
    assert argv[:3] == ["vllm", "serve", "/models/chatglm3-6b"] and "--trust-remote-code" in argv
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4" and argv[argv.index("--port") + 1] == "6006"
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--served-model-name") + 1] == "chatglm3-6b"
    assert argv[argv.index("--dtype") + 1] == "float16" and argv[argv.index("--generation-config") + 1] == str(tmp_path / "gen")
    assert "sk-1" not in " ".join(argv) and env == {"VLLM_API_KEY": "sk-1"}
    config.tensor_parallel_size = 2
    assert vllm_command(config, 4, "g")[0][argv.index("--tensor-parallel-size") + 1] == "2"
    config.api_keys = ["a", "b"]
    with pytest.raises(GlmopsError, match="accepts one API key"):
        vllm_command(config, 4, "g")


def test_vllm_generation_config_keeps_the_models_and_adds_stop_ids(tmp_path: Path) -> None:
    model = tmp_path / "chatglm3-6b"
    model.mkdir()
    (model / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, "pad_token_id": 0, "temperature": 0.8}))
    written = json.loads((Path(write_generation_config(str(model), str(tmp_path / "gen"))) / "generation_config.json").read_text())
    assert written == {"eos_token_id": CHATGLM3_STOP_TOKEN_IDS, "pad_token_id": 0, "temperature": 0.8}
    bare = json.loads((Path(write_generation_config(str(tmp_path / "none"), str(tmp_path / "gen2"))) / "generation_config.json").read_text())
    assert bare == {"eos_token_id": CHATGLM3_STOP_TOKEN_IDS}


def test_vllm_missing_is_a_clear_error(tmp_path: Path) -> None:
    path = config_file(tmp_path, "model_path: /m\nbackend: vllm\n")
    result = subprocess.run([sys.executable, "-m", "glmops.server", "--config", path], capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/nonexistent"}, timeout=60)
    assert result.returncode == 1 and "pip install vllm" in result.stderr


def test_chatglm_cpp_checks_the_file_and_the_package(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="is not a file"):
        check_ggml_file(str(tmp_path))
    not_ggml = tmp_path / "model.safetensors"
    not_ggml.write_bytes(b"\x00\x01notggml")
    with pytest.raises(BackendError, match="not a chatglm.cpp GGML file.*chatglm_cpp.convert"):
        check_ggml_file(str(not_ggml))
    ggml = tmp_path / "chatglm3-ggml.bin"
    ggml.write_bytes(b"ggml" + b"\x00" * 64)
    check_ggml_file(str(ggml))
    config = load_config(config_file(tmp_path, f"model_path: {ggml}\nbackend: chatglm_cpp\n"), environ={})
    try:
        import chatglm_cpp  # noqa: F401  (only probing whether it is installed)
    except ImportError:
        with pytest.raises(BackendError, match="pip install chatglm-cpp"):
            ChatglmCppBackend(config).load()
    else:  # pragma: no cover - where the package is built, a fake GGML header must be refused by it
        with pytest.raises(Exception):
            ChatglmCppBackend(config).load()


def test_controller_cli_does_not_import_the_server_stack() -> None:
    code = "import sys, glmops.cli, glmops.server.cli; print(sorted(m for m in ('torch', 'transformers', 'fastapi', 'uvicorn') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == "[]"


def test_impossible_devices_and_quantization_are_clear_errors(tmp_path: Path, tiny_models) -> None:
    import torch

    from glmops.server.backends.transformers_backend import TransformersBackend, pick_device

    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="no CUDA GPU"):
            pick_device("cuda", torch)
    config = load_config(config_file(tmp_path, f"model_path: {tiny_models['chat']}\nquantize: 4\ndevice: cpu\n"), environ={})
    with pytest.raises(BackendError, match="bitsandbytes|needs device cuda"):
        TransformersBackend(config).load()
    config = load_config(config_file(tmp_path, f"model_path: {tmp_path}/missing\n"), environ={})
    with pytest.raises(BackendError, match="is not a directory"):
        TransformersBackend(config).load()
