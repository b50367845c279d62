"""``GET /accuracy``: how good the served forecasts have been, scored by the service itself."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from service.deps import ManifestDep, SettingsDep, components, read_access
from service.errors import InvalidInput, NotFound
from service.live_metrics import manifest_test_mae
from service.schemas import problem_responses
from service.state import Components

router = APIRouter(tags=["model"])
WINDOWS = {"hour": 60.0, "day": 1440.0}


@router.get("/accuracy", summary="Live accuracy per horizon (rolling hour and day)",
            dependencies=[Depends(read_access)], responses=problem_responses(401, 404, 422, 503))
async def get_accuracy(
    parts: Annotated[Components, Depends(components)],
    manifest: ManifestDep,
    settings: SettingsDep,
    minutes: Annotated[list[float] | None, Query(description="Extra windows (minutes, > 0; at "
                                                 "most the accuracy retention)")] = None,
) -> dict[str, Any]:
    """Rolling MAE, RMSE, last-value baseline, skill (1 − MAE / baseline MAE) and interval
    coverage per horizon over the target slots of the last hour and day, the number of scored
    targets, the rules, and the model's test-split MAE per horizon from the manifest."""
    if parts.live is None:
        raise NotFound("accuracy-off", "live accuracy is switched off (HIMNET_LIVE_ACCURACY)")
    live = parts.live.active  # the served model's scores (accuracy is kept per version)
    if any(not 0 < m < float("inf") for m in minutes or []):
        raise InvalidInput("invalid-window", "'minutes' must be positive numbers of minutes")
    await live.flush()
    windows = {name: await live.window(m) for name, m in WINDOWS.items()}
    for m in minutes or []:
        windows[f"{m:g}m"] = await live.window(m)
    test = manifest.metrics.get("test", {}) if isinstance(manifest.metrics, dict) else {}
    baseline = _maes(test.get("last_value")) if isinstance(test, dict) else []
    return {
        "model_version": manifest.model_version,
        "rules": {"grace_slots": settings.accuracy_grace_slots,
                  "retention_minutes": settings.accuracy_retention_minutes,
                  "clock": "newest reading (replay mode)" if settings.replay_mode else "wall",
                  "interval_levels": live.levels},
        "windows": windows,
        "test": {"mae": _none(manifest_test_mae(manifest.metrics, manifest.out_steps)),
                 "last_value_mae": baseline},
    }


def _maes(report: Any) -> list[float | None]:
    try:
        return [r.get("mae") for r in report["horizon"]]
    except (KeyError, TypeError):
        return []


def _none(values: list[float]) -> list[float | None]:
    return [None if v != v else v for v in values]  # NaN -> null
