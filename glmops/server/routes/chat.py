"""POST /v1/chat/completions: an answer, tool calls or JSON, whole or streamed as chat.completion.chunk events."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from glmops.server.prompt import Turn, forced_call_prefix, to_turns
from glmops.server.protocol import ChatRequest, parse_chat
from glmops.server.routes.common import Body, Config, Service, parsed, usage
from glmops.server.service import GenerationService
from glmops.server.toolcall import ToolCall

log = logging.getLogger("glmops.server")
router = APIRouter()


def tool_call_items(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}} for c in calls]


def held_deltas(content: str, calls: list[ToolCall], legacy: bool, finish: str) -> tuple[list[dict[str, Any]], str]:
    """The stream deltas of an answer that was held back to the end, and its finish_reason.

    Tool calls as `delta.tool_calls` (finish `tool_calls`); for legacy `functions`, OpenAI's legacy
    shape: `delta.function_call` with the name, then the arguments (finish `function_call`).
    """
    if calls and legacy:
        return [{"function_call": {"name": calls[0].name, "arguments": ""}}, {"function_call": {"arguments": calls[0].arguments_json}}], "function_call"
    if calls:
        return [{"tool_calls": [{"index": i, **item} for i, item in enumerate(tool_call_items(calls))]}], "tool_calls"
    return ([{"content": content}] if content else []), finish


@router.post("/v1/chat/completions")
async def chat(request: Request, body: Body, config: Config, service: Service) -> Any:
    chat_request: ChatRequest = parsed(parse_chat, body, config)
    service.require_loaded()
    if chat_request.forced_tool:
        chat_request.params.prefix = forced_call_prefix(chat_request.forced_tool)
    turns = to_turns(chat_request.messages, chat_request.tools)
    ticket = await service.admit(turns, chat_request.params, "messages")
    if chat_request.stream:
        return service.stream(ticket, chat_chunks(request, service, chat_request, turns))
    async with ticket:
        return JSONResponse(await chat_answer(request, service, chat_request, turns))


async def chat_answer(request: Request, service: GenerationService, chat_request: ChatRequest, turns: list[Turn]) -> dict[str, Any]:
    """The chat.completion of a whole answer."""
    started = time.monotonic()
    outcome = await service.generate_checked(request, chat_request, turns, "chat")
    final = outcome.final
    message: dict[str, Any] = {"role": "assistant", "content": outcome.content or (None if outcome.calls else "")}
    finish = final.finish_reason or "stop"
    if outcome.calls:
        finish = "tool_calls" if not chat_request.legacy_functions else "function_call"
        if chat_request.legacy_functions:
            message["function_call"] = {"name": outcome.calls[0].name, "arguments": outcome.calls[0].arguments_json}
        else:
            message["tool_calls"] = tool_call_items(outcome.calls)
    log.info("chat: %d prompt + %d completion tokens in %.2f s (%s)", final.prompt_tokens, outcome.completion_tokens, time.monotonic() - started, finish)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": service.config.served_model_name, "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage(final.prompt_tokens, outcome.completion_tokens),
    }


async def chat_chunks(request: Request, service: GenerationService, chat_request: ChatRequest, turns: list[Turn]) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a streamed answer (the slot is already held by the stream)."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": service.config.served_model_name}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    yield chunk({"role": "assistant", "content": ""})
    # a tool call or a JSON check is only decided at the end: then the answer is held back until it is
    if chat_request.tool_names or chat_request.response_format is not None:
        outcome = await service.generate_checked(request, chat_request, turns, "chat")
        final, completion = outcome.final, outcome.completion_tokens
        deltas, finish = held_deltas(outcome.content, outcome.calls, chat_request.legacy_functions, final.finish_reason or "stop")
        for delta in deltas:
            yield chunk(delta)
    else:
        generation = service.generation(request, turns, chat_request.params)
        async for text in generation:
            yield chunk({"content": text})
        final, completion, finish = generation.final, generation.final.completion_tokens, generation.final.finish_reason or "stop"
    yield chunk({}, finish)
    if chat_request.include_usage:  # OpenAI's shape: a last chunk with no choices
        yield {**head, "choices": [], "usage": usage(final.prompt_tokens, completion)}
