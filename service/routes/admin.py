"""``POST /admin/reload`` and ``POST /admin/rollback``: a new model without downtime, and back.

The candidate is verified, loaded and warmed beside the serving model (its own inference
thread), then swapped in at once; requests in flight finish on the model they started on. A
broken or incompatible bundle is refused (422 / 409 problem+json naming the reason) and the
serving model stays. The logic lives in ``service/reload.py`` and ``service/models.py``.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Body, Depends

from service.deps import ModelsDep, ReloaderDep, json_body, require_key
from service.routes.meta import model_ref
from service.schemas import ReloadRequest, ReloadResult, problem_responses

router = APIRouter(tags=["admin"], dependencies=[Depends(require_key)])


@router.post("/admin/reload", response_model=ReloadResult, summary="Load a model and swap it in",
             dependencies=[Depends(json_body)],
             responses=problem_responses(400, 401, 403, 404, 409, 413, 415, 422))
async def reload_model(reloader: ReloaderDep, models: ModelsDep,
                       req: ReloadRequest | None = Body(None)) -> ReloadResult:
    """Load the configured bundle directory (no body) or ``version`` from HIMNET_MODELS_DIR,
    verify (checksums, graph shapes, the serving contract: same sensors, window lengths, slot
    interval and time zone), warm it up, then serve it; the model it replaces is kept for
    ``POST /admin/rollback``. "unchanged": that version is already served."""
    started = time.perf_counter()
    outcome = await reloader.reload(None if req is None else req.version)
    return _result(outcome, models, time.perf_counter() - started)  # type: ignore[arg-type]


@router.post("/admin/rollback", response_model=ReloadResult,
             summary="Serve the previous model again", responses=problem_responses(401, 403, 409))
async def rollback_model(reloader: ReloaderDep, models: ModelsDep) -> ReloadResult:
    """Swap back to the model that was served before the last reload (instant: it is still
    loaded and warm); the current one becomes the previous, so a second rollback undoes it."""
    started = time.perf_counter()
    await reloader.rollback()
    return _result("rolled_back", models, time.perf_counter() - started)


def _result(outcome: str, models: ModelsDep, took_s: float) -> ReloadResult:
    previous = models.previous
    return ReloadResult(outcome=outcome, active=model_ref(models.active),  # type: ignore[arg-type]
                        previous=None if previous is None else model_ref(previous),
                        took_s=round(took_s, 4))
