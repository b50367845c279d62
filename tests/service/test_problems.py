"""The exception handlers of service/problems.py: each error kind → its problem+json answer.

A bare FastAPI app with only the handlers installed: what the routes raise is mapped here and
nowhere else (the end-to-end answers are in test_errors.py and test_redis.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.buffer import BufferUnavailable
from service.errors import InvalidInput, NotFound, ServiceError
from service.inference import Overloaded
from service.problems import Problem, domain_status, install_problem_handlers


class _Gone(NotFound):
    """A more specific kind: inherits its parent's status."""


RAISED: dict[str, Exception] = {
    "read": BufferUnavailable("Redis did not answer: boom", "read"),
    "write": BufferUnavailable("Redis did not store the readings: boom", "write"),
    "cache": BufferUnavailable("Redis did not answer: boom", "cache"),
    "busy": Overloaded("8 forecasts already running or queued"),
    "invalid": InvalidInput("invalid-window", "the window holds no readings at all",
                            errors=[{"reason": "x"}]),
    "missing": NotFound("no-readings", "the reading buffer is empty"),
    "gone": _Gone("unknown-sensor", "no sensor 'x'"),
    "problem": Problem(401, "unauthorized", "the API key is not valid",
                       headers={"WWW-Authenticate": 'Bearer realm="himnet"'}),
    "bug": ZeroDivisionError("division by zero"),
}


class _Client:
    """GETs against the app in process (httpx's ASGI transport; no server needed here)."""

    def __init__(self, app: FastAPI) -> None:
        self.transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    def get(self, path: str) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://t") as c:
                return await c.get(path)

        return asyncio.run(go())


@pytest.fixture(scope="module")
def client() -> _Client:
    app = FastAPI()
    install_problem_handlers(app, retry_after_s=7)

    @app.get("/raise/{name}")
    async def _raise(name: str) -> None:
        raise RAISED[name]

    return _Client(app)


def _problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == f"urn:himnet:problem:{slug}" and body["status"] == status
    assert body["instance"] == r.request.url.path
    return body


@pytest.mark.parametrize(("operation", "detail"), [
    ("read", "the reading buffer (Redis) is unreachable; forecasts from a window sent with the "
             "request still work"),
    ("write", "the reading buffer (Redis) is unreachable; nothing was stored, retry later"),
    ("cache", "the forecast cache (Redis) is unreachable"),
])
def test_unreachable_store_is_503_with_retry_after(client: _Client, operation: str,
                                                   detail: str) -> None:
    r = client.get(f"/raise/{operation}")
    body = _problem(r, 503, "store-unavailable")
    assert body["detail"] == detail and body["title"] == "Service unavailable"
    assert r.headers["retry-after"] == "7"
    assert "boom" not in r.text  # the store's own message stays in the logs


def test_overload_is_503_with_retry_after(client: _Client) -> None:
    r = client.get("/raise/busy")
    body = _problem(r, 503, "overloaded")
    assert body["detail"] == "the model is busy (8 forecasts already running or queued); retry shortly"
    assert r.headers["retry-after"] == "7"


def test_domain_errors_map_to_their_status(client: _Client) -> None:
    body = _problem(client.get("/raise/invalid"), 422, "invalid-window")
    assert body["title"] == "Invalid request" and body["errors"] == [{"reason": "x"}]
    assert body["detail"] == "the window holds no readings at all"
    assert _problem(client.get("/raise/missing"), 404, "no-readings")["title"] == "Not found"
    _problem(client.get("/raise/gone"), 404, "unknown-sensor")
    assert "retry-after" not in client.get("/raise/invalid").headers
    assert domain_status(ServiceError("x", "y")) == 422  # an unlisted kind broke a rule


def test_http_problems_keep_their_headers(client: _Client) -> None:
    r = client.get("/raise/problem")
    assert _problem(r, 401, "unauthorized")["detail"] == "the API key is not valid"
    assert r.headers["www-authenticate"] == 'Bearer realm="himnet"'


def test_unexpected_errors_are_500_without_a_traceback(client: _Client) -> None:
    r = client.get("/raise/bug")
    body = _problem(r, 500, "internal-error")
    assert "logged" in body["detail"]
    assert "Traceback" not in r.text and "division" not in r.text
