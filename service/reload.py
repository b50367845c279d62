"""Loading a model bundle beside the serving one: verify, check the contract, warm, build.

Used at startup (the first model) and by ``POST /admin/reload``. Everything slow happens off the
event loop: the sha256 check and the embedding index in a worker thread, the ONNX session and
its warm-up on the candidate's own new inference thread (never the serving model's). A candidate
must keep the serving contract — the same sensors in the same order, window lengths, slot
interval, day length and time zone — because the reading buffer, the input checks and the
clients are built on it; a bundle that breaks it is refused and the serving model stays.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import numpy as np

from model.bundle import EMBEDDINGS_FILE, MANIFEST, BundleError, Manifest, verify_bundle
from model.intervals import IntervalError, bundle_intervals
from service.cache import ForecastCache, OutputCodec, cache_namespace
from service.embeddings import EmbeddingIndex
from service.errors import Conflict, InvalidInput, NotFound, ServiceError
from service.inference import BatchPolicy, InferenceEngine
from service.metrics import Metrics
from service.models import ModelSlot, ServedModel
from service.settings import Settings
from service.stores import store_prefix

log = logging.getLogger("service")

# What every version served by one deployment must share (see the module docstring).
CONTRACT = ("sensor_ids", "in_steps", "out_steps", "interval_minutes", "steps_per_day",
            "timezone")
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class BundleRefused(InvalidInput):
    """The candidate bundle is damaged or does not run (422); the serving model stays."""


class IncompatibleBundle(Conflict):
    """The candidate breaks the serving contract (409); the serving model stays."""


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


async def verify(bundle_dir: Path) -> Manifest:
    """The bundle's manifest once every file matches its sha256 (hashed off the event loop)."""
    try:
        return await asyncio.to_thread(verify_bundle, bundle_dir)
    except BundleError as exc:
        raise BundleRefused("invalid-bundle", f"bundle {bundle_dir} refused: {exc}") from exc


def batch_policy(settings: Settings) -> BatchPolicy:
    """The micro-batching and start-deadline settings, for every engine (startup and reload)."""
    return BatchPolicy(settings.max_batch, settings.batch_wait_ms,
                       settings.start_deadline_ms or None)


def contract_breaks(serving: Manifest, candidate: Manifest) -> list[str]:
    """What differs between the two manifests in :data:`CONTRACT` (empty: compatible)."""
    out = []
    for name in CONTRACT:
        have, new = getattr(serving, name), getattr(candidate, name)
        if have != new:
            if name == "sensor_ids":
                out.append(f"sensors: {len(new)} in the candidate, {len(have)} served"
                           if len(new) != len(have) else "sensors: other ids or order")
            else:
                out.append(f"{name}: {new!r} in the candidate, {have!r} served")
    return out


def resolve_bundle(settings: Settings, version: str | None) -> Path:
    """The directory to load: ``models_dir/version``, or the configured bundle directory."""
    if version is None:
        return settings.bundle_dir
    if settings.models_dir is None:
        raise Conflict("no-models-dir", "a version was named but HIMNET_MODELS_DIR is not set: "
                       "reload without a version (the configured bundle directory) or set it")
    if not VERSION_NAME.match(version):
        raise InvalidInput("invalid-version", f"{version!r} is not a version directory name "
                           "(letters, digits, '.', '_', '-')")
    path = settings.models_dir / version
    if not path.is_dir():
        raise NotFound("unknown-model-version", f"no bundle directory {version!r} in "
                       f"{settings.models_dir}", version=version)
    return path


