"""backend: vllm — glmops does not re-implement vLLM's server; it starts `vllm serve` with the right flags."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile

from glmops.errors import GlmopsError
from glmops.server.config import ServerConfig

# ChatGLM3's eos, <|user|> and <|observation|>: without them vLLM runs past the end of the answer.
CHATGLM3_STOP_TOKEN_IDS = [2, 64795, 64797]


def write_generation_config(model_path: str, directory: str) -> str:
    """A generation_config.json for vLLM: the model's own (when it has one) with ChatGLM3's stop ids as eos.

    vLLM adds the generation config's eos_token_id to every request's stop token ids, and only
    `--generation-config DIR` replaces where that comes from (`--override-generation-config`
    changes sampling defaults only). Written atomically; returns the directory.
    """
    config: dict = {}
    own = os.path.join(model_path, "generation_config.json")
    if os.path.isfile(own):
        with open(own, encoding="utf-8") as handle:
            config = json.load(handle)
    eos = config.get("eos_token_id")
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    config["eos_token_id"] = eos + [i for i in CHATGLM3_STOP_TOKEN_IDS if i not in eos]
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".generation_config-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
    os.replace(tmp, os.path.join(directory, "generation_config.json"))
    return directory


def generation_dir(config: ServerConfig) -> str:
    """Where the launcher keeps the generation config for this model (stable across restarts)."""
    digest = hashlib.sha256(os.path.abspath(config.model_path).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"glmops-vllm-{digest}")


def vllm_command(config: ServerConfig, gpu_count: int | None, generation_config_dir: str) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of `vllm serve` for this config (the API key goes in the environment, not argv)."""
    if len(config.api_keys) > 1:
        raise GlmopsError("backend vllm accepts one API key; api_keys lists several", field="api_keys",
                          hint="keep one key, or use backend transformers, which accepts several")
    tensor_parallel = config.tensor_parallel_size or gpu_count or 1
    argv = [
        "vllm", "serve", config.model_path,
        "--host", config.host,
        "--port", str(config.port),
        "--served-model-name", config.served_model_name,
        "--trust-remote-code",
        "--tensor-parallel-size", str(tensor_parallel),
        "--max-model-len", str(config.max_context),
        "--generation-config", generation_config_dir,
    ]
    if config.tokenizer_path:
        argv += ["--tokenizer", config.tokenizer_path]
    if config.dtype != "auto":
        argv += ["--dtype", config.dtype]
    env: dict[str, str] = {}
    if config.api_keys:
        env["VLLM_API_KEY"] = config.api_keys[0]
    return argv, env


def visible_gpus() -> int | None:
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    if devices is not None:
        return len([d for d in devices.split(",") if d.strip()])
    try:
        import torch

        return torch.cuda.device_count() or None
    except ImportError:
        return None


def exec_vllm(config: ServerConfig) -> None:
    """Replace this process with vLLM's OpenAI server."""
    executable = shutil.which("vllm")
    if executable is None:
        print("ERROR: backend vllm needs vLLM on this host: pip install vllm (a CUDA machine)", file=sys.stderr)
        sys.exit(1)
    try:
        argv, env = vllm_command(config, visible_gpus(), write_generation_config(config.model_path, generation_dir(config)))
    except GlmopsError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    os.execve(executable, argv, {**os.environ, **env})
