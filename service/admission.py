"""Admission at the HTTP layer: a bound on forecasts in flight, refused at once beyond it.

Under overload the waiting happens in the request path (parsing, Redis, the event loop itself),
not only in the inference queue: 200 clients queued 4.4 s there while the inference queue stayed
within its bound. This middleware counts ``POST /forecast`` requests from the moment their
headers arrive until their answer is sent; one beyond ``limit`` gets a pre-rendered 503
problem+json with ``Retry-After`` before its body is even read, so shedding costs next to
nothing. Other routes (readings, probes, metrics) are not counted: they do not wait for the model.
"""

from __future__ import annotations

from types import SimpleNamespace

from starlette.types import ASGIApp, Receive, Scope, Send

from service.metrics import Metrics
from service.problems import problem_response

FORECAST_PATH = "/forecast"


class Admission:
    """Refuse a forecast with 503 when ``limit`` forecasts are already in flight."""

    def __init__(self, app: ASGIApp, limit: int, retry_after_s: int, metrics: Metrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.in_flight = 0
        self._refusal = problem_response(
            503, "overloaded", f"{limit} forecasts are already in flight on this instance; "
            "retry shortly", headers={"Retry-After": str(retry_after_s)}, instance=FORECAST_PATH)
        # the request metrics label a refusal with its route although routing never ran
        self._route = SimpleNamespace(path=FORECAST_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"] != FORECAST_PATH):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.inference_shed.labels("in_flight").inc()
            scope["route"] = self._route
            await self._refusal(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