async def load_model(settings: Settings, metrics: Metrics, bundle_dir: Path, *,
                     cache: ForecastCache, serving: Manifest | None = None,
                     manifest: Manifest | None = None) -> ServedModel:
    """Verify, check against ``serving`` (None: first model), load and warm ``bundle_dir``.

    ``cache``: the store's cache, from which this version's namespace is derived.
    ``manifest``: already verified by the caller (None: verified here).
    Raises :class:`BundleRefused` / :class:`IncompatibleBundle`; nothing is left running then.
    """
    if manifest is None:
        manifest = await verify(bundle_dir)
    if serving is not None:
        breaks = contract_breaks(serving, manifest)
        if breaks:
            raise IncompatibleBundle("incompatible-bundle", f"bundle {bundle_dir} refused: it "
                                     f"breaks the serving contract ({'; '.join(breaks)})",
                                     differences=breaks)
    engine = InferenceEngine(settings.inference_queue, metrics, batch_policy(settings))
    try:
        runtime = await engine.load(bundle_dir, settings.backend, settings.device,
                                    settings.threads, manifest=manifest,
                                    nice=settings.inference_nice)
        arrays = await asyncio.to_thread(read_embeddings, bundle_dir, manifest)
        index = await asyncio.to_thread(
            EmbeddingIndex.build, arrays, list(manifest.sensor_ids), manifest.coords,
            n_clusters=settings.clusters, seed=settings.cluster_seed,
            k_neighbours=settings.neighbours)
        intervals = await asyncio.to_thread(bundle_intervals, bundle_dir, manifest)
    except (BundleError, IntervalError, KeyError, OSError, RuntimeError, ValueError) as exc:
        await asyncio.to_thread(engine.close)
        raise BundleRefused("invalid-bundle", f"bundle {bundle_dir} refused: {exc}") from exc
    return ServedModel(bundle_dir=bundle_dir, manifest=manifest, runtime=runtime, engine=engine,
                       embeddings=index, cache=_cache_for(settings, manifest, cache),
                       intervals=intervals)


def _cache_for(settings: Settings, manifest: Manifest, cache: ForecastCache) -> ForecastCache:
    """The store's cache, namespaced by ``manifest``'s version."""
    codec = OutputCodec(manifest.out_steps, manifest.num_nodes, manifest.st_embedding_dim,
                        spread=manifest.ensemble is not None)
    namespace = cache_namespace(store_prefix(settings, manifest.sensor_ids),
                                manifest.model_version, settings.missing_policy)
    return cache.for_model(codec, namespace)


def show_model(metrics: Metrics, model: ServedModel) -> None:
    """``himnet_model_info`` names the active model only."""
    m, rt = model.manifest, model.runtime
    metrics.show_model(m.model_name, m.model_version, str(rt.backend), str(rt.provider),
                       str(m.num_nodes))


class Reloader:
    """The admin actions on the served model: reload (load beside, then swap) and rollback."""

    def __init__(self, settings: Settings, metrics: Metrics, slot: ModelSlot) -> None:
        self.settings = settings
        self.metrics = metrics
        self.slot = slot

    async def reload(self, version: str | None) -> str:
        """Load ``version`` (None: the configured bundle directory) and serve it; returns the
        outcome ("loaded" or "unchanged"). Refusals raise a :class:`ServiceError`."""
        if self.slot.lock.locked():
            raise Conflict("reload-in-progress", "another reload or rollback is running; retry "
                           "when it has finished")
        async with self.slot.lock:
            try:
                outcome = await self._reload(version)
            except ServiceError:
                self.metrics.model_reloads.labels("refused").inc()
                raise
            except Exception:
                self.metrics.model_reloads.labels("failed").inc()
                raise
        self.metrics.model_reloads.labels(outcome).inc()
        return outcome

    async def _reload(self, version: str | None) -> str:
        path = resolve_bundle(self.settings, version)
        manifest = await verify(path)
        active = self.slot.active
        if manifest.model_version == active.version:
            if manifest.files == active.manifest.files:
                return "unchanged"  # reload outcome
            raise Conflict("version-reused", f"bundle {path} has the served version "
                           f"{active.version!r} but other files: export it under a new version "
                           "(cached forecasts are keyed by version)")
        model = await load_model(self.settings, self.metrics, path, cache=active.cache,
                                 serving=active.manifest, manifest=manifest)
        self.slot.swap_in(model)
        show_model(self.metrics, model)
        log.info("now serving %s %s from %s (previous: %s)", manifest.model_name,
                 model.version, path, active.version)
        return "loaded"  # reload outcome

    async def rollback(self) -> None:
        """Serve the previous model again."""
        if self.slot.lock.locked():
            raise Conflict("reload-in-progress", "a reload or rollback is running; retry when it "
                           "has finished")
        async with self.slot.lock:
            if self.slot.previous is None:
                self.metrics.model_reloads.labels("refused").inc()
                raise Conflict("no-previous-model", "there is no previous model to roll back to "
                               "(nothing was reloaded since startup)")
            model = self.slot.rollback()
            show_model(self.metrics, model)
            self.metrics.model_reloads.labels("rolled_back").inc()
            log.info("rolled back to %s %s", model.manifest.model_name, model.version)
