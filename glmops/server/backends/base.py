"""What every backend provides to the routes."""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from glmops.server.backends.embeddings import EmbeddingModel
from glmops.server.backends.errors import BackendError
from glmops.server.prompt import Turn


@dataclass
class GenerationParams:
    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.8
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    min_tokens: int = 0  # vLLM's extension: do not stop before this many tokens
    presence_penalty: float = 0.0  # OpenAI's: minus this from every token already generated
    frequency_penalty: float = 0.0  # OpenAI's: minus this times how often a token was generated
    prefix: str = ""  # the answer starts with this text (a forced tool call); it is part of the prompt

    def non_default(self) -> set[str]:
        """Names of the parameters a request set away from their neutral value."""
        neutral = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "seed": None,
                   "min_tokens": 0, "prefix": ""}
        return {name for name, value in neutral.items() if getattr(self, name) != value}


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
    # GenerationParams fields this backend cannot honour: a request that sets one gets a 400, not silence
    unsupported: frozenset[str] = frozenset()

    def max_token_chars(self) -> int:
        """The most characters one token can stand for (bounds a prompt's tokens without tokenizing it)."""
        return 64

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

    def embed_ids(self, inputs: list[list[int]]) -> tuple[list[list[float]], int]:
        """Like embed(), from token ids of the embedding model's own tokenizer."""
        if self.embedder is None:
            raise BackendError("no embedding model is configured (set embedding_model_path)")
        return self.embedder.embed_ids(inputs)

    def embedding_dimensions(self) -> int | None:
        return self.embedder.dimensions if self.embedder is not None else None

    def load_embedder(self, path: str | None, device: Any, batch_size: int) -> None:
        """Load the embedding model, if one is configured."""
        if not path:
            return
        if not os.path.isdir(path):
            raise BackendError(f"embedding_model_path {path} is not a directory with a model")
        self.embedder = EmbeddingModel(path, device, batch_size)
