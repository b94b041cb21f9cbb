"""Request limits checked before any model work: body size, JSON shape, a cheap prompt-length bound."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

MAX_DEPTH = 64  # nesting levels of a request body; OpenAI requests need fewer than 10


class LimitError(ValueError):
    """A request over a limit: `status` is 413 (body) or 400 (JSON shape)."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status = status
        self.code = code


async def read_limited(declared: str | None, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The body, or 413 as soon as Content-Length or the bytes received pass `limit`."""
    too_large = f"the request body is larger than this server accepts ({limit} bytes, max_body_bytes)"
    if declared is not None:
        if not declared.strip().isdigit():
            raise LimitError(400, "the Content-Length header is not a number", "invalid_request")
        if int(declared) > limit:
            raise LimitError(413, too_large + f"; it declares {int(declared)} bytes", "request_too_large")
    received = bytearray()
    async for chunk in chunks:
        received += chunk
        if len(received) > limit:
            raise LimitError(413, too_large, "request_too_large")
    return bytes(received)


def parse_json(raw: bytes) -> Any:
    """JSON with no nesting deeper than MAX_DEPTH and no lone surrogates in any string."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise LimitError(400, f"the request body is nested too deeply (at most {MAX_DEPTH} levels)", "invalid_json") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, and an integer of more than 4300 digits
        raise LimitError(400, f"the request body is not valid JSON: {exc}", "invalid_json") from None
    _check(body, 0, "body")
    return body


def _check(value: Any, depth: int, where: str) -> None:
    if depth > MAX_DEPTH:
        raise LimitError(400, f"the request body is nested too deeply (at most {MAX_DEPTH} levels)", "invalid_json")
    if isinstance(value, str):
        _text(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _text(key, where)
            _check(item, depth + 1, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, depth + 1, f"{where}[{index}]")


def _text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise LimitError(400, f"{where} contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text; "
                         "send valid Unicode", "invalid_json") from None


def prompt_chars_over(chars: int, max_context: int, max_token_chars: int) -> bool:
    """True when a prompt of `chars` characters cannot fit max_context tokens whatever its text.

    Every token covers at most `max_token_chars` characters (the longest piece in the vocabulary), so
    such a prompt has more than chars / max_token_chars tokens; no tokenizer needs to run to know it.
    """
    return chars > max_context * max_token_chars
