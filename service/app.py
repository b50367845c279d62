"""``create_app(settings)``: the FastAPI application and its lifespan.

Startup loads and warms the bundle's runtime on the inference thread, connects the buffer
(Redis when ``REDIS_URL`` is set, in-process otherwise; Redis need not be up yet — readiness
says so), and builds the caches and the embedding index. A missing or damaged bundle stops
startup with :class:`StartupError` naming the problem.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from model.bundle import BundleError, load_embeddings
from service.buffer import MemoryBuffer, ReadingBuffer, RedisBuffer, layout_key, redis_client
from service.cache import (
    ForecastCache,
    MemoryForecastCache,
    OutputCodec,
    RedisForecastCache,
    StatelessCache,
)
from service.embeddings import EmbeddingIndex
from service.forecasting import Forecaster
from service.inference import InferenceEngine
from service.metrics import Metrics
from service.middleware import BodyLimit, RequestMetrics
from service.problems import install_problem_handlers
from service.routes import embeddings, forecast, meta, readings
from service.settings import Settings
from service.state import Services
from service.timeslots import SlotClock

log = logging.getLogger("service")

DESCRIPTION = """Traffic forecasts from a HimNet (KDD 2024) model bundle.

Post sensor readings to `/readings` (API key required), ask `/forecast` for forecasts per
sensor and horizon, inspect what the model learned under `/embeddings`. Errors are
`application/problem+json` (RFC 9457)."""


class StartupError(RuntimeError):
    """The service cannot start; the message says why and what to fix."""


async def build_services(settings: Settings, metrics: Metrics) -> Services:
    """Load the model and wire buffer, caches and forecaster together."""
    engine = InferenceEngine(settings.inference_queue, metrics)
    try:
        runtime = await engine.load(settings.bundle_dir, settings.backend, settings.device,
                                    settings.threads)
        manifest = runtime.manifest
        arrays = load_embeddings(settings.bundle_dir)
    except BundleError as exc:
        engine.close()
        raise StartupError(f"cannot serve model bundle {settings.bundle_dir}: {exc}") from exc
    except (OSError, RuntimeError, ValueError) as exc:
        engine.close()
        raise StartupError(f"cannot load the model from {settings.bundle_dir}: {exc}") from exc
    try:
        clock = SlotClock(manifest.interval_minutes, manifest.steps_per_day, manifest.timezone)
        api_key = settings.resolved_api_key()
        index = EmbeddingIndex.build(arrays, list(manifest.sensor_ids), manifest.coords,
                                     n_clusters=settings.clusters, seed=settings.cluster_seed,
                                     k_neighbours=settings.neighbours)
    except (KeyError, RuntimeError, ValueError) as exc:
        engine.close()
        raise StartupError(f"cannot start: {exc}") from exc

    retention = clock.slots_in(settings.retention_minutes)
    if retention < manifest.in_steps:
        log.warning("retention of %s slots is shorter than the %s-slot input window",
                    retention, manifest.in_steps)
    prefix = f"{settings.redis_prefix}:{layout_key(manifest.sensor_ids)}"
    codec = OutputCodec(manifest.out_steps, manifest.num_nodes, manifest.st_embedding_dim)
    namespace = f"{prefix}:fc:{manifest.model_version}:{settings.missing_policy}"
    buffer: ReadingBuffer
    cache: ForecastCache
    if settings.redis_url:
        client = redis_client(settings.redis_url, settings.redis_timeout_s)
        buffer = RedisBuffer(client, prefix, manifest.num_nodes, clock.interval_s, retention)
        cache = RedisForecastCache(codec, namespace, manifest.in_steps, client,
                                   lambda op: metrics.redis_errors.labels(op).inc())
    else:
        buffer = MemoryBuffer(manifest.num_nodes, clock.interval_s, retention)
        cache = MemoryForecastCache(codec, namespace, manifest.in_steps, settings.cache_entries)
    forecaster = Forecaster(
        clock=clock, buffer=buffer, cache=cache,
        stateless_cache=StatelessCache(settings.cache_entries), engine=engine, metrics=metrics,
        in_steps=manifest.in_steps, out_steps=manifest.out_steps,
        missing_policy=settings.missing_policy, missing_value=float(manifest.missing_value),
        model_version=manifest.model_version,
    )
    metrics.model_info.labels(manifest.model_name, manifest.model_version, str(runtime.backend),
                              str(runtime.provider), str(manifest.num_nodes)).set(1)
    metrics.slot_interval.set(clock.interval_s)  # monitoring: stale-feed alert counts slots
    metrics.inference_capacity.set(settings.inference_queue)  # monitoring: queue saturation
    return Services(settings=settings, manifest=manifest, runtime=runtime, clock=clock,
                    buffer=buffer, engine=engine, forecaster=forecaster, embeddings=index,
                    metrics=metrics, api_key=api_key,
                    position={s: i for i, s in enumerate(manifest.sensor_ids)})


def create_app(settings: Settings) -> FastAPI:
    """The application for one bundle; nothing is loaded until the lifespan starts."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings, metrics)
        if services.api_key is None and not settings.auth_disabled:
            log.warning("no API key configured: POST /readings and admin actions are refused")
        app.state.services = services
        services.ready = True
        metrics.ready.set_function(  # monitoring: himnet_ready without anyone calling /readyz
            lambda: float(services.ready and services.engine.runtime is not None))
        log.info("serving %s %s (%s, %s) with a %s buffer", services.manifest.model_name,
                 services.manifest.model_version, services.runtime.backend,
                 services.runtime.provider, "Redis" if services.buffer.shared else "memory")
        try:
            yield
        finally:
            services.ready = False
            await services.buffer.close()
            services.engine.close()

    app = FastAPI(title="HimNet forecast service", version="1", description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.metrics = metrics
    install_problem_handlers(app)
    for router in (readings.router, forecast.router, embeddings.router, meta.router):
        app.include_router(router)
    metrics.init_routes(app.openapi()["paths"])  # monitoring: series exist from the first scrape
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
