"""The generation service: loading, admission (checks, then a place in the gate), the generation loop, streaming.

Routes parse a request, ask the service to admit it, and format what it generates; every generation,
streamed or not, is one `Generation` iterated by its consumer (`Generation.text()` for a whole answer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from glmops.server.backends.base import Backend, BackendError, Delta, GenerationParams
from glmops.server.config import ServerConfig
from glmops.server.gate import APIError, ClientGone, Gate, GatedStream, Ticket, disconnected, error_body, sse
from glmops.server.jsonmode import output_problem
from glmops.server.limits import prompt_chars_over
from glmops.server.prompt import Turn, build_prompt
from glmops.server.protocol import ChatRequest, EmbeddingRequest
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


class GenerationService:
    """The model behind the routes: its loading, who may generate now, and the generations themselves."""

    def __init__(self, config: ServerConfig, backend: Backend):
        self.config = config
        self.backend = backend
        self.started = time.time()
        self.loaded = threading.Event()
        self.load_error: str | None = None
        self.gate: Gate | None = None  # made by start(), on the server's event loop
        self.stats = {"generations": 0, "cancelled": 0}  # cancelled: stopped because the client went away
        # Generations run on long-lived threads, never one new thread per request: an engine built with
        # OpenMP (llama.cpp) decodes ~20 % slower when each request's thread starts its own thread team.
        self.generators = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="glmops-generate")

    # -- loading -------------------------------------------------------------------------------------
    def start(self, in_background: bool) -> None:
        """At server start: the gate, then the model (in a thread, so the socket answers /health meanwhile)."""
        self.gate = Gate(self.config.concurrency, self.config.queue_size)
        if in_background:
            threading.Thread(target=self.load, name="model-loader", daemon=True).start()
        else:
            self.load()

    def load(self) -> None:
        try:
            self.backend.load()
            self.loaded.set()
            log.info("model loaded: %s", self.backend.info())
        except Exception as exc:  # noqa: BLE001 - reported by /health
            self.load_error = str(exc)
            log.error("loading the model failed: %s", exc)

    @property
    def status(self) -> str:
        """ok, error (the load failed) or loading."""
        return "ok" if self.loaded.is_set() else ("error" if self.load_error else "loading")

    # -- admission -----------------------------------------------------------------------------------
    def require_loaded(self) -> None:
        if self.load_error:
            raise APIError(503, f"the model failed to load: {self.load_error}", "server_error", "model_load_failed")
        if not self.loaded.is_set():
            raise APIError(503, "the model is still loading; try again shortly", "server_error", "model_loading")

    def require_supported(self, params: GenerationParams) -> None:
        refused = sorted(PARAM_NAMES.get(name, name) for name in params.non_default() & self.backend.unsupported)
        if refused:
            raise APIError(400, f"the {self.backend.name} backend cannot honour {', '.join(refused)}; leave {'it' if len(refused) == 1 else 'them'} out "
                           "or serve with the transformers backend", param=refused[0], code="unsupported_parameter")

    async def require_fits(self, turns: list[Turn], prefix: str, param: str) -> None:
        """400 context_length_exceeded before the request takes a generation slot (cheap bound first)."""
        max_context = self.config.max_context
        chars = len(build_prompt(turns, prefix))
        per_token = self.backend.max_token_chars()
        if prompt_chars_over(chars, max_context, per_token):
            raise APIError(400, f"the prompt has {chars} characters, more than max_context ({max_context} tokens) can hold "
                           f"(a token covers at most {per_token} characters); shorten it", param=param, code="context_length_exceeded")
        tokens = await asyncio.to_thread(self.backend.count_tokens, turns)
        if tokens >= max_context:
            raise APIError(400, f"the prompt has {tokens} tokens; this server's limit (max_context) is {max_context} tokens "
                           "for prompt and answer together; shorten it", param=param, code="context_length_exceeded")

    async def admit(self, turns: list[Turn], params: GenerationParams, param: str) -> Ticket:
        """The checks a generation passes before it may queue, then its place in the queue (503 queue_full)."""
        self.require_supported(params)
        await self.require_fits(turns, params.prefix, param)
        return self.reserve()

    def reserve(self) -> Ticket:
        """A place in the gate now, or 503 queue_full (for a stream: before any byte of it)."""
        assert self.gate is not None, "the service was not started"
        return self.gate.reserve()

    # -- generation ----------------------------------------------------------------------------------
    def generation(self, request: Request, turns: list[Turn], params: GenerationParams) -> Generation:
        return Generation(self, request, turns, params)

    async def generate_checked(self, request: Request, chat_request: ChatRequest, turns: list[Turn], what: str) -> Outcome:
        """Generate; when the request requires a tool call or JSON, check the answer and retry (sampling) up to twice."""
        strict = chat_request.require_tool or chat_request.response_format is not None
        tries = 3 if strict and chat_request.params.temperature > 0 else 1
        spent = 0
        problem = None
        for attempt in range(tries):
            params = chat_request.params
            if attempt and params.seed is not None:
                params = dataclasses.replace(params, seed=params.seed + attempt)
            generation = self.generation(request, turns, params)
            text = params.prefix + await generation.text()
            spent += generation.final.completion_tokens
            content, calls = parse_output(text, chat_request.tool_names)
            problem = answer_problem(chat_request, content, calls)
            if problem is None or generation.final.finish_reason == "length":  # a cut-off answer is returned as it is, as OpenAI does
                return Outcome(text, content, calls, generation.final, spent)
            log.info("%s: attempt %d of %d rejected: %s", what, attempt + 1, tries, problem)
        raise APIError(500, f"{problem} (tried {tries} time{'s' if tries > 1 else ''}; with temperature 0 every try is the same)",
                       "server_error", "invalid_model_output")

    async def embed(self, embedding_request: EmbeddingRequest) -> tuple[list[list[float]], int]:
        """(vectors, tokens) once loaded, within the gate like a generation; 400 for what the backend refuses."""
        self.require_loaded()
        size = self.backend.embedding_dimensions()
        wanted = embedding_request.dimensions
        if wanted is not None and size is not None and wanted > size:
            raise APIError(400, f"'dimensions' is {wanted}, but the embedding model has {size}; ask for at most {size}",
                           param="dimensions", code="invalid_value")
        async with self.reserve():
            try:
                if embedding_request.token_ids is not None:
                    return await asyncio.to_thread(self.backend.embed_ids, embedding_request.token_ids)
                return await asyncio.to_thread(self.backend.embed, embedding_request.texts or [])
            except BackendError as exc:
                raise APIError(400, str(exc), param="input") from None

    # -- streaming -----------------------------------------------------------------------------------
    @staticmethod
    def stream(ticket: Ticket, events: AsyncIterator[dict[str, Any]]) -> GatedStream:
        """The response of a streamed request: its events once it holds its slot, then `[DONE]`."""
        return GatedStream(ticket, event_stream(events))


def answer_problem(chat_request: ChatRequest, content: str, calls: list[ToolCall]) -> str | None:
    """Why an answer is not what the request requires (a tool call, JSON); None when it is."""
    if chat_request.require_tool and not calls:
        return f"the model did not write a valid call of {chat_request.forced_tool or 'one of the tools'}"
    if chat_request.response_format and not calls:
        return output_problem(content, chat_request.response_format)
    return None


async def event_stream(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Server-sent events, then `data: [DONE]`; an APIError on the way is sent as an error event and ends the stream."""
    try:
        async for event in events:
            yield sse(event)
    except APIError as exc:
        yield sse(error_body(exc.message, exc.kind, exc.code))
        return
    yield "data: [DONE]\n\n"


