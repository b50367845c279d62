"""``POST /forecast``: forecasts per sensor and horizon from the buffer or a supplied window."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response

from service.deps import (
    ForecasterDep,
    InputsDep,
    ModelsDep,
    RendererDep,
    json_body,
    read_access,
)
from service.schemas import ForecastRequest, ForecastResponse, problem_responses

router = APIRouter(tags=["forecast"])


@router.post(
    "/forecast",
    response_model=ForecastResponse,
    summary="Forecast every (or some) sensor and horizon",
    dependencies=[Depends(read_access), Depends(json_body)],
    responses=problem_responses(400, 401, 404, 413, 415, 422, 503),
)
async def post_forecast(
    inputs: InputsDep,
    forecaster: ForecasterDep,
    renderer: RendererDep,
    models: ModelsDep,
    req: ForecastRequest | None = Body(None),
) -> Response:
    """Forecast from the buffered window ending at ``as_of`` (default: the newest slot where
    enough sensors reported, ``window_end_reason`` says which rule chose it) or, in stateless
    mode, from the ``window`` sent with the request.

    Each horizon comes with its timestamp; ``quality`` gives the coverage of every input slot
    and which sensors were imputed (anywhere, in the last slot, or throughout) according to
    the missing-data policy. Identical windows are computed once and served from the cache.
    """
    req = req or ForecastRequest()
    if req.sensors is not None:
        inputs.check_sensors(req.sensors)
    sensors = None if req.sensors is None else list(dict.fromkeys(req.sensors))
    steps = inputs.steps(req.horizons, req.horizon_minutes)
    renderer.check_level(req.interval, models.active.intervals)
    renderer.check_spread("spread" in req.include, models.active.runtime.has_spread)
    if req.window is not None:
        grid, last = inputs.window(req.window)
        fc = await forecaster.from_request(grid, last)
    else:
        last_slot = None if req.as_of is None else inputs.as_of_slot(req.as_of)
        fc = await forecaster.from_buffer(last_slot)
    body = renderer.render(fc, sensors, steps, "st_embedding" in req.include, req.interval,
                           "spread" in req.include)
    return Response(body, media_type="application/json",
                    headers={"X-Cache": "hit" if fc.cached else "miss"})
