"""Model metadata, probes, metrics and the cache admin action (reload: ``routes/admin.py``)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from service.buffer import BufferUnavailable
from service.deps import (
    BufferDep,
    ClockDep,
    EngineDep,
    ForecasterDep,
    ManifestDep,
    MetricsDep,
    ModelsDep,
    RendererDep,
    RuntimeDep,
    ServingDep,
    SettingsDep,
    read_access,
    require_key,
)
from service.models import ServedModel
from service.schemas import Health, ModelInfo, ModelRef, problem_responses

router = APIRouter()


@router.get("/model", response_model=ModelInfo, tags=["model"], summary="The served model",
            dependencies=[Depends(read_access)], responses=problem_responses(401))
async def model_info(m: ManifestDep, rt: RuntimeDep, settings: SettingsDep,
                     models: ModelsDep) -> ModelInfo:
    """Bundle metadata, backend, active execution provider and the test-split metrics of the
    active model, and which model ``POST /admin/rollback`` would bring back."""
    active, previous = models.active, models.previous
    return ModelInfo(
        model_name=m.model_name, model_version=m.model_version, dataset=m.dataset,
        created_at=m.created_at, backend=str(rt.backend), provider=str(rt.provider),
        num_nodes=m.num_nodes, in_steps=m.in_steps, out_steps=m.out_steps,
        interval_minutes=float(m.interval_minutes), timezone=m.timezone,
        missing_value=float(m.missing_value), missing_rule=m.missing_rule,
        missing_policy=settings.missing_policy, scaling=m.scaling, transform=m.transform,
        missing_values=None if np.ndim(gap := m.gap_readings()) == 0 else [float(v) for v in gap],
        day_of_week=int(m.config.get("dow_embedding_dim", 1)) > 0
        and m.config.get("ablation") not in ("no_e_t", "no_tmp"),
        metrics=m.metrics, loaded_at=_when(active.loaded_at),
        previous=None if previous is None else model_ref(previous),
    )


def _when(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc)


def model_ref(model: ServedModel) -> ModelRef:
    """How the API names a loaded model."""
    m = model.manifest
    return ModelRef(model_name=m.model_name, model_version=m.model_version,
                    created_at=m.created_at, loaded_at=_when(model.loaded_at))


@router.get("/livez", response_model=Health, tags=["health"], summary="Liveness")
async def livez() -> Health:
    """The process answers; nothing else is checked (restart only if this fails)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["health"], summary="Readiness",
            responses={503: {"model": Health, "description": "Not ready"}})
async def readyz(ready: ServingDep, engine: EngineDep, buffer: BufferDep,
                 registry: MetricsDep) -> Response:
    """Ready when the model is loaded and warmed, its inference thread runs and the service is
    not shutting down. The buffer's store is reported but does not decide: with Redis down
    the replica still serves stateless forecasts, embeddings and ``/model`` (status
    "degraded"), and the routes that need Redis answer 503 with ``Retry-After``."""
    store_ok = await buffer.ping()  # a failed ping is counted
    if buffer.shared:
        registry.redis_up.set(float(store_ok))
    checks = {
        "model": "ok" if engine.runtime is not None else "loading",
        "inference": "ok" if engine.alive else "stopped",
        "buffer": "ok" if store_ok else "unreachable",
    }
    status = ("ready" if store_ok else "degraded") if ready else "not ready"
    return JSONResponse(Health(status=status, checks=checks).model_dump(),
                        status_code=200 if ready else 503)


@router.get("/metrics", tags=["health"], summary="Prometheus metrics",
            response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(buffer: BufferDep, clock: ClockDep, registry: MetricsDep) -> Response:
    """Prometheus text format; the newest-slot age is measured at scrape time."""
    try:
        latest = await buffer.latest_slot()
    except BufferUnavailable:  # counted by the buffer; the scrape still answers
        latest = None  # the newest-reading timestamp keeps its last value: its age keeps growing
        registry.redis_up.set(0.0)
    else:
        if buffer.shared:
            registry.redis_up.set(1.0)  # the stale-feed alert: 0 while the buffer holds no reading
        registry.newest_reading_timestamp.set(
            clock.start(latest).timestamp() if latest is not None else 0.0)
    if latest is not None:
        registry.newest_slot_age.set(time.time() - clock.start(latest).timestamp())
    else:
        registry.newest_slot_age.set(float("nan"))
    return Response(registry.render(), media_type=registry.content_type)


@router.delete("/admin/cache", tags=["admin"], status_code=204, summary="Drop cached forecasts",
               dependencies=[Depends(require_key)], responses=problem_responses(401, 403, 503))
async def clear_cache(renderer: RendererDep, forecaster: ForecasterDep) -> Response:
    """Forget cached forecasts of this model version (e.g. after fixing readings by hand)."""
    renderer.clear()
    await forecaster.clear_cache()
    return Response(status_code=204)
