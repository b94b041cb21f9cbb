"""What every backend provides to the routes."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from glmops.server.prompt import Turn


class BackendError(Exception):
    """A problem the user can fix (missing package, wrong file, unsupported option)."""


@dataclass
class GenerationParams:
    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.8
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    min_tokens: int = 0  # vLLM's extension: do not stop before this many tokens


@dataclass
class Delta:
    """A piece of generated text. The last one of a generation carries the totals."""

    text: str
    done: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None  # stop | length


class Backend(ABC):
    """A loaded chat model (and optional embedding model)."""

    name: str = ""
    embedder: Any = None  # an EmbeddingModel when embedding_model_path is configured

    @abstractmethod
    def load(self) -> None:
        """Load the models (slow; runs in a background thread while /health says 503)."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """device, dtype, quantize, and GPU memory where there is a GPU."""

    @abstractmethod
    def generate(self, turns: list[Turn], params: GenerationParams, cancel: threading.Event) -> Iterator[Delta]:
        """Yield text as it is generated; stop early when `cancel` is set."""

    @abstractmethod
    def count_tokens(self, turns: list[Turn]) -> int:
        """Prompt tokens of a conversation."""

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """(normalized vectors, tokens used); BackendError when no embedding model is configured."""
        if self.embedder is None:
            raise BackendError("no embedding model is configured (set embedding_model_path)")
        return self.embedder.embed(texts)

    def load_embedder(self, path: str | None, device: Any, batch_size: int) -> None:
        """Load the embedding model, if one is configured."""
        if not path:
            return
        import os

        from glmops.server.backends.embeddings import EmbeddingModel

        if not os.path.isdir(path):
            raise BackendError(f"embedding_model_path {path} is not a directory with a model")
        self.embedder = EmbeddingModel(path, device, batch_size)
