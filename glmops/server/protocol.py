"""Checking OpenAI requests: every problem becomes a clear 400 (404 for an unknown model) naming the parameter."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any

from glmops.server.backends.base import GenerationParams
from glmops.server.config import ServerConfig

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule; also keeps names one line in the prompt
MAX_EMBEDDING_INPUTS = 2048
# `seed`: OpenAI's range, a signed 64-bit integer. Every backend takes all of it: torch.manual_seed takes
# -2**63 .. 2**64-1 (room for the +1, +2 of a retry), llama_cpp folds it into llama.cpp's 32 bits.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


class RequestError(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value", status: int = 400):
        super().__init__(message)
        self.param = param
        self.code = code
        self.status = status


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    params: GenerationParams
    stream: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)
    legacy_functions: bool = False
    include_usage: bool = False
    forced_tool: str | None = None  # tool_choice naming one function
    require_tool: bool = False  # tool_choice "required" (or a named function)
    response_format: dict[str, Any] | None = None  # json_object / json_schema

    @property
    def tool_names(self) -> set[str] | None:
        names = {t["function"]["name"] for t in self.tools}
        return names or None


@dataclass
class CompletionRequest:
    prompt: str
    params: GenerationParams
    stream: bool = False
    include_usage: bool = False
    echo: bool = False


@dataclass
class EmbeddingRequest:
    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    model: str | None = None
    encoding_format: str = "float"
    dimensions: int | None = None

    @property
    def count(self) -> int:
        return len(self.texts or self.token_ids or [])


def model_matches(name: str, served: str, aliases: list[str]) -> bool:
    """The served name, or any alias pattern (fnmatch: `chatglm3*`)."""
    return name == served or any(fnmatch.fnmatchcase(name, pattern) for pattern in aliases)


def check_model(body: dict[str, Any], served: str, aliases: list[str]) -> None:
    """404 model_not_found, as OpenAI answers, for a `model` this server does not serve."""
    model = body.get("model")
    if model is None:
        return
    if not isinstance(model, str):
        raise RequestError(f"'model' must be a string, got {type(model).__name__}", "model")
    if not model_matches(model, served, aliases):
        also = f" (also accepted: {', '.join(aliases)})" if aliases else ""
        raise RequestError(f"The model '{model}' does not exist: this server serves '{served}'{also}", "model", "model_not_found", 404)


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"'{key}' must be a number, got {value!r}", key)
    if not low <= value <= high:
        raise RequestError(f"'{key}' must be between {low} and {high}, got {value}", key)
    return float(value)


def _content(content: Any, where: str) -> str:
    """A message's content as text: a string, or a list of text parts (anything else is a 400)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of content parts, got {type(content).__name__}", where)
    texts = []
    for index, part in enumerate(content):
        here = f"{where}[{index}]"
        if not isinstance(part, dict):
            raise RequestError(f"{here} must be an object like {{\"type\": \"text\", \"text\": \"...\"}}", here)
        kind = part.get("type")
        if kind in ("image_url", "input_image", "image", "input_audio", "file", "video_url"):
            raise RequestError(f"{here} is an {kind} part: this model is text-only; send text parts only", f"{here}.type", "unsupported_content")
        if kind != "text":
            raise RequestError(f"{here}.type must be 'text', got {kind!r}", f"{here}.type")
        if not isinstance(part.get("text"), str):
            raise RequestError(f"{here}.text must be a string, got {type(part.get('text')).__name__}", f"{here}.text")
        texts.append(part["text"])
    return "".join(texts)


