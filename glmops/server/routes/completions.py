"""POST /v1/completions: legacy completions, the prompt answered as one user turn of the chat format."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from glmops.server.prompt import Turn
from glmops.server.protocol import CompletionRequest, parse_completion
from glmops.server.routes.common import Body, Config, Service, parsed, usage
from glmops.server.service import Generation

router = APIRouter()
Shape = Callable[[str, str | None], dict[str, Any]]  # (text, finish_reason) -> a text_completion body


@router.post("/v1/completions")
async def completions(request: Request, body: Body, config: Config, service: Service) -> Any:
    completion_request: CompletionRequest = parsed(parse_completion, body, config)
    service.require_loaded()
    turns = [Turn("user", completion_request.prompt)]  # a chat model answers the prompt as a user turn
    ticket = await service.admit(turns, completion_request.params, "prompt")
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def shape(text: str, finish: str | None) -> dict[str, Any]:
        return {"id": ident, "object": "text_completion", "created": created, "model": config.served_model_name,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    generation = service.generation(request, turns, completion_request.params)
    if completion_request.stream:
        return service.stream(ticket, completion_events(completion_request, generation, shape))
    async with ticket:
        text = await generation.text()
    final = generation.final
    answer = shape((completion_request.prompt if completion_request.echo else "") + text, final.finish_reason or "stop")
    return JSONResponse({**answer, "usage": usage(final.prompt_tokens, final.completion_tokens)})


async def completion_events(completion_request: CompletionRequest, generation: Generation, shape: Shape) -> AsyncIterator[dict[str, Any]]:
    """The text_completion events of a stream (the slot is already held by the stream)."""
    if completion_request.echo:
        yield shape(completion_request.prompt, None)
    async for text in generation:
        yield shape(text, None)
    final = generation.final
    yield shape("", final.finish_reason or "stop")
    if completion_request.include_usage:
        yield {**shape("", None), "choices": [], "usage": usage(final.prompt_tokens, final.completion_tokens)}
