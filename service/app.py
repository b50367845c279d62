"""``create_app(settings)``: the FastAPI application and its lifespan.

Startup (``service/startup.py``) loads and warms the bundle's runtime on the inference thread,
builds the buffer and cache (Redis when ``REDIS_URL`` is set, in-process otherwise; Redis need
not be up yet — readiness says so), the write path, the forecaster and the embedding index. A
missing or damaged bundle stops startup with :class:`StartupError` naming the problem.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from model.bundle import Manifest
from service.admission import Admission
from service.metrics import Metrics
from service.middleware import BodyLimit, RequestMetrics
from service.problems import install_problem_handlers
from service.routes import embeddings, forecast, meta, readings
from service.settings import Settings
from service.startup import StartupError, build_components

__all__ = ["StartupError", "create_app"]

log = logging.getLogger("service")

DESCRIPTION = """Traffic forecasts from a HimNet (KDD 2024) model bundle.

Post sensor readings to `/readings` (API key required), ask `/forecast` for forecasts per
sensor and horizon, inspect what the model learned under `/embeddings`. Errors are
`application/problem+json` (RFC 9457)."""


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
            lambda: float(parts.ready and parts.engine.runtime is not None))
        log.info("serving %s %s (%s, %s) with a %s buffer", parts.manifest.model_name,
                 parts.manifest.model_version, parts.runtime.backend, parts.runtime.provider,
                 "Redis" if parts.buffer.shared else "memory")
        try:
            yield
        finally:
            await parts.close()

    app = FastAPI(title="HimNet forecast service", version="1", description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.metrics = metrics
    install_problem_handlers(app, retry_after_s=settings.retry_after_s)
    for router in (readings.router, forecast.router, embeddings.router, meta.router):
        app.include_router(router)
    metrics.init_routes(app.openapi()["paths"])  # monitoring: series exist from the first scrape
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Admission, limit=settings.max_in_flight,
                       retry_after_s=settings.retry_after_s, metrics=metrics)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
