"""Model metadata, probes, metrics and the admin action."""

from __future__ import annotations

import time

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
    ReadyDep,
    RendererDep,
    RuntimeDep,
    SettingsDep,
    read_access,
    require_key,
)
from service.schemas import Health, ModelInfo, problem_responses

router = APIRouter()


@router.get("/model", response_model=ModelInfo, tags=["model"], summary="The served model",
            dependencies=[Depends(read_access)], responses=problem_responses(401))
async def model_info(m: ManifestDep, rt: RuntimeDep, settings: SettingsDep) -> ModelInfo:
    """Bundle metadata, backend, active execution provider and the test-split metrics."""
    return ModelInfo(
        model_name=m.model_name, model_version=m.model_version, dataset=m.dataset,
        created_at=m.created_at, backend=str(rt.backend), provider=str(rt.provider),
        num_nodes=m.num_nodes, in_steps=m.in_steps, out_steps=m.out_steps,
        interval_minutes=float(m.interval_minutes), timezone=m.timezone,
        missing_value=float(m.missing_value), missing_policy=settings.missing_policy,
        day_of_week=int(m.config.get("dow_embedding_dim", 1)) > 0
        and m.config.get("ablation") not in ("no_e_t", "no_tmp"),
        metrics=m.metrics,
    )


@router.get("/livez", response_model=Health, tags=["health"], summary="Liveness")
async def livez() -> Health:
    """The process answers; nothing else is checked (restart only if this fails)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["health"], summary="Readiness",
            responses={503: {"model": Health, "description": "Not ready"}})
async def readyz(ready: ReadyDep, engine: EngineDep, buffer: BufferDep) -> Response:
    """Ready when the model is loaded and warmed and the buffer's store answers."""
    checks = {
        "model": "ok" if ready and engine.runtime is not None else "loading",
        "buffer": "ok" if await buffer.ping() else "unreachable",  # a failed ping is counted
    }
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(Health(status="ready" if ok else "not ready", checks=checks).model_dump(),
                        status_code=200 if ok else 503)


@router.get("/metrics", tags=["health"], summary="Prometheus metrics",
            response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(buffer: BufferDep, clock: ClockDep, registry: MetricsDep) -> Response:
    """Prometheus text format; the newest-slot age is measured at scrape time."""
    try:
        latest = await buffer.latest_slot()
    except BufferUnavailable:  # counted by the buffer; the scrape still answers
        latest = None  # the newest-reading timestamp keeps its last value: its age keeps growing
    else:  # the stale-feed alert: 0 while the buffer holds no reading
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
