"""The chatglm_cpp backend: a GGML model (q4_0: ~3.5 GB) on the CPU through the chatglm_cpp package."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

from glmops.server.backends.base import Backend, BackendError, Delta, GenerationParams
from glmops.server.config import ServerConfig
from glmops.server.prompt import Turn

GGML_MAGIC = b"ggml"
INSTALL = "CMAKE_POLICY_VERSION_MINIMUM=3.5 pip install chatglm-cpp  (builds from source, ~5 minutes)"


def check_ggml_file(path: str) -> None:
    """A clear error unless `path` is a chatglm.cpp GGML file."""
    if not os.path.isfile(path):
        raise BackendError(f"model_path {path} is not a file: the chatglm_cpp backend loads one GGML .bin file (convert with chatglm_cpp.convert)")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != GGML_MAGIC:
        raise BackendError(f"{path} is not a chatglm.cpp GGML file (it starts with {magic!r}, not b'ggml'); "
                           "convert the checkpoint: python3 -m chatglm_cpp.convert -i MODEL_DIR -t q4_0 -o chatglm3-ggml.bin")


class ChatglmCppBackend(Backend):
    name = "chatglm_cpp"
    unsupported = frozenset({"seed", "min_tokens", "presence_penalty", "frequency_penalty", "prefix"})  # Pipeline.chat() has no such options

    def __init__(self, config: ServerConfig):
        self.config = config
        self.pipeline: Any = None
        self.lock = threading.Lock()

    def load(self) -> None:
        check_ggml_file(self.config.model_path)
        try:
            import chatglm_cpp
        except ImportError:
            raise BackendError(f"the chatglm_cpp backend needs the chatglm-cpp package: {INSTALL}") from None
        self.module = chatglm_cpp
        self.pipeline = chatglm_cpp.Pipeline(self.config.model_path)
        self.load_embedder(self.config.embedding_model_path, "cpu", self.config.embedding_batch_size)

    def info(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": "ggml", "quantize": None}

    def _messages(self, turns: list[Turn]) -> list[Any]:
        roles = {"observation": "observation", "system": "system", "user": "user", "assistant": "assistant"}
        return [self.module.ChatMessage(role=roles[t.role], content=t.content) for t in turns]

    def count_tokens(self, turns: list[Turn]) -> int:
        return len(self.pipeline.tokenizer.encode_messages(self._messages(turns), self.config.max_context))

    def generate(self, turns: list[Turn], params: GenerationParams, cancel: threading.Event) -> Iterator[Delta]:
        prompt_tokens = self.count_tokens(turns)
        text = ""
        with self.lock:
            for delta in self.pipeline.chat(
                self._messages(turns), max_length=self.config.max_context, max_new_tokens=params.max_tokens,
                do_sample=params.temperature > 0, top_p=params.top_p, temperature=max(params.temperature, 1e-5),
                repetition_penalty=params.repetition_penalty, stream=True,
            ):
                if cancel.is_set():
                    break
                piece = delta.content
                text += piece
                if params.stop and any(s in text for s in params.stop):
                    cut = min(text.find(s) for s in params.stop if s in text)
                    keep = cut - (len(text) - len(piece))
                    if keep > 0:
                        yield Delta(piece[:keep])
                    break
                yield Delta(piece)
        completion = len(self.pipeline.tokenizer.encode(text)) if text else 0  # pieces are not tokens
        finish = "length" if completion >= params.max_tokens else "stop"
        yield Delta("", done=True, prompt_tokens=prompt_tokens, completion_tokens=completion, finish_reason=finish)
