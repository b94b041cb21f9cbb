"""backend: vllm — glmops does not re-implement vLLM's server; it starts `vllm serve` with the right flags."""

from __future__ import annotations

import json
import os
import shutil
import sys

from glmops.server.config import ServerConfig

# ChatGLM3's eos, <|user|> and <|observation|>: without them vLLM runs past the end of the answer.
CHATGLM3_STOP_TOKEN_IDS = [2, 64795, 64797]


def vllm_command(config: ServerConfig, gpu_count: int | None = None) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of `vllm serve` for this config (the API key goes in the environment, not argv)."""
    tensor_parallel = config.tensor_parallel_size or gpu_count or 1
    argv = [
        "vllm", "serve", config.model_path,
        "--host", config.host,
        "--port", str(config.port),
        "--served-model-name", config.served_model_name,
        "--trust-remote-code",
        "--tensor-parallel-size", str(tensor_parallel),
        "--max-model-len", str(config.max_context),
        # vLLM adds the generation config's eos_token_id to every request's stop token ids.
        "--override-generation-config", json.dumps({"eos_token_id": CHATGLM3_STOP_TOKEN_IDS}),
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
    argv, env = vllm_command(config, visible_gpus())
    os.execve(executable, argv, {**os.environ, **env})
