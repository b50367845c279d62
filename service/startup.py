"""Startup: open the bundle once, then build and wire every component of one app.

The bundle is verified exactly once: by the caller (``python -m service`` checks it before
uvicorn starts, to exit with a one-line reason) or, when no verified manifest is handed over,
by :func:`~service.runtime.load_runtime` on the inference thread. Buffer and cache come from
the one factory in ``service/stores.py``. A missing or damaged bundle stops startup with
:class:`StartupError` naming the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.bundle import EMBEDDINGS_FILE, MANIFEST, BundleError, Manifest
from service.cache import StatelessCache
from service.embeddings import EmbeddingIndex
from service.forecasting import Forecaster
from service.inference import BatchPolicy, InferenceEngine
from service.ingest import Ingest
from service.inputs import ForecastInputs
from service.metrics import Metrics
from service.rendering import ForecastRenderer
from service.runtime import Runtime
from service.security import Access
from service.settings import Settings
from service.state import Components
from service.stores import build_stores
from service.timeslots import InputRules, SlotClock


class StartupError(RuntimeError):
    """The service cannot start; the message says why and what to fix."""


def read_embeddings(bundle_dir: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    """``embeddings.npz`` as plain arrays; its sha256 was checked with the rest of the bundle.

    (``model.bundle.load_embeddings`` would read the manifest and hash the file again.)
    """
    path = bundle_dir / EMBEDDINGS_FILE
    if EMBEDDINGS_FILE not in manifest.files:
        raise BundleError(f"{path}: not listed in {bundle_dir / MANIFEST}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: not a readable npz ({exc})") from exc


async def build_components(settings: Settings, metrics: Metrics,
                           manifest: Manifest | None = None) -> Components:
    """Load the model (``manifest``: already verified, or None) and wire everything to it."""
    engine = InferenceEngine(settings.inference_queue, metrics, BatchPolicy(
        settings.max_batch, settings.batch_wait_ms, settings.start_deadline_ms or None))
    try:
        runtime = await engine.load(settings.bundle_dir, settings.backend, settings.device,
                                    settings.threads, manifest=manifest)
        arrays = read_embeddings(settings.bundle_dir, runtime.manifest)
    except BundleError as exc:
        engine.close()
        raise StartupError(f"cannot serve model bundle {settings.bundle_dir}: {exc}") from exc
    except (OSError, RuntimeError, ValueError) as exc:
        engine.close()
        raise StartupError(f"cannot load the model from {settings.bundle_dir}: {exc}") from exc
    try:
        return _wire(settings, metrics, engine, runtime, arrays)
    except BaseException:
        engine.close()
        raise


def _wire(settings: Settings, metrics: Metrics, engine: InferenceEngine, runtime: Runtime,
          arrays: dict[str, np.ndarray]) -> Components:
    """Every component for the loaded ``runtime``."""
    m = runtime.manifest
    try:
        clock = SlotClock(m.interval_minutes, m.steps_per_day, m.timezone)
        access = Access(settings.resolved_api_key(), settings.auth_disabled,
                        settings.protect_reads)
        index = EmbeddingIndex.build(arrays, list(m.sensor_ids), m.coords,
                                     n_clusters=settings.clusters, seed=settings.cluster_seed,
                                     k_neighbours=settings.neighbours)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise StartupError(f"cannot start: {exc}") from exc
    stores = build_stores(settings, m, clock, metrics)
    rules = InputRules(clock, clock_skew_s=settings.clock_skew_s,
                       retention_minutes=settings.retention_minutes,
                       oldest_kept=stores.buffer.oldest_kept,
                       value_min=settings.value_min, value_max=settings.value_max)
    forecaster = Forecaster(
        clock=clock, buffer=stores.buffer, cache=stores.cache,
        stateless_cache=StatelessCache(settings.cache_entries), engine=engine, metrics=metrics,
        in_steps=m.in_steps, out_steps=m.out_steps,
        missing_policy=settings.missing_policy, missing_value=float(m.missing_value),
        model_version=m.model_version,
    )
    ingest = Ingest(rules=rules, buffer=stores.buffer, forecaster=forecaster, metrics=metrics,
                    sensor_ids=m.sensor_ids, max_batch_timestamps=settings.max_batch_timestamps)
    renderer = ForecastRenderer(clock, sensor_ids=m.sensor_ids, model_version=m.model_version,
                                missing_policy=settings.missing_policy,
                                decimals=settings.response_decimals)
    metrics.model_info.labels(m.model_name, m.model_version, str(runtime.backend),
                              str(runtime.provider), str(m.num_nodes)).set(1)
    metrics.slot_interval.set(clock.interval_s)  # the stale-feed alert counts slots
    metrics.inference_capacity.set(settings.inference_queue)  # queue saturation alert
    return Components(
        settings=settings, manifest=m, runtime=runtime, clock=clock, engine=engine,
        buffer=stores.buffer, forecaster=forecaster, ingest=ingest,
        inputs=ForecastInputs(rules, m.sensor_ids, m.in_steps, m.out_steps),
        renderer=renderer, embeddings=index, access=access, metrics=metrics)
