"""What the two CPU engines' backends (llama_cpp, chatglm_cpp) share.

glmops builds ChatGLM3's prompt ids itself (`chatglm3_prompt_ids`), runs the engine token by token
under one lock, turns the ids into text as they come (never cutting a character in two), cuts the
answer at a stop string and reports why it ended. A subclass gives `text_ids` (plain text to ids),
`token_ids` (the engine's generation loop) and `decoded` (ids to text).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from glmops.server.backends.base import Backend, BackendError, Delta, GenerationParams
from glmops.server.backends.ggml_files import chatglm3_prompt_ids
from glmops.server.prompt import Turn


class CppEngineBackend(Backend):
    special: dict[str, int]  # ChatGLM3's special tokens -> ids, set by load()
    n_ctx: int  # the context the engine was loaded with

    def __init__(self) -> None:
        self.lock = threading.Lock()  # one generation at a time: the engines keep one state

    def text_ids(self, text: str) -> list[int]:  # pragma: no cover - every subclass has its own
        """Plain text to ids; special-token spellings in it stay text."""
        raise NotImplementedError

    def token_ids(self, ids: list[int], params: GenerationParams, cancel: threading.Event, limit: int) -> Iterator[int]:  # pragma: no cover
        """Generated ids, at most `limit`, up to (not including) a stop token. Called with self.lock held."""
        raise NotImplementedError

    def decoded(self, generated: list[int], *, final: bool) -> str:  # pragma: no cover
        """The text of the ids so far; unless `final`, without a trailing character still missing bytes."""
        raise NotImplementedError

    def prompt_ids(self, turns: list[Turn], prefix: str = "") -> list[int]:
        return chatglm3_prompt_ids(turns, self.text_ids, self.special.__getitem__, prefix)

    def count_tokens(self, turns: list[Turn]) -> int:
        return len(self.prompt_ids(turns))

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
                whole = self.decoded(generated, final=False)
                if len(whole) <= len(text):
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
                whole = self.decoded(generated, final=True)
                if len(whole) > len(text):
                    yield Delta(whole[len(text):])
        finish = "length" if len(generated) >= limit and not stopped_by_string else "stop"
        yield Delta("", done=True, prompt_tokens=prompt_tokens, completion_tokens=len(generated), finish_reason=finish)
