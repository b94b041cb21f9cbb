"""The chatglm_cpp backend: a GGML model (q4_0: ~3.5 GB) on the CPU through chatglm-cpp 0.4.2.

It uses chatglm.cpp's token-level API (`model.generate_next_token`), not `Pipeline.chat()`/`generate()`:
0.4.2's `Pipeline.generate()` raises TypeError (it forgets the `image` argument), its `max_tokens` counts
the prompt, and `chat()` neither renders tool metadata nor stops where glmops wants. glmops builds the
prompt ids (ChatGLM3's template), counts only generated tokens against max_tokens, and stops at eos,
<|user|> and <|observation|>.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from glmops.server.backends.base import BackendError, GenerationParams
from glmops.server.backends.cpp_engine import CppEngineBackend
from glmops.server.backends.ggml_files import CHATGLM3_SPECIAL
from glmops.server.backends.ggml_files import check_ggml_file as _check_ggml_file
from glmops.server.config import ServerConfig
from glmops.server.prompt import STOP_TOKENS

INSTALL = "CMAKE_POLICY_VERSION_MINIMUM=3.5 pip install 'chatglm-cpp==0.4.2'  (builds from source, 5-16 minutes), or pip install 'glmops[cpu]'"


def check_ggml_file(path: str) -> None:
    """A clear error unless `path` is a chatglm.cpp GGML file of ChatGLM3 (kept for callers of the old name)."""
    _check_ggml_file(path)


class ChatglmCppBackend(CppEngineBackend):
    name = "chatglm_cpp"
    # chatglm.cpp samples inside C++ from its own unseeded generator and has no penalties but repetition's
    unsupported = frozenset({"seed", "min_tokens", "presence_penalty", "frequency_penalty"})

    def __init__(self, config: ServerConfig):
        super().__init__()
        self.config = config
        self.pipeline: Any = None
        self.facts: dict[str, Any] = {}

    def load(self) -> None:
        self.facts = _check_ggml_file(self.config.model_path)
        try:
            import chatglm_cpp
        except ImportError:
            raise BackendError(f"the chatglm_cpp backend needs the chatglm-cpp package: {INSTALL}") from None
        self.module = chatglm_cpp
        self.n_ctx = min(self.config.max_context, self.facts.get("max_length") or self.config.max_context)
        try:
            self.pipeline = chatglm_cpp.Pipeline(self.config.model_path, max_length=self.n_ctx)
        except RuntimeError as exc:
            raise BackendError(f"chatglm.cpp could not load {self.config.model_path}: {exc}") from None
        if self.pipeline.model.config.model_type_name != "ChatGLM3":
            raise BackendError(f"{self.config.model_path} is a {self.pipeline.model.config.model_type_name} model; glmops serves ChatGLM3")
        tokenizer = self.pipeline.tokenizer
        gmask = tokenizer.encode("", 2)[0]  # ChatGLM3Tokenizer.encode() puts [gMASK] sop first; the 9 special ids follow the pieces
        self.special = {token: gmask - 1 + index for index, token in enumerate(CHATGLM3_SPECIAL)}
        if tokenizer.decode([self.special["<|user|>"]], skip_special_tokens=False) != "<|user|>":
            raise BackendError(f"{self.config.model_path}: its tokenizer has no <|user|> token where ChatGLM3's is")
        self.stop_ids = {self.pipeline.model.config.eos_token_id, *(self.special[token] for token in STOP_TOKENS)}
        self.load_embedder(self.config.embedding_model_path, "cpu", self.config.embedding_batch_size)

    def info(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": self.facts.get("dtype", "ggml"), "quantize": None}

    def text_ids(self, text: str) -> list[int]:
        """Plain text to ids with chatglm.cpp's sentencepiece (its encode() adds [gMASK] sop: dropped here)."""
        return list(self.pipeline.tokenizer.encode(text, len(text.encode()) + 8))[2:]

    def token_ids(self, ids: list[int], params: GenerationParams, cancel: threading.Event, limit: int) -> Iterator[int]:
        model = self.pipeline.model
        config = self.module._C.GenerationConfig(
            max_length=self.n_ctx, max_new_tokens=limit, max_context_length=self.n_ctx, do_sample=params.temperature > 1e-5,
            top_k=0, top_p=params.top_p, temperature=max(params.temperature, 1e-5), repetition_penalty=params.repetition_penalty,
        )
        tokens = list(ids)
        n_past, prompt_length = 0, len(ids)
        for _ in range(limit):
            if cancel.is_set():
                return
            token = model.generate_next_token(tokens, None, config, n_past, prompt_length)
            n_past = model.count_tokens(tokens, None)
            if token in self.stop_ids:
                return
            tokens.append(token)
            yield int(token)

    def decoded(self, generated: list[int], *, final: bool) -> str:
        try:
            text = self.pipeline.tokenizer.decode(generated, skip_special_tokens=False)
        except UnicodeDecodeError:
            return ""
        return text.encode("utf-8", "replace").decode() if final else text.rstrip("\ufffd")
