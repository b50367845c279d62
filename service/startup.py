"""Startup: open the bundle once, then build and wire every component of one app.

The bundle is verified exactly once: by the caller (``python -m service`` checks it before
uvicorn starts, to exit with a one-line reason) or here, before the stores are built for its
sensors. The model is then loaded and warmed by :func:`~service.reload.load_model` on its own
inference thread, the same path ``POST /admin/reload`` takes. Buffer and cache come from the one
factory in ``service/stores.py``. A missing or damaged bundle stops startup with
:class:`StartupError` naming the problem.
"""

from __future__ import annotations

from model.bundle import Manifest
from service.cache import StatelessCache
from service.errors import ServiceError
from service.forecasting import Forecaster
from service.ingest import Ingest
from service.inputs import ForecastInputs
from service.metrics import Metrics
from service.models import ModelSlot
from service.reload import Reloader, load_model, show_model, verify
from service.rendering import ForecastRenderer
from service.security import Access
from service.settings import Settings
from service.state import Components
from service.stores import Stores, build_stores
from service.timeslots import InputRules, SlotClock


class StartupError(RuntimeError):
    """The service cannot start; the message says why and what to fix."""


async def build_components(settings: Settings, metrics: Metrics,
                           manifest: Manifest | None = None) -> Components:
    """Load the model (``manifest``: already verified, or None) and wire everything to it."""
    where = settings.bundle_dir
    try:
        if manifest is None:
            manifest = await verify(where)
        clock = SlotClock(manifest.interval_minutes, manifest.steps_per_day, manifest.timezone)
        access = Access(settings.resolved_api_key(), settings.auth_disabled,
                        settings.protect_reads)
    except ServiceError as exc:
        raise StartupError(f"cannot serve model bundle {where}: {exc.detail}") from exc
    except (KeyError, RuntimeError, ValueError) as exc:
        raise StartupError(f"cannot start: {exc}") from exc
    stores = build_stores(settings, manifest, clock, metrics)
    try:
        model = await load_model(settings, metrics, where, cache=stores.cache, manifest=manifest)
    except ServiceError as exc:
        await stores.buffer.close()
        raise StartupError(f"cannot serve model bundle {where}: {exc.detail}") from exc
    try:
        return _wire(settings, metrics, ModelSlot(model), clock, access, stores)
    except BaseException:
        model.engine.close()
        raise


def _wire(settings: Settings, metrics: Metrics, models: ModelSlot, clock: SlotClock,
          access: Access, stores: Stores) -> Components:
    """Every component around the loaded model."""
    m = models.active.manifest
    rules = InputRules(clock, clock_skew_s=settings.clock_skew_s,
                       retention_minutes=settings.retention_minutes,
                       oldest_kept=stores.buffer.oldest_kept,
                       value_min=settings.value_min, value_max=settings.value_max)
    forecaster = Forecaster(
        clock=clock, buffer=stores.buffer, models=models,
        stateless_cache=StatelessCache(settings.cache_entries), metrics=metrics,
        in_steps=m.in_steps, out_steps=m.out_steps, missing_policy=settings.missing_policy,
        min_slot_coverage=settings.slot_coverage(), coverage_lookback=settings.coverage_lookback_slots)
    ingest = Ingest(rules=rules, buffer=stores.buffer, forecaster=forecaster, metrics=metrics,
                    sensor_ids=m.sensor_ids, max_batch_timestamps=settings.max_batch_timestamps)
    renderer = ForecastRenderer(clock, sensor_ids=m.sensor_ids,
                                missing_policy=settings.missing_policy,
                                decimals=settings.response_decimals)
    show_model(metrics, models.active)
    metrics.slot_interval.set(clock.interval_s)  # the stale-feed alert counts slots
    metrics.inference_capacity.set(settings.inference_queue)  # queue saturation alert
    return Components(
        settings=settings, models=models, reloader=Reloader(settings, metrics, models),
        clock=clock, buffer=stores.buffer, forecaster=forecaster, ingest=ingest,
        inputs=ForecastInputs(rules, m.sensor_ids, m.in_steps, m.out_steps),
        renderer=renderer, access=access, metrics=metrics)
