"""The llama_cpp backend: a GGUF model (ChatGLM3-6B q4_0: ~3.5 GB) on the CPU through llama-cpp-python.

glmops builds the prompt's token ids itself (ChatGLM3's template, `chatglm3_prompt_ids`) and parses tool
calls itself; llama-cpp-python's own `chatglm3` chat format is not used (it drops [gMASK]sop and stops
on </s>). Generation stops at eos, <|user|> and <|observation|>.
"""

from __future__ import annotations

import codecs
import os
import random
import threading
from collections.abc import Iterator
from typing import Any

from glmops.server.backends.base import BackendError, GenerationParams
from glmops.server.backends.cpp_engine import CppEngineBackend
from glmops.server.backends.ggml_files import check_gguf
from glmops.server.config import ServerConfig
from glmops.server.prompt import STOP_TOKENS

INSTALL = "CMAKE_ARGS=-DGGML_NATIVE=OFF pip install 'llama-cpp-python==0.3.36'  (builds from source, 5-10 minutes), or pip install 'glmops[cpu]'"

RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: this 32-bit value means "pick a random seed"


def engine_seed(seed: int | None) -> int:
    """A request's seed (any 64-bit integer) as llama.cpp's 32-bit one: the same seed, the same sample.

    ctypes would wrap it into 32 bits silently, and every value that wraps to RANDOM_SEED (-1 among them)
    would sample at random; folding into 0..RANDOM_SEED-1 keeps each seed reproducible.
    """
    return random.randrange(RANDOM_SEED) if seed is None else seed % RANDOM_SEED


class LlamaCppBackend(CppEngineBackend):
    name = "llama_cpp"
    unsupported = frozenset({"min_tokens"})  # llama.cpp's sampler chain has no "no eos before N tokens"

    def __init__(self, config: ServerConfig):
        super().__init__()
        self.config = config
        self.llm: Any = None
        self.facts: dict[str, Any] = {}
        self.threads = config.threads or os.cpu_count() or 1

    def load(self) -> None:
        self.facts = check_gguf(self.config.model_path)
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BackendError(f"the llama_cpp backend needs the llama-cpp-python package: {INSTALL}") from None
        n_ctx = min(self.config.max_context, self.facts["context_length"])
        try:
            self.llm = Llama(model_path=self.config.model_path, n_ctx=n_ctx, n_threads=self.threads, n_threads_batch=self.threads,
                             n_batch=min(512, n_ctx), verbose=False, last_n_tokens_size=n_ctx)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"llama.cpp could not load {self.config.model_path}: {exc}") from None
        self.n_ctx = n_ctx
        self.special = {token: self._special_id(token) for token in ("[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")}
        self.stop_ids = {self.llm.token_eos(), *(self.special[token] for token in STOP_TOKENS)}
        self.load_embedder(self.config.embedding_model_path, "cpu", self.config.embedding_batch_size)

    def _special_id(self, token: str) -> int:
        ids = self.llm.tokenize(token.encode(), add_bos=False, special=True)
        if len(ids) != 1:
            raise BackendError(f"{self.config.model_path} has no special token {token}: it is not a ChatGLM3 vocabulary")
        return int(ids[0])

    def info(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": self.facts.get("dtype"), "quantize": None, "threads": self.threads}

    def max_token_chars(self) -> int:
        return int(self.facts.get("longest_token", 64))

    def text_ids(self, text: str) -> list[int]:
        """Plain text to ids (sentencepiece's dummy prefix included; special-token spellings stay text)."""
        return [int(i) for i in self.llm.tokenize(text.encode(), add_bos=False, special=False)]

    def token_ids(self, ids: list[int], params: GenerationParams, cancel: threading.Event, limit: int) -> Iterator[int]:
        greedy = params.temperature <= 1e-5
        self.llm.set_seed(engine_seed(params.seed))
        stream = self.llm.generate(
            ids, temp=0.0 if greedy else params.temperature, top_p=1.0 if greedy else params.top_p, top_k=0, min_p=0.0,
            repeat_penalty=params.repetition_penalty, presence_penalty=getattr(params, "presence_penalty", 0.0),
            frequency_penalty=getattr(params, "frequency_penalty", 0.0),
        )
        produced = 0
        for token in stream:
            if cancel.is_set() or token in self.stop_ids:
                return
            yield int(token)
            produced += 1
            if produced >= limit:  # return before the generator evaluates one more token
                return

    def decoded(self, generated: list[int], *, final: bool) -> str:
        raw = self.llm.detokenize(generated, special=True)  # the whole answer: its first piece's space is dropped
        return codecs.getincrementaldecoder("utf-8")("replace").decode(raw, final=final)
