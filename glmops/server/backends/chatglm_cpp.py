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

from glmops.server.backends.base import Backend, BackendError, Delta, GenerationParams
from glmops.server.backends.ggml_files import CHATGLM3_SPECIAL, chatglm3_prompt_ids
from glmops.server.backends.ggml_files import check_ggml_file as _check_ggml_file
from glmops.server.config import ServerConfig
from glmops.server.prompt import STOP_TOKENS, Turn

INSTALL = "CMAKE_POLICY_VERSION_MINIMUM=3.5 pip install 'chatglm-cpp==0.4.2'  (builds from source, 5-16 minutes), or pip install 'glmops[cpu]'"


def check_ggml_file(path: str) -> None:
    """A clear error unless `path` is a chatglm.cpp GGML file of ChatGLM3 (kept for callers of the old name)."""
    _check_ggml_file(path)


class ChatglmCppBackend(Backend):
    name = "chatglm_cpp"
    # chatglm.cpp samples inside C++ from its own unseeded generator and has no penalties but repetition's
    unsupported = frozenset({"seed", "min_tokens", "presence_penalty", "frequency_penalty"})

    def __init__(self, config: ServerConfig):
        self.config = config
        self.pipeline: Any = None
        self.facts: dict[str, Any] = {}
        self.lock = threading.Lock()

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

    def prompt_ids(self, turns: list[Turn], prefix: str = "") -> list[int]:
        return chatglm3_prompt_ids(turns, self.text_ids, self.special.__getitem__, prefix)

    def count_tokens(self, turns: list[Turn]) -> int:
        return len(self.prompt_ids(turns))

    def token_ids(self, ids: list[int], params: GenerationParams, cancel: threading.Event, limit: int) -> Iterator[int]:
        """Generated ids, at most `limit`, up to (not including) a stop token. Call with self.lock held."""
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

    def generate(self, turns: list[Turn], params: GenerationParams, cancel: threading.Event) -> Iterator[Delta]:
        ids = self.prompt_ids(turns, getattr(params, "prefix", ""))
        prompt_tokens = len(ids)
        if prompt_tokens >= self.n_ctx:
            raise BackendError(f"the conversation has {prompt_tokens} tokens; the limit (max_context) is {self.n_ctx}")
        limit = min(params.max_tokens, self.n_ctx - prompt_tokens)
        generated: list[int] = []
        text, stopped_by_string = "", False
        with self.lock:
            for token in self.token_ids(ids, params, cancel, limit):
                generated.append(token)
                try:
                    whole = self.pipeline.tokenizer.decode(generated, skip_special_tokens=False)
                except UnicodeDecodeError:
                    continue
                if whole.endswith("\ufffd") or len(whole) <= len(text):
                    continue  # a character split over tokens: wait for its last byte
                piece, text = whole[len(text):], whole
                cut = min((text.find(s) for s in params.stop if s in text), default=-1)
                if cut >= 0:
                    keep = cut - (len(text) - len(piece))
                    if keep > 0:
                        yield Delta(piece[:keep])
                    stopped_by_string = True
                    break
                yield Delta(piece)
            if not stopped_by_string and generated:
                whole = self.pipeline.tokenizer.decode(generated, skip_special_tokens=False).encode("utf-8", "replace").decode()
                if len(whole) > len(text):
                    yield Delta(whole[len(text):])
        finish = "length" if len(generated) >= limit and not stopped_by_string else "stop"
        yield Delta("", done=True, prompt_tokens=prompt_tokens, completion_tokens=len(generated), finish_reason=finish)