class Generation:
    """One generation in a worker thread: iterate it for its text as it is produced; `final` has the totals.

    The one place that notices a client going away, streaming or not: a task waits for ASGI's
    http.disconnect and stops the model at once; the generation then ends in ClientGone (counted in
    /health's `cancelled`). A consumer that stops early (a stream's closed connection) stops it too.
    """

    def __init__(self, service: GenerationService, request: Request, turns: list[Turn], params: GenerationParams):
        self.service = service
        self.request = request
        self.turns = turns
        self.params = params
        self.final = Delta("")  # the last delta, with the totals, once the generation has ended

    async def text(self) -> str:
        """The whole text (ClientGone when the client left)."""
        return "".join([piece async for piece in self])

    def produce(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any], cancel: threading.Event) -> None:
        """In a worker thread: the backend's deltas, then an exception if one ended it, then None."""
        try:
            for delta in self.service.backend.generate(self.turns, self.params, cancel):
                loop.call_soon_threadsafe(queue.put_nowait, delta)
        except Exception as exc:  # noqa: BLE001 - handed to the event loop
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    async def __aiter__(self) -> AsyncIterator[str]:
        """The text as it arrives (text produced meanwhile merged into one piece); stops the worker when left early."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        self.service.stats["generations"] += 1
        worker = self.service.generators.submit(self.produce, asyncio.get_running_loop(), queue, cancel)
        watcher = asyncio.create_task(disconnected(self.request))
        watcher.add_done_callback(lambda task: client_left(task) and cancel.set())
        finished = False
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():  # text produced meanwhile goes out in one chunk
                    items.append(queue.get_nowait())
                for item in merged(items):
                    if item is None:
                        if client_left(watcher):  # the model stopped because the client went away
                            raise ClientGone()
                        finished = True
                        return
                    if isinstance(item, BaseException):
                        finished = True
                        raise backend_failure(item)
                    if item.done:
                        self.final = item
                    elif item.text:
                        yield item.text
        finally:
            watcher.cancel()
            await self.stop(worker, watcher, cancel, finished)

    async def stop(self, worker: Future[None], watcher: asyncio.Task[None], cancel: threading.Event, finished: bool) -> None:
        """After the loop: a generation left unfinished is cancelled (and counted when its client went away)."""
        if not finished:  # the client went away (or its stream was closed) while the model was still working
            if client_left(watcher) or not worker.done():
                self.service.stats["cancelled"] += 1
                log.info("generation stopped: the client went away")
            cancel.set()
        if not worker.done():
            await asyncio.wrap_future(worker)


def merged(items: list[Any]) -> list[Any]:
    """Queue items with consecutive text deltas joined into one; a done delta, an exception or None end a run."""
    out: list[Any] = []
    text = ""
    for item in items:
        if isinstance(item, Delta) and not item.done:
            text += item.text
            continue
        if text:
            out.append(Delta(text))
            text = ""
        out.append(item)
    if text:
        out.append(Delta(text))
    return out


def client_left(task: asyncio.Task[None]) -> bool:
    """The disconnect watcher saw the client go (not merely cancelled by us)."""
    return task.done() and not task.cancelled() and task.exception() is None


def backend_failure(exc: BaseException) -> APIError:
    """A generation's exception as an APIError: 400 for what the user can fix (BackendError), else 500."""
    if isinstance(exc, BackendError):
        return APIError(400, str(exc), "invalid_request_error")
    return APIError(500, str(exc), "server_error")
