"""HTTP pieces shared by the routes: OpenAI's error shape, the generation gate, server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class ClientGone(Exception):
    """The client closed its connection before its answer was complete; its generation was stopped."""


async def disconnected(request: Request) -> None:
    """Return once the client has gone: ASGI's http.disconnect (the body was already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Ticket:
    """A place in the gate: waiting (counted in the queue) -> held (generating) -> done."""

    def __init__(self, gate: "Gate"):
        self.gate = gate
        self.state = "waiting"

    async def acquire(self) -> None:
        try:
            await self.gate.semaphore.acquire()
        except BaseException:
            self.release()
            raise
        self.gate.waiting -= 1
        self.gate.running += 1
        self.state = "held"

    def release(self) -> None:
        """Give the place back (idempotent)."""
        if self.state == "waiting":
            self.gate.waiting -= 1
        elif self.state == "held":
            self.gate.running -= 1
            self.gate.semaphore.release()
        self.state = "done"

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Gate:
    """At most `concurrency` generations at once and `queue_size` waiting; more get 503."""

    def __init__(self, concurrency: int, queue_size: int):
        self.semaphore = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.waiting = 0
        self.running = 0

    def reserve(self) -> Ticket:
        """A place in the queue now (no await: checking and counting cannot interleave), or 503 queue_full."""
        if self.running + self.waiting >= self.concurrency + self.queue_size:
            raise APIError(503, "the server is busy: too many requests are waiting; try again shortly", "server_busy", "queue_full")
        self.waiting += 1
        return Ticket(self)


class GatedStream(StreamingResponse):
    """A stream that waits for its generation slot before its first byte and always gives it back."""

    def __init__(self, ticket: Ticket, content: AsyncIterator[str]):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.ticket = ticket

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.ticket.acquire()
            await super().__call__(scope, receive, send)
        except ClientGone:  # nobody is left to send anything to
            pass
        finally:
            self.ticket.release()


def sse(body: dict[str, Any]) -> str:
    return "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"
