"""The FastAPI app: the service on `app.state`, loading in the lifespan, auth, OpenAI-shaped errors, the routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from glmops.server.auth import authenticate
from glmops.server.backends.base import Backend
from glmops.server.config import ServerConfig
from glmops.server.gate import APIError, ClientGone, error_body
from glmops.server.routes import ROUTERS
from glmops.server.routes.chat import held_deltas
from glmops.server.service import GenerationService

__all__ = ["create_app", "held_deltas"]  # held_deltas: tests/server/test_clients.py imports it from here
log = logging.getLogger("glmops.server")


async def api_error(request: Request, exc: APIError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.kind, exc.code, exc.param), status_code=exc.status)


async def client_gone(request: Request, exc: ClientGone) -> Response:
    return Response(status_code=499)  # nginx's "client closed request"; nobody reads it


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
    return JSONResponse(error_body(f"invalid request: {where}: {first.get('msg', 'bad value')}", "invalid_request_error", "invalid_value", where or None), status_code=400)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s", request.url.path)
    return JSONResponse(error_body("internal server error (see the server log)", "server_error"), status_code=500)


ERROR_HANDLERS = {APIError: api_error, ClientGone: client_gone, RequestValidationError: validation_error,
                  StarletteHTTPException: http_error, Exception: internal_error}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At start: the service's gate, and the model loading (in a background thread unless told otherwise)."""
    app.state.service.start(app.state.load_in_background)
    yield


def create_app(config: ServerConfig, backend: Backend, *, load_in_background: bool = True) -> FastAPI:
    """The FastAPI app; the model loads in a background thread after the socket is bound."""
    app = FastAPI(title="glmops ChatGLM3 API", version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.config = config
    app.state.service = GenerationService(config, backend)
    app.state.load_in_background = load_in_background
    for kind, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(kind, handler)  # type: ignore[arg-type]
    app.middleware("http")(authenticate)
    for router in ROUTERS:
        app.include_router(router)
    return app
