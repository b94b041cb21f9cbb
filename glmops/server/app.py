"""The HTTP routes: OpenAI's wire format on top of any Backend."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from glmops.server.backends.base import Backend, BackendError, Delta
from glmops.server.config import ServerConfig
from glmops.server.prompt import Turn, to_turns
from glmops.server.protocol import ChatRequest, RequestError, parse_chat, parse_embeddings
from glmops.server.toolcall import parse_output

log = logging.getLogger("glmops.server")


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param


async def read_json(request: Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise APIError(400, "the request body is not valid JSON") from None


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class Gate:
    """At most `concurrency` generations at once and `queue_size` waiting; more get 503."""

    def __init__(self, concurrency: int, queue_size: int):
        self.semaphore = asyncio.Semaphore(concurrency)
        self.queue_size = queue_size
        self.waiting = 0

    def check(self) -> None:
        """503 now if a new request could not even wait."""
        if self.semaphore.locked() and self.waiting >= self.queue_size:
            raise APIError(503, "the server is busy: too many requests are waiting; try again shortly", "server_busy", "queue_full")

    async def __aenter__(self) -> None:
        self.check()
        self.waiting += 1
        try:
            await self.semaphore.acquire()
        finally:
            self.waiting -= 1

    async def __aexit__(self, *exc: object) -> None:
        self.semaphore.release()


class ServerState:
    def __init__(self, config: ServerConfig, backend: Backend):
        self.config = config
        self.backend = backend
        self.started = time.time()
        self.loaded = threading.Event()
        self.load_error: str | None = None
        self.gate: Gate | None = None
        self.stats = {"generations": 0, "cancelled": 0}

    def load(self) -> None:
        try:
            self.backend.load()
            self.loaded.set()
            log.info("model loaded: %s", self.backend.info())
        except Exception as exc:  # noqa: BLE001 - reported by /health
            self.load_error = str(exc)
            log.error("loading the model failed: %s", exc)


def create_app(config: ServerConfig, backend: Backend, *, load_in_background: bool = True) -> FastAPI:
    """The FastAPI app; the model loads in a background thread after the socket is bound."""
    state = ServerState(config, backend)
    app = FastAPI(title="glmops ChatGLM3 API", version="1", docs_url=None, redoc_url=None)
    app.state.glmops = state

    @app.on_event("startup")
    async def startup() -> None:
        state.gate = Gate(config.concurrency, config.queue_size)
        if load_in_background:
            threading.Thread(target=state.load, name="model-loader", daemon=True).start()
        else:
            state.load()

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.kind, exc.code, exc.param), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return JSONResponse(error_body(f"invalid request: {where}: {first.get('msg', 'bad value')}", "invalid_request_error", "invalid_value", where or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return JSONResponse(error_body("internal server error (see the server log)", "server_error"), status_code=500)

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        if config.api_keys and request.url.path.startswith("/v1/"):
            header = request.headers.get("authorization", "")
            token = header[7:].strip() if header.lower().startswith("bearer ") else ""
            if not any(secrets.compare_digest(token.encode(), key.encode()) for key in config.api_keys):
                message = "missing API key: send 'Authorization: Bearer <key>'" if not token else "invalid API key"
                return JSONResponse(error_body(message, "invalid_request_error", "invalid_api_key"), status_code=401)
        return await call_next(request)

    def require_loaded() -> None:
        if state.load_error:
            raise APIError(503, f"the model failed to load: {state.load_error}", "server_error", "model_load_failed")
        if not state.loaded.is_set():
            raise APIError(503, "the model is still loading; try again shortly", "server_error", "model_loading")

    @app.get("/health")
    async def health() -> JSONResponse:
        body: dict[str, Any] = {
            "status": "ok" if state.loaded.is_set() else ("error" if state.load_error else "loading"),
            "model": config.served_model_name,
            "backend": config.backend,
            "uptime_s": round(time.time() - state.started, 1),
            "embeddings": bool(config.embedding_model_path),
            **backend.info(),
        }
        if state.load_error:
            body["error"] = state.load_error
        body.update(state.stats)
        return JSONResponse(body, status_code=200 if state.loaded.is_set() else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": config.served_model_name, "object": "model", "created": int(state.started), "owned_by": "glmops"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await read_json(request)
        try:
            chat_request = parse_chat(body, config)
        except RequestError as exc:
            raise APIError(400, str(exc), param=exc.param, code=exc.code) from None
        require_loaded()
        turns = to_turns(chat_request.messages, chat_request.tools)
        assert state.gate is not None
        if chat_request.stream:
            state.gate.check()  # the slot itself is taken inside the stream, released when it ends
            return StreamingResponse(stream_chat(request, chat_request, turns), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        async with state.gate:
            return await complete_chat(request, chat_request, turns)

    async def run_generation(request: Request, chat_request: ChatRequest, turns: list[Turn], cancel: threading.Event) -> AsyncIterator[Delta]:
        """Generation in a worker thread; deltas arrive here as they are produced."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        params = chat_request.params

        def produce() -> None:
            try:
                for delta in backend.generate(turns, params, cancel):
                    loop.call_soon_threadsafe(queue.put_nowait, delta)
            except Exception as exc:  # noqa: BLE001 - handed to the event loop
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        state.stats["generations"] += 1
        worker = threading.Thread(target=produce, daemon=True)
        worker.start()
        try:
            while True:
                try:
                    items = [await asyncio.wait_for(queue.get(), timeout=0.5)]
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        cancel.set()
                    continue
                while not queue.empty():  # text produced meanwhile goes out in one chunk
                    items.append(queue.get_nowait())
                text = ""
                for item in items:
                    if isinstance(item, Delta) and not item.done:
                        text += item.text
                        continue
                    if text:
                        yield Delta(text)
                        text = ""
                    if item is None:
                        return
                    if isinstance(item, BaseException):
                        raise APIError(400 if isinstance(item, BackendError) else 500, str(item),
                                       "invalid_request_error" if isinstance(item, BackendError) else "server_error")
                    yield item
                if text:
                    yield Delta(text)
        finally:
            if worker.is_alive():
                cancel.set()
                state.stats["cancelled"] += 1
                await asyncio.to_thread(worker.join)

    async def complete_chat(request: Request, chat_request: ChatRequest, turns: list[Turn]) -> JSONResponse:
        cancel = threading.Event()
        started = time.monotonic()
        text, final = "", Delta("")
        async for delta in run_generation(request, chat_request, turns, cancel):
            text += delta.text
            if delta.done:
                final = delta
        content, calls = parse_output(text, chat_request.tool_names)
        message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
        finish = final.finish_reason or "stop"
        if calls:
            finish = "tool_calls" if not chat_request.legacy_functions else "function_call"
            if chat_request.legacy_functions:
                message["function_call"] = {"name": calls[0].name, "arguments": calls[0].arguments_json}
            else:
                message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                          "function": {"name": c.name, "arguments": c.arguments_json}} for c in calls]
        usage = {"prompt_tokens": final.prompt_tokens, "completion_tokens": final.completion_tokens,
                 "total_tokens": final.prompt_tokens + final.completion_tokens}
        log.info("chat: %d prompt + %d completion tokens in %.2f s (%s)", final.prompt_tokens, final.completion_tokens, time.monotonic() - started, finish)
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": config.served_model_name, "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        })

    async def stream_chat(request: Request, chat_request: ChatRequest, turns: list[Turn]) -> AsyncIterator[str]:
        assert state.gate is not None
        cancel = threading.Event()
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> str:
            body: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": config.served_model_name,
                                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            if usage is not None:
                body["usage"] = usage
            return "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"

        async with state.gate:
            yield chunk({"role": "assistant", "content": ""})
            text, final = "", Delta("")
            holding = bool(chat_request.tool_names)  # a tool call is only known at the end
            try:
                async for delta in run_generation(request, chat_request, turns, cancel):
                    if delta.done:
                        final = delta
                        continue
                    text += delta.text
                    if not holding and delta.text:
                        yield chunk({"content": delta.text})
            except APIError as exc:
                yield "data: " + json.dumps(error_body(exc.message, exc.kind, exc.code)) + "\n\n"
                return
            finish = final.finish_reason or "stop"
            if holding:
                content, calls = parse_output(text, chat_request.tool_names)
                if calls:
                    finish = "tool_calls"
                    yield chunk({"tool_calls": [{"index": i, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                                 "function": {"name": c.name, "arguments": c.arguments_json}} for i, c in enumerate(calls)]})
                elif content:
                    yield chunk({"content": content})
            usage = {"prompt_tokens": final.prompt_tokens, "completion_tokens": final.completion_tokens,
                     "total_tokens": final.prompt_tokens + final.completion_tokens}
            yield chunk({}, finish, usage if chat_request.include_usage else None)
            yield "data: [DONE]\n\n"

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        body = await read_json(request)
        try:
            embedding_request = parse_embeddings(body)
        except RequestError as exc:
            raise APIError(400, str(exc), param=exc.param, code=exc.code) from None
        if not config.embedding_model_path:
            raise APIError(404, "no embedding model is configured on this server (set embedding_model_path)", "not_found_error", "no_embedding_model")
        require_loaded()
        assert state.gate is not None
        async with state.gate:
            vectors, tokens = await asyncio.to_thread(backend.embed, embedding_request.texts)
        data = []
        for index, vector in enumerate(vectors):
            if embedding_request.encoding_format == "base64":
                import base64
                import struct

                value: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            else:
                value = vector
            data.append({"object": "embedding", "index": index, "embedding": value})
        return JSONResponse({"object": "list", "data": data, "model": embedding_request.model or config.served_model_name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return app
