"""Model metadata, probes, metrics and the admin action."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from service.buffer import BufferUnavailable
from service.problems import Problem
from service.schemas import Health, ModelInfo, problem_responses
from service.security import read_access, require_key
from service.state import Services, get_services

router = APIRouter()


@router.get("/model", response_model=ModelInfo, tags=["model"], summary="The served model",
            dependencies=[Depends(read_access)], responses=problem_responses(401))
async def model_info(services: Services = Depends(get_services)) -> ModelInfo:
    """Bundle metadata, backend, active execution provider and the test-split metrics."""
    m, rt = services.manifest, services.runtime
    return ModelInfo(
        model_name=m.model_name, model_version=m.model_version, dataset=m.dataset,
        created_at=m.created_at, backend=str(rt.backend), provider=str(rt.provider),
        num_nodes=m.num_nodes, in_steps=m.in_steps, out_steps=m.out_steps,
        interval_minutes=float(m.interval_minutes), timezone=m.timezone,
        missing_value=float(m.missing_value), missing_policy=services.settings.missing_policy,
        metrics=m.metrics,
    )


@router.get("/livez", response_model=Health, tags=["health"], summary="Liveness")
async def livez() -> Health:
    """The process answers; nothing else is checked (restart only if this fails)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["health"], summary="Readiness",
            responses={503: {"model": Health, "description": "Not ready"}})
async def readyz(services: Services = Depends(get_services)) -> Response:
    """Ready when the model is loaded and warmed and the buffer's store answers."""
    checks = {
        "model": "ok" if services.ready and services.engine.runtime is not None else "loading",
        "buffer": "ok" if await services.buffer.ping() else "unreachable",
    }
    ok = all(v == "ok" for v in checks.values())
    if checks["buffer"] != "ok":
        services.metrics.redis_errors.labels("ping").inc()
    return JSONResponse(Health(status="ready" if ok else "not ready", checks=checks).model_dump(),
                        status_code=200 if ok else 503)


@router.get("/metrics", tags=["health"], summary="Prometheus metrics",
            response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(services: Services = Depends(get_services)) -> Response:
    """Prometheus text format; the newest slot and its age are read at scrape time."""
    try:
        latest = await services.buffer.latest_slot()
    except BufferUnavailable:
        services.metrics.redis_errors.labels("read").inc()
        latest = None  # the newest-reading timestamp keeps its last value: its age keeps growing
    else:  # monitoring (stale-feed alert): 0 while the buffer holds no reading
        newest = services.clock.start(latest).timestamp() if latest is not None else 0.0
        services.metrics.newest_reading_timestamp.set(newest)
    if latest is not None:
        age = time.time() - services.clock.start(latest).timestamp()
        services.metrics.newest_slot_age.set(age)
    else:
        services.metrics.newest_slot_age.set(float("nan"))
    return Response(services.metrics.render(), media_type=services.metrics.content_type)


@router.delete("/admin/cache", tags=["admin"], status_code=204, summary="Drop cached forecasts",
               dependencies=[Depends(require_key)], responses=problem_responses(401, 403, 503))
async def clear_cache(services: Services = Depends(get_services)) -> Response:
    """Forget cached forecasts of this model version (e.g. after fixing readings by hand)."""
    services.bodies.clear()
    try:
        await services.forecaster.clear_cache()
    except BufferUnavailable as exc:
        raise Problem(503, "store-unavailable", "the forecast cache (Redis) is unreachable",
                      headers={"Retry-After": str(services.settings.retry_after_s)}) from exc
    return Response(status_code=204)
