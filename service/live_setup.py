"""Builds the live-accuracy scorers of one app (``service/accuracy.py``) from the bundles and
the settings; None when ``HIMNET_LIVE_ACCURACY`` is off.

Scores are kept per model version, so a reload (``POST /admin/reload``) or a rollback gets
the scorer of the model it serves: :class:`LiveScoring` builds one per version on first use,
from that model's manifest and intervals, and keeps scoring the forecasts the other versions
served (their targets are still due after the swap)."""

from __future__ import annotations

import numpy as np

from model.bundle import Manifest
from model.intervals import IntervalTable
from model.missing import MissingRule, parse_rule
from service.accuracy import LiveAccuracy, ScoringRules
from service.accuracy_store import AccuracyStore, MemoryAccuracyStore, RedisAccuracyStore
from service.live_metrics import LiveMetrics, manifest_test_mae
from service.metrics import Metrics
from service.models import ModelSlot, ServedModel
from service.settings import Settings
from service.stores import Stores


def missing_rule(manifest: Manifest) -> MissingRule:
    """The bundle's missing-value rule (``missing_rule`` of the manifest, as in training)."""
    return parse_rule(manifest.missing_rule)


class LiveScoring:
    """The scorer of every model version served since startup (a few: reloads are rare)."""

    def __init__(self, settings: Settings, stores: Stores, metrics: Metrics,
                 models: ModelSlot) -> None:
        self.settings = settings
        self.stores = stores
        self.metrics = metrics
        self.models = models
        self._scorers: dict[str, LiveAccuracy] = {}

    def of(self, model: ServedModel) -> LiveAccuracy:
        """The scorer of ``model``'s version (built on first use)."""
        scorer = self._scorers.get(model.version)
        if scorer is None:
            scorer = self._scorers[model.version] = build_scorer(
                self.settings, model.manifest, self.stores, self.metrics, model.intervals)
        return scorer

    @property
    def active(self) -> LiveAccuracy:
        """The scorer of the model served now (``GET /accuracy``)."""
        return self.of(self.models.active)

    async def remember(self, model: ServedModel, end: int, window: np.ndarray,
                       forecast: np.ndarray) -> None:
        await self.of(model).remember(end, window, forecast)

    def readings_stored(self) -> None:
        """Every version's forecasts may have targets due now."""
        for scorer in self._scorers.values():
            scorer.readings_stored()

    async def close(self) -> None:
        for scorer in self._scorers.values():
            await scorer.close()


def build_live_accuracy(settings: Settings, stores: Stores, metrics: Metrics,
                        models: ModelSlot) -> LiveScoring | None:
    """The scorers of this app, or None when live accuracy is switched off."""
    if not settings.live_accuracy:
        return None
    scoring = LiveScoring(settings, stores, metrics, models)
    scoring.of(models.active)  # the served model's series exist from startup
    return scoring


def build_scorer(settings: Settings, manifest: Manifest, stores: Stores, metrics: Metrics,
                 intervals: IntervalTable | None) -> LiveAccuracy:
    """One version's scorer, sharing the buffer's store (Redis or memory) and reference clock."""
    buffer = stores.buffer
    interval_s = buffer.interval_s
    retention = max(1, int(settings.accuracy_retention_minutes * 60 // interval_s))
    rules = ScoringRules(out_steps=manifest.out_steps, num_nodes=manifest.num_nodes,
                         grace_slots=settings.accuracy_grace_slots, retention_slots=retention,
                         interval_s=interval_s, fallback=manifest.typical_reading())
    store: AccuracyStore
    if stores.client is None:
        store = MemoryAccuracyStore(buffer, manifest.out_steps + settings.accuracy_grace_slots + 1,
                                    retention)
    else:
        def count(operation: str) -> None:
            metrics.redis_errors.labels(operation).inc()

        store = RedisAccuracyStore(buffer, stores.client,
                                   f"{stores.prefix}:acc:{manifest.model_version}", count)
    levels = [] if intervals is None else [float(a) for a in intervals.levels]
    live_metrics = LiveMetrics(metrics.live, manifest.model_version, manifest.out_steps, levels,
                               manifest_test_mae(manifest.metrics, manifest.out_steps),
                               settings.accuracy_alert_factor)
    return LiveAccuracy(store, buffer.clock, live_metrics, rules, missing_rule(manifest), intervals)
