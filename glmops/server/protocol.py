"""Checking OpenAI requests: every problem becomes a clear 400 naming the parameter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from glmops.server.backends.base import GenerationParams
from glmops.server.config import ServerConfig

ROLES = ("system", "user", "assistant", "tool", "function")


class RequestError(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value"):
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    params: GenerationParams
    stream: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)
    legacy_functions: bool = False
    include_usage: bool = False

    @property
    def tool_names(self) -> set[str] | None:
        names = {t.get("function", t).get("name") for t in self.tools}
        return {n for n in names if n} or None


@dataclass
class EmbeddingRequest:
    texts: list[str]
    model: str | None = None
    encoding_format: str = "float"


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"'{key}' must be a number, got {value!r}", key)
    if not low <= value <= high:
        raise RequestError(f"'{key}' must be between {low} and {high}, got {value}", key)
    return float(value)


def parse_chat(body: Any, config: ServerConfig) -> ChatRequest:
    """Validate a /v1/chat/completions body."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != config.served_model_name:
        raise RequestError(f"unknown model '{model}': this server serves '{config.served_model_name}'", "model", "model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of messages", "messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise RequestError(f"{where} must be an object with 'role' and 'content'", where)
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", f"{where}.role")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise RequestError(f"{where}.content must be a string, got {type(content).__name__}", f"{where}.content")
        if content is None and role != "assistant":
            raise RequestError(f"{where}.content is missing", f"{where}.content")
    if messages[-1]["role"] == "assistant":
        raise RequestError("the last message must not be from the assistant: there is nothing to answer", "messages")
    n = body.get("n", 1)
    if n != 1:
        raise RequestError("'n' must be 1: this server returns one choice per request", "n", "unsupported_parameter")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise RequestError("'logprobs' is not supported by this server", "logprobs", "unsupported_parameter")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is None:
        max_tokens = config.max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError(f"'max_tokens' must be a positive integer, got {max_tokens!r}", "max_tokens")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise RequestError("'stop' must be a string or a list of up to 4 non-empty strings", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError("'seed' must be an integer", "seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be true or false", "stream")
    tools = body.get("tools") or []
    legacy = False
    if not tools and body.get("functions"):
        tools = [{"type": "function", "function": f} for f in body["functions"]]
        legacy = True
    if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("function", t).get("name"), str) for t in tools):
        raise RequestError("'tools' must be a list of {type: function, function: {name, description, parameters}}", "tools")
    choice = body.get("tool_choice", body.get("function_call"))
    if choice == "none":
        tools, legacy = [], False
    elif isinstance(choice, dict):
        wanted = choice.get("function", choice).get("name")
        tools = [t for t in tools if t.get("function", t).get("name") == wanted]
        if not tools:
            raise RequestError(f"tool_choice names '{wanted}', which is not in tools", "tool_choice")
    min_tokens = body.get("min_tokens", 0)
    if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or not 0 <= min_tokens <= max_tokens:
        raise RequestError("'min_tokens' must be an integer between 0 and max_tokens", "min_tokens")
    options = body.get("stream_options") or {}
    params = GenerationParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.8, 0.0, 2.0),
        top_p=_number(body, "top_p", 0.8, 0.0, 1.0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.1, 10.0),
        seed=seed,
        stop=stop,
        min_tokens=min_tokens,
    )
    return ChatRequest(messages=messages, params=params, stream=stream, tools=tools, legacy_functions=legacy,
                       include_usage=bool(options.get("include_usage")) if isinstance(options, dict) else False)


def parse_embeddings(body: Any) -> EmbeddingRequest:
    """Validate a /v1/embeddings body."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise RequestError("'input' must be a string or a non-empty list of strings", "input")
    if any(not t for t in texts):
        raise RequestError("'input' must not contain empty strings", "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise RequestError("'encoding_format' must be float or base64", "encoding_format")
    return EmbeddingRequest(texts=texts, model=body.get("model"), encoding_format=encoding)
