"""Typed FastAPI dependencies: each route asks for exactly the pieces it uses.

``SettingsDep``, ``ForecasterDep``, … are ``Annotated`` aliases over ``Depends`` (the pattern of
FastAPI's full-stack template), read from the :class:`~service.state.Components` that startup
stored on ``app.state``. The getters are ``async`` on purpose: FastAPI runs plain ``def``
dependencies in its threadpool, which costs a thread hop on every request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from model.bundle import Manifest
from service.buffer import ReadingBuffer
from service.embeddings import EmbeddingIndex
from service.forecasting import Forecaster
from service.inference import InferenceEngine
from service.ingest import Ingest
from service.models import ModelSlot
from service.inputs import ForecastInputs
from service.metrics import Metrics
from service.problems import Problem
from service.reload import Reloader
from service.rendering import ForecastRenderer
from service.runtime import Runtime
from service.security import Access, check_key
from service.settings import Settings
from service.state import Components
from service.timeslots import SlotClock


def components(request: Request) -> Components:
    """The app's components (present once startup has finished)."""
    found = getattr(request.app.state, "components", None)
    if found is None:  # pragma: no cover - uvicorn serves only after startup
        raise RuntimeError("the service has not started")
    return found


def _part(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency returning one named component."""

    async def get(request: Request) -> Any:
        return getattr(components(request), name)

    get.__name__ = f"get_{name}"
    return get


SettingsDep = Annotated[Settings, Depends(_part("settings"))]
ManifestDep = Annotated[Manifest, Depends(_part("manifest"))]
RuntimeDep = Annotated[Runtime, Depends(_part("runtime"))]
ClockDep = Annotated[SlotClock, Depends(_part("clock"))]
EngineDep = Annotated[InferenceEngine, Depends(_part("engine"))]
BufferDep = Annotated[ReadingBuffer, Depends(_part("buffer"))]
ForecasterDep = Annotated[Forecaster, Depends(_part("forecaster"))]
IngestDep = Annotated[Ingest, Depends(_part("ingest"))]
InputsDep = Annotated[ForecastInputs, Depends(_part("inputs"))]
RendererDep = Annotated[ForecastRenderer, Depends(_part("renderer"))]
EmbeddingsDep = Annotated[EmbeddingIndex, Depends(_part("embeddings"))]
AccessDep = Annotated[Access, Depends(_part("access"))]
MetricsDep = Annotated[Metrics, Depends(_part("metrics"))]
ReloaderDep = Annotated[Reloader, Depends(_part("reloader"))]
ModelsDep = Annotated[ModelSlot, Depends(_part("models"))]


async def serving(request: Request) -> bool:
    """Readiness (see :meth:`~service.state.Components.serving`)."""
    return components(request).serving()


ServingDep = Annotated[bool, Depends(serving)]


# The two ways to present the key (service/security.py), declared so that OpenAPI documents
# them as security schemes; the check itself reads the headers (auto_error=False).
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", scheme_name="ApiKey", auto_error=False,
                              description="The service's API key (HIMNET_API_KEY).")
BEARER = HTTPBearer(scheme_name="Bearer", auto_error=False,
                    description="The same API key as 'Authorization: Bearer <key>'.")


async def require_key(
    request: Request,
    access: AccessDep,
    _header: Annotated[str | None, Security(API_KEY_HEADER)] = None,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> None:
    """Dependency for writes and admin actions."""
    check_key(request, access)


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json`` (what FastAPI parses as JSON)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


async def json_body(request: Request) -> None:
    """415 for a body that is not JSON; FastAPI would read it as bytes and answer a 422 about
    the body's fields, which misleads. An empty body (allowed on /forecast) passes."""
    if await request.body() and not is_json(request.headers.get("content-type")):
        given = request.headers.get("content-type") or "none"
        raise Problem(415, "unsupported-media-type",
                      f"the body must be JSON sent as 'Content-Type: application/json' "
                      f"(given: {given})", accepted=["application/json"])


async def read_access(request: Request, access: AccessDep) -> None:
    """Dependency for read endpoints: a key only when ``protect_reads`` is set."""
    if access.protect_reads:
        check_key(request, access)
