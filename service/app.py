"""``create_app(settings)``: the FastAPI application and its lifespan.

Startup (``service/startup.py``) loads and warms the bundle's runtime on the inference thread,
builds the buffer and cache (Redis when ``REDIS_URL`` is set, in-process otherwise; Redis need
not be up yet, and a Redis outage does not make the replica unready: the ``/readyz`` body and
``himnet_redis_up`` report it), the write path, the forecaster and the embedding index. A
missing or damaged bundle stops startup with :class:`StartupError` naming the problem.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from model.bundle import Manifest
from service.admission import Admission
from service.metrics import Metrics
from service.openapi import live_document, shape_document
from service.middleware import BodyLimit, RequestMetrics
from service.problems import install_problem_handlers
from service.routes import accuracy, admin, embeddings, forecast, meta, readings
from service.settings import Settings
from service.startup import StartupError, build_components
from service.watcher import watch

__all__ = ["StartupError", "create_app"]

log = logging.getLogger("service")

DESCRIPTION = """Traffic forecasts from a HimNet (KDD 2024) model bundle.

Post sensor readings to `/readings` (API key required), ask `/forecast` for forecasts per
sensor and horizon, inspect what the model learned under `/embeddings`. Bodies are JSON
(`Content-Type: application/json`); `null` marks a missing reading. Errors are
`application/problem+json` (RFC 9457); the examples below use this server's sensors and the
current time slot."""


def _document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document: shaped once; once started, with the bundle's ids and examples."""
    if app.openapi_schema is None:
        app.openapi_schema = shape_document(FastAPI.openapi(app))
    parts = getattr(app.state, "components", None)
    return app.openapi_schema if parts is None else live_document(app.openapi_schema, parts)


def freeze_startup_objects() -> None:
    """Collect once, then move every surviving object to the collector's permanent generation.

    Startup leaves ~90,000 long-lived objects (bundle, FastAPI, pydantic, numpy); each full
    collection walked them all on the event loop (24 ms on the 2-core box, tail latency of
    every request in flight). They stay freed by reference counting as usual.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings, manifest: Manifest | None = None) -> FastAPI:
    """The application for one bundle; nothing is loaded until the lifespan starts.

    ``manifest``: the bundle's manifest when the caller has verified the bundle already
    (``python -m service`` does, to explain a bad bundle in one line); None: startup verifies it.
    """
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        parts = await build_components(settings, metrics, manifest)
        if parts.access.api_key is None and not settings.auth_disabled:
            log.warning("no API key configured: POST /readings and admin actions are refused")
        app.state.components = parts
        parts.ready = True
        metrics.set_ready_function(  # himnet_ready without anyone calling /readyz
            lambda: float(parts.serving()))
        log.info("serving %s %s (%s, %s) with a %s buffer", parts.manifest.model_name,
                 parts.manifest.model_version, parts.runtime.backend, parts.runtime.provider,
                 "Redis" if parts.buffer.shared else "memory")
        if settings.gc_freeze:
            freeze_startup_objects()
        watcher = None
        if settings.watch_interval_s is not None and settings.models_dir is not None:
            watcher = asyncio.create_task(watch(settings.models_dir, settings.watch_interval_s,
                                                parts.reloader))
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with suppress(asyncio.CancelledError):
                    await watcher
            await parts.close()
            metrics.refresh_ready()  # multiprocess mode: this worker no longer counts ready
            if settings.gc_freeze:
                gc.unfreeze()  # a process that builds another app (tests) can collect this one

    # FastAPIOffline: /docs (Swagger UI) and /redoc load their scripts from the installed
    # fastapi-offline package (mounted under /static-offline-docs), not from a CDN.
    app = FastAPIOffline(title="HimNet forecast service", version="1", description=DESCRIPTION,
                         lifespan=lifespan)
    app.openapi = lambda: _document(app)  # type: ignore[method-assign]
    app.state.metrics = metrics
    install_problem_handlers(app, retry_after_s=settings.retry_after_s)
    for router in (readings.router, forecast.router, embeddings.router, meta.router,
                   accuracy.router, admin.router):
        app.include_router(router)
    metrics.init_routes(app.openapi()["paths"])  # monitoring: series exist from the first scrape
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Admission, limit=settings.max_in_flight,
                       retry_after_s=settings.retry_after_s, metrics=metrics)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