def _function(value: Any, where: str, *, with_arguments: bool) -> dict[str, Any]:
    """A function object {name, ...}: a tool definition, or (with_arguments) an earlier call."""
    if not isinstance(value, dict):
        raise RequestError(f"{where} must be an object with 'name'" + (" and 'arguments'" if with_arguments else ""), where)
    name = value.get("name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise RequestError(f"{where}.name must be 1-64 letters, digits, '_' or '-', got {name!r}", f"{where}.name")
    if with_arguments:
        arguments = value.get("arguments", "{}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except json.JSONDecodeError:
                raise RequestError(f"{where}.arguments must be a JSON object in a string, got {value.get('arguments')!r}", f"{where}.arguments") from None
        if not isinstance(arguments, dict):
            raise RequestError(f"{where}.arguments must be a JSON object (in a string)", f"{where}.arguments")
        return {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}
    for key, kind in (("description", str), ("parameters", dict)):
        if value.get(key) is not None and not isinstance(value[key], kind):
            raise RequestError(f"{where}.{key} must be {'a string' if kind is str else 'an object (a JSON schema)'}", f"{where}.{key}")
    return value


def _message(message: Any, where: str) -> dict[str, Any]:
    """One message, normalised: developer -> system, content -> text, tool calls checked."""
    if not isinstance(message, dict):
        raise RequestError(f"{where} must be an object with 'role' and 'content'", where)
    role = message.get("role")
    if role not in ROLES:
        raise RequestError(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", f"{where}.role")
    out: dict[str, Any] = {"role": "system" if role == "developer" else role}
    content = message.get("content")
    if content is None:
        if role != "assistant":
            raise RequestError(f"{where}.content is missing", f"{where}.content")
        out["content"] = None
    else:
        out["content"] = _content(content, f"{where}.content")
    if message.get("name") is not None and not isinstance(message["name"], str):
        raise RequestError(f"{where}.name must be a string", f"{where}.name")
    if role == "assistant":
        calls = message.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise RequestError(f"{where}.tool_calls must be a list of {{id, type, function: {{name, arguments}}}}", f"{where}.tool_calls")
            checked = []
            for index, call in enumerate(calls):
                here = f"{where}.tool_calls[{index}]"
                if not isinstance(call, dict):
                    raise RequestError(f"{here} must be an object {{id, type, function: {{name, arguments}}}}", here)
                checked.append({"function": _function(call.get("function"), f"{here}.function", with_arguments=True)})
            if checked:
                out["tool_calls"] = checked
        if message.get("function_call") is not None:
            out["function_call"] = _function(message["function_call"], f"{where}.function_call", with_arguments=True)
    return out


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """(tools as [{type: function, function: {...}}], legacy) from `tools` or legacy `functions`."""
    if body.get("tools") is not None:
        tools = body["tools"]
        if not isinstance(tools, list):
            raise RequestError("'tools' must be a list of {type: function, function: {name, description, parameters}}", "tools")
        checked = []
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type", "function") != "function":
                raise RequestError(f"tools[{index}] must be {{type: function, function: {{name, description, parameters}}}}", f"tools[{index}]")
            checked.append({"type": "function", "function": _function(tool.get("function"), f"tools[{index}].function", with_arguments=False)})
        return checked, False
    if body.get("functions") is not None:
        functions = body["functions"]
        if not isinstance(functions, list):
            raise RequestError("'functions' must be a list of {name, description, parameters}", "functions")
        return [{"type": "function", "function": _function(f, f"functions[{i}]", with_arguments=False)} for i, f in enumerate(functions)], True
    return [], False


def _tool_choice(body: dict[str, Any], tools: list[dict[str, Any]], legacy: bool) -> tuple[list[dict[str, Any]], str | None, bool]:
    """(tools still offered, forced function name, tool required) from tool_choice / function_call."""
    key = "function_call" if legacy and "tool_choice" not in body else "tool_choice"
    choice = body.get(key)
    if choice is None or choice == "auto":
        return tools, None, False
    if choice == "none":
        return [], None, False
    if choice == "required" and key == "tool_choice":
        if not tools:
            raise RequestError("tool_choice 'required' needs 'tools'", key)
        if len(tools) == 1:
            return tools, tools[0]["function"]["name"], True
        return tools, None, True
    if isinstance(choice, dict):
        target = choice.get("function") if key == "tool_choice" else choice
        if key == "tool_choice" and choice.get("type", "function") != "function":
            raise RequestError("tool_choice.type must be 'function'", key)
        if not isinstance(target, dict) or not isinstance(target.get("name"), str):
            raise RequestError(f"{key} must be 'none', 'auto'{', ' + repr('required') if key == 'tool_choice' else ''} or name a function: "
                               + ("{type: function, function: {name}}" if key == "tool_choice" else "{name}"), key)
        wanted = target["name"]
        chosen = [t for t in tools if t["function"]["name"] == wanted]
        if not chosen:
            raise RequestError(f"{key} names '{wanted}', which is not in {'functions' if legacy else 'tools'}", key)
        return chosen, wanted, True
    raise RequestError(f"{key} must be 'none', 'auto', 'required' or {{type: function, function: {{name}}}}, got {choice!r}", key)


def _response_format(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    value = body.get("response_format")
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise RequestError("'response_format' must be {type: text | json_object | json_schema}", "response_format")
    if value["type"] == "text":
        return None
    if value["type"] == "json_schema":
        from glmops.server.jsonmode import SchemaError, check_schema

        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise RequestError("response_format.json_schema must be {name, schema: {...}, strict}", "response_format.json_schema")
        try:  # before any generation: the schema's own meta-schema, then the keywords this server enforces
            check_schema(spec.get("schema", {}))
        except SchemaError as exc:
            raise RequestError(f"response_format.json_schema.{exc}", f"response_format.json_schema.{exc.where}", exc.code) from None
    if not any("json" in (m.get("content") or "").lower() for m in messages):
        raise RequestError("'messages' must contain the word 'json' in some form to use 'response_format' of type "
                           f"'{value['type']}' (ask the model for JSON; OpenAI has the same rule)", "messages")
    return value


def _sampling(body: dict[str, Any], config: ServerConfig, default_max: int) -> GenerationParams:
    """The sampling parameters shared by chat and legacy completions."""
    n = body.get("n")
    if n is not None and n != 1:
        raise RequestError("'n' must be 1: this server returns one choice per request", "n", "unsupported_parameter")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise RequestError("'logprobs' is not supported by this server", "logprobs", "unsupported_parameter")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is None:
        max_tokens = default_max
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError(f"'max_tokens' must be a positive integer, got {max_tokens!r}", "max_tokens")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise RequestError("'stop' must be a string or a list of up to 4 non-empty strings", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not SEED_MIN <= seed <= SEED_MAX):
        raise RequestError(f"'seed' must be an integer from {SEED_MIN} to {SEED_MAX} (a signed 64-bit integer, as OpenAI's), got {seed!r}", "seed")
    min_tokens = body.get("min_tokens", 0)
    if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or not 0 <= min_tokens <= max_tokens:
        raise RequestError("'min_tokens' must be an integer between 0 and max_tokens", "min_tokens")
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.8, 0.0, 2.0),
        top_p=_number(body, "top_p", 0.8, 0.0, 1.0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.1, 10.0),
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        seed=seed,
        stop=stop,
        min_tokens=min_tokens,
    )


def _stream(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage)."""
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be true or false", "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise RequestError("'stream_options' must be {include_usage: true | false}", "stream_options")
    if not stream:
        raise RequestError("'stream_options' is only allowed when 'stream' is true", "stream_options")
    return stream, bool(options.get("include_usage"))


def _body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def parse_chat(body: Any, config: ServerConfig) -> ChatRequest:
    """Validate a /v1/chat/completions body."""
    body = _body(body)
    check_model(body, config.served_model_name, config.model_aliases)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RequestError("'messages' must be a non-empty list of messages", "messages")
    messages = [_message(m, f"messages[{i}]") for i, m in enumerate(raw)]
    if messages[-1]["role"] == "assistant":
        raise RequestError("the last message must not be from the assistant: there is nothing to answer", "messages")
    params = _sampling(body, config, config.max_tokens)
    stream, include_usage = _stream(body)
    tools, legacy = _tools(body)
    tools, forced, required = _tool_choice(body, tools, legacy)
    response_format = _response_format(body, messages)
    if response_format and tools and required:
        raise RequestError("'response_format' and a required tool call cannot be combined", "response_format")
    return ChatRequest(messages=messages, params=params, stream=stream, tools=tools, legacy_functions=legacy, include_usage=include_usage,
                       forced_tool=forced, require_tool=required, response_format=response_format)


def parse_completion(body: Any, config: ServerConfig) -> CompletionRequest:
    """Validate a legacy /v1/completions body (one text prompt)."""
    body = _body(body)
    check_model(body, config.served_model_name, config.model_aliases)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError("'prompt' must be a non-empty string (one prompt per request; token-id prompts are not supported)", "prompt")
    if body.get("suffix") is not None:
        raise RequestError("'suffix' (insertion) is not supported by this server", "suffix", "unsupported_parameter")
    if body.get("best_of") not in (None, 1):
        raise RequestError("'best_of' must be 1: this server returns one choice per request", "best_of", "unsupported_parameter")
    echo = body.get("echo", False)
    if not isinstance(echo, bool):
        raise RequestError("'echo' must be true or false", "echo")
    params = _sampling(body, config, 16)  # OpenAI's default max_tokens for completions
    stream, include_usage = _stream(body)
    return CompletionRequest(prompt=prompt, params=params, stream=stream, include_usage=include_usage, echo=echo)


def parse_embeddings(body: Any, config: ServerConfig) -> EmbeddingRequest:
    """Validate a /v1/embeddings body: text(s) or token ids, float or base64, optional dimensions."""
    body = _body(body)
    if config.embedding_model_path:  # without one the route answers 404 no_embedding_model anyway
        check_model(body, config.embedding_name, config.embedding_model_aliases)
    value = body.get("input")
    request = EmbeddingRequest(model=body.get("model"))
    if isinstance(value, str):
        value = [value]
    is_ids = isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if is_ids:
        request.token_ids = [value]
    elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        if not all(v and all(isinstance(i, int) and not isinstance(i, bool) for i in v) for v in value):
            raise RequestError("'input' as token ids must be a non-empty list of integers, or a list of such lists", "input")
        request.token_ids = value
    elif isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        if any(not t for t in value):
            raise RequestError("'input' must not contain empty strings", "input")
        request.texts = value
    else:
        raise RequestError("'input' must be a string, a list of strings, a list of token ids or a list of such lists", "input")
    if request.count > MAX_EMBEDDING_INPUTS:
        raise RequestError(f"'input' has {request.count} items; at most {MAX_EMBEDDING_INPUTS} per request", "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise RequestError("'encoding_format' must be float or base64", "encoding_format")
    request.encoding_format = encoding
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise RequestError("'dimensions' must be a positive integer", "dimensions")
    request.dimensions = dimensions
    return request
