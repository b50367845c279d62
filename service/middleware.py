"""Plain ASGI middleware (no BaseHTTPMiddleware: it costs a task and a copy per request).

* :class:`BodyLimit` reads the request body up front and answers 413 problem+json beyond the
  limit, whether or not the client announced a Content-Length; the app then sees the body
  replayed, so a route never runs on a truncated body.
* :class:`RequestMetrics` counts requests and latency by route template, method and status,
  and answers with a ``Server-Timing`` header (W3C): ``app`` (this process, up to the start of
  the answer) and, when the answer needed a model run, ``queue`` and ``model`` (its batch's
  runtime call), so a client or a benchmark can tell the service's own time from the model's.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.inference import last_run, request_arrival
from service.metrics import Metrics
from service.problems import problem_response


def server_timing(elapsed_s: float) -> bytes:
    """The ``Server-Timing`` value for a request that has run ``elapsed_s`` so far (ms)."""
    parts = [f"app;dur={elapsed_s * 1e3:.3f}"]
    run = last_run.get()
    if run is not None:
        parts.append(f"queue;dur={run.wait_s * 1e3:.3f}")
        parts.append(f"model;dur={run.model_s * 1e3:.3f};desc=\"batch {run.batch}\"")
    return ", ".join(parts).encode()


class BodyLimit:
    """Refuse request bodies larger than ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413, "body-too-large",
            f"request body exceeds the limit of {self.limit} bytes; send fewer readings per "
            "request", instance=scope.get("path"), limit_bytes=self.limit)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    announced = -1
                if announced > self.limit:
                    await self._refuse(scope, receive, send)
                    return
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RequestMetrics:
    """Record every HTTP answer under its route template (bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        token = last_run.set(None)  # a test client may reuse one task for many requests
        arrival = request_arrival.set(started)  # the engine's start deadline counts from here

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                timing = (b"server-timing", server_timing(time.perf_counter() - started))
                message = {**message, "headers": [*message.get("headers", ()), timing]}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            last_run.reset(token)
            request_arrival.reset(arrival)
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            labels = (template, scope["method"], str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.request_seconds.labels(*labels).observe(time.perf_counter() - started)
