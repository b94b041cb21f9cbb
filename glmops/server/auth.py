"""API keys: with `api_keys` configured, every /v1/ request needs `Authorization: Bearer <key>` (401 otherwise)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from glmops.server.gate import error_body


def bearer_token(request: Request) -> str:
    """The token of an `Authorization: Bearer <token>` header; empty without one."""
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


async def authenticate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """HTTP middleware: 401 invalid_api_key for a /v1/ request without one of the configured keys."""
    api_keys = request.app.state.config.api_keys
    if api_keys and request.url.path.startswith("/v1/"):
        token = bearer_token(request)
        if not any(secrets.compare_digest(token.encode(), key.encode()) for key in api_keys):
            message = "missing API key: send 'Authorization: Bearer <key>'" if not token else "invalid API key"
            return JSONResponse(error_body(message, "invalid_request_error", "invalid_api_key"), status_code=401)
    return await call_next(request)
