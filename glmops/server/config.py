"""The server's configuration: a YAML file, each key overridable by GLMOPS_SERVER_<KEY>."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from glmops.errors import LoadError, Pos

BACKENDS = ("transformers", "llama_cpp", "chatglm_cpp", "vllm")
DEVICES = ("auto", "cuda", "cpu", "mps")
DTYPES = ("auto", "float16", "bfloat16", "float32")


@dataclass
class ServerConfig:
    """Every key of api_server.yaml (see docs/server.md)."""

    model_path: str = ""
    tokenizer_path: str | None = None  # default: model_path
    embedding_model_path: str | None = None
    host: str = "127.0.0.1"
    port: int = 6006
    backend: str = "transformers"
    device: str = "auto"
    dtype: str = "auto"  # auto: float16 on CUDA/MPS, float32 on CPU
    quantize: int | None = None  # None, 8 or 4
    device_map: str | None = None  # "auto" spreads the model over several GPUs
    served_model_name: str = "chatglm3-6b"
    model_aliases: list[str] = field(default_factory=lambda: ["chatglm3*"])  # fnmatch patterns also accepted as `model`
    embedding_model_name: str | None = None  # default: the embedding model directory's name
    embedding_model_aliases: list[str] = field(default_factory=lambda: ["bge*"])
    max_body_bytes: int = 8 * 2**20  # larger request bodies get 413
    max_context: int = 8192
    max_tokens: int = 512  # default max_tokens of a request
    api_keys: list[str] = field(default_factory=list)
    log_file: str | None = None
    queue_size: int = 16  # requests waiting for the model; more get 503
    concurrency: int = 1  # requests generating at once
    trust_remote_code: bool = True
    tensor_parallel_size: int | None = None  # vllm
    embedding_batch_size: int = 32
    threads: int | None = None  # llama_cpp: CPU threads (default: every core)

    @property
    def tokenizer(self) -> str:
        return self.tokenizer_path or self.model_path

    @property
    def embedding_name(self) -> str:
        """The `model` of embeddings: embedding_model_name, else the directory's name."""
        if self.embedding_model_name:
            return self.embedding_model_name
        if not self.embedding_model_path:
            return "embedding"
        return os.path.basename(os.path.normpath(self.embedding_model_path)) or "embedding"


TYPES: dict[str, type] = {
    "model_path": str, "tokenizer_path": str, "embedding_model_path": str, "host": str, "port": int, "backend": str,
    "device": str, "dtype": str, "quantize": int, "device_map": str, "served_model_name": str, "model_aliases": list,
    "embedding_model_name": str, "embedding_model_aliases": list, "max_body_bytes": int, "max_context": int,
    "max_tokens": int, "api_keys": list, "log_file": str, "queue_size": int, "concurrency": int, "trust_remote_code": bool,
    "tensor_parallel_size": int, "embedding_batch_size": int, "threads": int,
}
NULLABLE = {"tokenizer_path", "embedding_model_path", "embedding_model_name", "quantize", "device_map", "log_file", "tensor_parallel_size",
            "threads"}


def _coerce(key: str, value: Any, pos: Pos) -> Any:
    kind = TYPES[key]
    if value is None:
        if key in NULLABLE:
            return None
        raise LoadError(f"'{key}' must not be empty", pos=pos, field=key)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return str(value).lower() in ("1", "true", "yes", "on")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
    elif kind is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    elif kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise LoadError(f"'{key}' must be {'a list of strings' if kind is list else 'a ' + kind.__name__}, got {value!r}", pos=pos, field=key)


def _validate(config: ServerConfig, positions: dict[str, Pos], source: str) -> None:
    def pos(key: str) -> Pos:
        return positions.get(key, Pos(source))

    if not config.model_path:
        raise LoadError("'model_path' is required", pos=Pos(source), field="model_path", hint="the directory of the model (the .gguf file for llama_cpp, the .bin GGML file for chatglm_cpp)")
    for key, allowed in (("backend", BACKENDS), ("device", DEVICES), ("dtype", DTYPES)):
        if getattr(config, key) not in allowed:
            raise LoadError(f"'{key}' must be one of {', '.join(allowed)}, got {getattr(config, key)!r}", pos=pos(key), field=key)
    if config.quantize not in (None, 4, 8):
        raise LoadError(f"'quantize' must be 4, 8 or null, got {config.quantize!r}", pos=pos("quantize"), field="quantize")
    if config.device_map not in (None, "auto"):
        raise LoadError(f"'device_map' must be 'auto' or null, got {config.device_map!r}", pos=pos("device_map"), field="device_map")
    if not 0 < config.port < 65536:
        raise LoadError(f"'port' must be between 1 and 65535, got {config.port}", pos=pos("port"), field="port")
    if config.max_body_bytes < 1024:
        raise LoadError(f"'max_body_bytes' must be at least 1024, got {config.max_body_bytes}", pos=pos("max_body_bytes"), field="max_body_bytes")
    for key in ("max_context", "max_tokens", "queue_size", "concurrency", "embedding_batch_size"):
        if getattr(config, key) < 1:
            raise LoadError(f"'{key}' must be at least 1", pos=pos(key), field=key)
    if config.threads is not None and config.threads < 1:
        raise LoadError("'threads' must be at least 1 (or null: every core)", pos=pos("threads"), field="threads")
    if config.device == "cpu" and config.dtype == "float16":
        raise LoadError("float16 is not supported on the CPU", pos=pos("dtype"), field="dtype", hint="use dtype: float32 (or auto) with device: cpu")


def load_config(path: str | None, overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> ServerConfig:
    """Read api_server.yaml, apply GLMOPS_SERVER_* variables and explicit overrides, validate."""
    from glmops.yamlpos import PosDict, load_yaml

    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    positions: dict[str, Pos] = {}
    source = path or "<environment>"
    if path:
        loaded = load_yaml(path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise LoadError("the server config must be a mapping of keys to values", pos=Pos(path))
        for key, value in loaded.items():
            key_pos = loaded.pos_of(key) if isinstance(loaded, PosDict) else Pos(path)
            if key not in TYPES:
                import difflib

                near = difflib.get_close_matches(str(key), list(TYPES), n=2)
                raise LoadError(f"unknown key '{key}'", pos=key_pos, field=str(key),
                                hint=(f"did you mean: {', '.join(near)}? " if near else "") + "keys: " + ", ".join(TYPES))
            data[key] = _coerce(key, value, key_pos)
            positions[key] = key_pos
    for key in TYPES:
        name = f"GLMOPS_SERVER_{key.upper()}"
        if name in environ:
            data[key] = _coerce(key, environ[name] if environ[name] != "" else None, Pos(f"${name}"))
            positions[key] = Pos(f"${name}")
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = _coerce(key, value, Pos(f"--{key.replace('_', '-')}"))
            positions[key] = Pos(f"--{key.replace('_', '-')}")
    config = ServerConfig(**data)
    _validate(config, positions, source)
    return config

