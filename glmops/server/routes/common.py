"""What the routes share: FastAPI dependencies for the app's state, the request body within its limits, `usage`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from glmops.server.config import ServerConfig
from glmops.server.gate import APIError
from glmops.server.limits import LimitError, parse_json, read_limited
from glmops.server.protocol import RequestError
from glmops.server.service import GenerationService

T = TypeVar("T")


def get_config(request: Request) -> ServerConfig:
    return request.app.state.config


def get_service(request: Request) -> GenerationService:
    return request.app.state.service


async def read_body(request: Request) -> Any:
    """The JSON body within max_body_bytes: 413 past the limit, 400 for anything malformed."""
    limit = get_config(request).max_body_bytes
    try:
        raw = await read_limited(request.headers.get("content-length"), request.stream(), limit)
        return parse_json(raw)
    except LimitError as exc:
        raise APIError(exc.status, str(exc), code=exc.code) from None


Config = Annotated[ServerConfig, Depends(get_config)]
Service = Annotated[GenerationService, Depends(get_service)]
Body = Annotated[Any, Depends(read_body)]


def parsed(parse: Callable[..., T], *args: Any) -> T:
    """A request checked by one of protocol.py's parsers; its RequestError as an OpenAI-shaped APIError."""
    try:
        return parse(*args)
    except RequestError as exc:
        raise APIError(exc.status, str(exc), param=exc.param, code=exc.code) from None


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
