"""RFC 9457 problem details: every error leaves the service as ``application/problem+json``.

Handlers are installed for our own :class:`Problem` (raised by routes), the domain errors of
``service/errors.py``, an unreachable store and a full inference queue (503 + ``Retry-After``),
FastAPI's validation errors, Starlette's HTTP errors and anything unexpected, so a client never
sees an HTML page or a stack trace. This is the one place that maps errors to status codes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.buffer import BufferUnavailable, StoreOperation
from service.errors import Conflict, InvalidInput, NotFound, ServiceError
from service.inference import Overloaded

log = logging.getLogger("service")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:himnet:problem:"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    500: "Internal server error",
    503: "Service unavailable",
}

# Domain error kind -> status; a kind not listed here is a 422 (the request broke a rule).
_DOMAIN_STATUS: dict[type[ServiceError], int] = {InvalidInput: 422, NotFound: 404, Conflict: 409}

# What the client is told when the store fails, per failed operation.
_STORE_DETAIL: dict[StoreOperation, str] = {
    "write": "the reading buffer (Redis) is unreachable; nothing was stored, retry later",
    "write_uncertain": "the reading buffer (Redis) did not confirm the write in time: the "
                       "readings MAY have been stored; retrying the same request is safe (the "
                       "same values overwrite)",
    "replicate": "the readings reached the Redis primary but no replica confirmed them in time, "
                 "so they may not be durable; retry is safe (a reading replaces its own "
                 "earlier value)",
    "read": "the reading buffer (Redis) is unreachable; forecasts from a window sent with the "
            "request still work",
    "cache": "the forecast cache (Redis) is unreachable",
}


class Problem(Exception):
    """An error meant for the client: status, a short type slug, human detail, extra members."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    status: int,
    slug: str,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    **extra: Any,
) -> Response:
    """Render one problem document."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return Response(
        json.dumps(body, allow_nan=False, default=str).encode(),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors without the echoed input (which can be large or sensitive)."""
    out: list[dict[str, Any]] = []
    for err in exc.errors()[:50]:
        loc = [str(p) for p in err.get("loc", ())]
        out.append({"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))})
    return out


_FASTAPI_BODY_ERROR = "There was an error parsing the body"  # FastAPI's 400 (undecodable body)


def _json_error(exc: RequestValidationError) -> str | None:
    """The detail of a body that is not valid JSON (FastAPI reports it as ``json_invalid``)."""
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            loc = err.get("loc", ())
            where = f" at character {loc[-1]}" if len(loc) > 1 else ""
            reason = (err.get("ctx") or {}).get("error", "JSON decode error")
            return f"the body is not valid JSON: {reason}{where}"
    return None


def domain_status(exc: ServiceError) -> int:
    """The HTTP status of a domain error (its nearest listed kind)."""
    for kind in type(exc).__mro__:
        if kind in _DOMAIN_STATUS:
            return _DOMAIN_STATUS[kind]  # type: ignore[index]
    return 422


def install_problem_handlers(app: FastAPI, retry_after_s: int = 1) -> None:
    """Route every error path of the app through :func:`problem_response`.

    ``retry_after_s`` is the ``Retry-After`` of the 503 answers (store down, model busy).
    """
    retry = {"Retry-After": str(retry_after_s)}

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc.status, exc.slug, exc.detail, title=exc.title,
                                headers=exc.headers, instance=request.url.path, **exc.extra)

    @app.exception_handler(ServiceError)
    async def _domain(request: Request, exc: ServiceError) -> Response:
        return problem_response(domain_status(exc), exc.slug, exc.detail,
                                instance=request.url.path, **exc.extra)

    @app.exception_handler(BufferUnavailable)
    async def _store(request: Request, exc: BufferUnavailable) -> Response:
        slug = "store-write-uncertain" if exc.operation == "write_uncertain" \
            else "store-unavailable"
        return problem_response(503, slug, _STORE_DETAIL[exc.operation], headers=retry,
                                instance=request.url.path)

    @app.exception_handler(Overloaded)
    async def _busy(request: Request, exc: Overloaded) -> Response:
        return problem_response(503, "overloaded", f"the model is busy ({exc}); retry shortly",
                                headers=retry, instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        undecodable = _json_error(exc)
        if undecodable is not None:  # not JSON at all: a bad request, not a broken rule
            return problem_response(400, "invalid-json", undecodable, instance=request.url.path)
        errors = _validation_errors(exc)
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p != "body") or "body"
        detail = f"{where}: {first['msg']}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
        return problem_response(422, "invalid-request", detail, instance=request.url.path,
                                errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        if exc.status_code == 400 and detail == _FASTAPI_BODY_ERROR:  # e.g. not UTF-8
            slug, detail = "invalid-json", "the body could not be decoded as JSON (UTF-8 text)"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no endpoint at {request.url.path}; see /docs for the API"
        return problem_response(exc.status_code, slug, detail, headers=exc.headers,
                                instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal-error",
                                "the server failed to answer this request; it has been logged",
                                instance=request.url.path)
