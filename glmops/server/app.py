"""The HTTP routes: OpenAI's wire format on top of any Backend."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import math
import secrets
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from glmops.server.backends.base import Backend, BackendError, Delta, GenerationParams
from glmops.server.config import ServerConfig
from glmops.server.gate import APIError, ClientGone, Gate, GatedStream, disconnected, error_body, sse
from glmops.server.jsonmode import output_problem
from glmops.server.limits import LimitError, parse_json, prompt_chars_over, read_limited
from glmops.server.prompt import Turn, build_prompt, forced_call_prefix, to_turns
from glmops.server.protocol import ChatRequest, RequestError, model_matches, parse_chat, parse_completion, parse_embeddings
from glmops.server.toolcall import ToolCall, parse_output

log = logging.getLogger("glmops.server")
PARAM_NAMES = {"prefix": "tool_choice"}  # GenerationParams field -> the request parameter that set it


@dataclass
class Outcome:
    """A finished generation, checked against what the request required."""

    text: str
    content: str
    calls: list[ToolCall]
    final: Delta
    completion_tokens: int


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


class ServerState:
    def __init__(self, config: ServerConfig, backend: Backend):
        self.config = config
        self.backend = backend
        self.started = time.time()
        self.loaded = threading.Event()
        self.load_error: str | None = None
        self.gate: Gate | None = None
        self.stats = {"generations": 0, "cancelled": 0}  # cancelled: stopped because the client went away
        # Generations run on long-lived threads, never one new thread per request: an engine built with
        # OpenMP (llama.cpp) decodes ~20 % slower when each request's thread starts its own thread team.
        self.generators = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="glmops-generate")

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

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

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

    async def read_body(request: Request) -> Any:
        """The JSON body within max_body_bytes: 413 past the limit, 400 for anything malformed."""
        try:
            raw = await read_limited(request.headers.get("content-length"), request.stream(), config.max_body_bytes)
            return parse_json(raw)
        except LimitError as exc:
            raise APIError(exc.status, str(exc), code=exc.code) from None

    def parsed(parse: Any, *args: Any) -> Any:
        try:
            return parse(*args)
        except RequestError as exc:
            raise APIError(exc.status, str(exc), param=exc.param, code=exc.code) from None

    def require_loaded() -> None:
        if state.load_error:
            raise APIError(503, f"the model failed to load: {state.load_error}", "server_error", "model_load_failed")
        if not state.loaded.is_set():
            raise APIError(503, "the model is still loading; try again shortly", "server_error", "model_loading")

    def require_supported(params: GenerationParams) -> None:
        refused = sorted(PARAM_NAMES.get(name, name) for name in params.non_default() & backend.unsupported)
        if refused:
            raise APIError(400, f"the {backend.name} backend cannot honour {', '.join(refused)}; leave {'it' if len(refused) == 1 else 'them'} out "
                           "or serve with the transformers backend", param=refused[0], code="unsupported_parameter")

    async def require_fits(turns: list[Turn], prefix: str, param: str) -> None:
        """400 context_length_exceeded before the request takes a generation slot (cheap bound first)."""
        chars = len(build_prompt(turns, prefix))
        per_token = backend.max_token_chars()
        if prompt_chars_over(chars, config.max_context, per_token):
            raise APIError(400, f"the prompt has {chars} characters, more than max_context ({config.max_context} tokens) can hold "
                           f"(a token covers at most {per_token} characters); shorten it", param=param, code="context_length_exceeded")
        tokens = await asyncio.to_thread(backend.count_tokens, turns)
        if tokens >= config.max_context:
            raise APIError(400, f"the prompt has {tokens} tokens; this server's limit (max_context) is {config.max_context} tokens "
                           "for prompt and answer together; shorten it", param=param, code="context_length_exceeded")

    def gate() -> Gate:
        assert state.gate is not None
        return state.gate

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
        body.update({"running": gate().running, "waiting": gate().waiting})
        return JSONResponse(body, status_code=200 if state.loaded.is_set() else 503)

    def model_cards() -> list[tuple[str, list[str]]]:
        cards = [(config.served_model_name, config.model_aliases)]
        if config.embedding_model_path:
            cards.append((config.embedding_name, config.embedding_model_aliases))
        return cards

    def model_card(name: str, root: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": int(state.started), "owned_by": "glmops", "root": root}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(name, name) for name, _ in model_cards()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        for name, aliases in model_cards():
            if model_matches(model_id, name, aliases):
                return model_card(model_id, name)
        raise APIError(404, f"The model '{model_id}' does not exist: this server serves {', '.join(n for n, _ in model_cards())}",
                       param="model", code="model_not_found")

    async def run_generation(request: Request, turns: list[Turn], params: GenerationParams) -> AsyncIterator[Delta]:
        """Generation in a worker thread; deltas arrive here as they are produced.

        The one place that notices a client going away, streaming or not: a task waits for ASGI's
        http.disconnect and stops the model at once; the generation then ends in ClientGone (counted in
        /health's `cancelled`). A consumer that stops early (a stream's closed connection) stops it too.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def produce() -> None:
            try:
                for delta in backend.generate(turns, params, cancel):
                    loop.call_soon_threadsafe(queue.put_nowait, delta)
            except Exception as exc:  # noqa: BLE001 - handed to the event loop
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        def client_left(task: asyncio.Task[None]) -> bool:
            return task.done() and not task.cancelled() and task.exception() is None

        state.stats["generations"] += 1
        worker = state.generators.submit(produce)
        watcher = asyncio.create_task(disconnected(request))
        watcher.add_done_callback(lambda task: client_left(task) and cancel.set())
        finished = False
        try:
            while True:
                items = [await queue.get()]
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
                        if client_left(watcher):  # the model stopped because the client went away
                            raise ClientGone()
                        finished = True
                        return
                    if isinstance(item, BaseException):
                        finished = True
                        raise APIError(400 if isinstance(item, BackendError) else 500, str(item),
                                       "invalid_request_error" if isinstance(item, BackendError) else "server_error")
                    yield item
                if text:
                    yield Delta(text)
        finally:
            watcher.cancel()
            if not finished:  # the client went away (or its stream was closed) while the model was still working
                if client_left(watcher) or not worker.done():
                    state.stats["cancelled"] += 1
                    log.info("generation stopped: the client went away")
                cancel.set()
            if not worker.done():
                await asyncio.wrap_future(worker)

    async def collect(request: Request, turns: list[Turn], params: GenerationParams) -> tuple[str, Delta]:
        """A whole generation: (its text, the final delta with the totals); ClientGone when the client left."""
        text, final = "", Delta("")
        async for delta in run_generation(request, turns, params):
            if delta.done:
                final = delta
            else:
                text += delta.text
        return text, final

    async def generate_checked(request: Request, chat_request: ChatRequest, turns: list[Turn], what: str) -> Outcome:
        """Generate; when the request requires a tool call or JSON, check the answer and retry (sampling) up to twice."""
        strict = chat_request.require_tool or chat_request.response_format is not None
        tries = 3 if strict and chat_request.params.temperature > 0 else 1
        spent = 0
        problem = None
        for attempt in range(tries):
            params = chat_request.params
            if attempt and params.seed is not None:
                params = dataclasses.replace(params, seed=params.seed + attempt)
            text, final = await collect(request, turns, params)
            text = params.prefix + text
            spent += final.completion_tokens
            content, calls = parse_output(text, chat_request.tool_names)
            if chat_request.require_tool and not calls:
                problem = f"the model did not write a valid call of {chat_request.forced_tool or 'one of the tools'}"
            elif chat_request.response_format and not calls:
                problem = output_problem(content, chat_request.response_format)
            else:
                problem = None
            if problem is None or final.finish_reason == "length":  # a cut-off answer is returned as it is, as OpenAI does
                return Outcome(text, content, calls, final, spent)
            log.info("%s: attempt %d of %d rejected: %s", what, attempt + 1, tries, problem)
        raise APIError(500, f"{problem} (tried {tries} time{'s' if tries > 1 else ''}; with temperature 0 every try is the same)",
                       "server_error", "invalid_model_output")

    def usage(prompt: int, completion: int) -> dict[str, int]:
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    # -- chat ------------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        chat_request: ChatRequest = parsed(parse_chat, await read_body(request), config)
        require_loaded()
        if chat_request.forced_tool:
            chat_request.params.prefix = forced_call_prefix(chat_request.forced_tool)
        require_supported(chat_request.params)
        turns = to_turns(chat_request.messages, chat_request.tools)
        await require_fits(turns, chat_request.params.prefix, "messages")
        ticket = gate().reserve()  # 503 queue_full here, before any byte of a stream
        if chat_request.stream:
            return GatedStream(ticket, stream_chat(request, chat_request, turns))
        async with ticket:
            return await complete_chat(request, chat_request, turns)

    async def complete_chat(request: Request, chat_request: ChatRequest, turns: list[Turn]) -> JSONResponse:
        started = time.monotonic()
        outcome = await generate_checked(request, chat_request, turns, "chat")
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
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": config.served_model_name, "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage(final.prompt_tokens, outcome.completion_tokens),
        })

    async def stream_chat(request: Request, chat_request: ChatRequest, turns: list[Turn]) -> AsyncIterator[str]:
        """The chunks of a streamed answer (the slot is already held by GatedStream)."""
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": config.served_model_name,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

        yield chunk({"role": "assistant", "content": ""})
        # a tool call or a JSON check is only decided at the end: then the answer is held back until it is
        holding = bool(chat_request.tool_names) or chat_request.response_format is not None
        try:
            if holding:
                outcome = await generate_checked(request, chat_request, turns, "chat")
                final, completion = outcome.final, outcome.completion_tokens
            else:
                final = Delta("")
                async for delta in run_generation(request, turns, chat_request.params):
                    if delta.done:
                        final = delta
                    elif delta.text:
                        yield chunk({"content": delta.text})
                completion = final.completion_tokens
        except APIError as exc:
            yield sse(error_body(exc.message, exc.kind, exc.code))
            return
        finish = final.finish_reason or "stop"
        if holding:
            deltas, finish = held_deltas(outcome.content, outcome.calls, chat_request.legacy_functions, finish)
            for delta in deltas:
                yield chunk(delta)
        yield chunk({}, finish)
        if chat_request.include_usage:  # OpenAI's shape: a last chunk with no choices
            yield sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": config.served_model_name,
                       "choices": [], "usage": usage(final.prompt_tokens, completion)})
        yield "data: [DONE]\n\n"

    # -- legacy completions -----------------------------------------------------------------------
    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        completion_request = parsed(parse_completion, await read_body(request), config)
        require_loaded()
        require_supported(completion_request.params)
        turns = [Turn("user", completion_request.prompt)]  # a chat model answers the prompt as a user turn
        await require_fits(turns, "", "prompt")
        ticket = gate().reserve()
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def body(text: str, finish: str | None) -> dict[str, Any]:
            return {"id": ident, "object": "text_completion", "created": created, "model": config.served_model_name,
                    "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

        async def stream() -> AsyncIterator[str]:
            final = Delta("")
            try:
                if completion_request.echo:
                    yield sse(body(completion_request.prompt, None))
                async for delta in run_generation(request, turns, completion_request.params):
                    if delta.done:
                        final = delta
                    elif delta.text:
                        yield sse(body(delta.text, None))
            except APIError as exc:
                yield sse(error_body(exc.message, exc.kind, exc.code))
                return
            yield sse(body("", final.finish_reason or "stop"))
            if completion_request.include_usage:
                yield sse({**body("", None), "choices": [], "usage": usage(final.prompt_tokens, final.completion_tokens)})
            yield "data: [DONE]\n\n"

        if completion_request.stream:
            return GatedStream(ticket, stream())
        async with ticket:
            text, final = await collect(request, turns, completion_request.params)
        answer = body((completion_request.prompt if completion_request.echo else "") + text, final.finish_reason or "stop")
        return JSONResponse({**answer, "usage": usage(final.prompt_tokens, final.completion_tokens)})

    # -- embeddings --------------------------------------------------------------------------------
    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        embedding_request = parsed(parse_embeddings, await read_body(request), config)
        if not config.embedding_model_path:
            raise APIError(404, "no embedding model is configured on this server (set embedding_model_path)", "not_found_error", "no_embedding_model")
        require_loaded()
        size = backend.embedding_dimensions()
        if embedding_request.dimensions is not None and size is not None and embedding_request.dimensions > size:
            raise APIError(400, f"'dimensions' is {embedding_request.dimensions}, but the embedding model has {size}; ask for at most {size}",
                           param="dimensions", code="invalid_value")
        async with gate().reserve():
            try:
                if embedding_request.token_ids is not None:
                    vectors, tokens = await asyncio.to_thread(backend.embed_ids, embedding_request.token_ids)
                else:
                    vectors, tokens = await asyncio.to_thread(backend.embed, embedding_request.texts or [])
            except BackendError as exc:
                raise APIError(400, str(exc), param="input") from None
        data = []
        for index, vector in enumerate(vectors):
            if embedding_request.dimensions is not None:  # shortened and normalised again, as OpenAI's text-embedding-3 does
                vector = vector[: embedding_request.dimensions]
                norm = math.sqrt(sum(x * x for x in vector)) or 1.0
                vector = [x / norm for x in vector]
            value: Any = vector
            if embedding_request.encoding_format == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": value})
        return JSONResponse({"object": "list", "data": data, "model": config.embedding_name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return app
