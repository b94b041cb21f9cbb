"""Model backends behind the API routes. `get_backend(config)` picks one by name."""

from __future__ import annotations

from glmops.server.backends.base import Backend
from glmops.server.config import ServerConfig


def get_backend(config: ServerConfig) -> Backend:
    """The backend the config names (its heavy imports happen here, on the target only)."""
    if config.backend == "transformers":
        from glmops.server.backends.transformers_backend import TransformersBackend

        return TransformersBackend(config)
    if config.backend == "llama_cpp":
        from glmops.server.backends.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(config)
    if config.backend == "chatglm_cpp":
        from glmops.server.backends.chatglm_cpp import ChatglmCppBackend

        return ChatglmCppBackend(config)
    raise ValueError(f"backend {config.backend!r} is not served by glmops serve (vllm runs its own server)")
