"""Builds the live-accuracy scorer of one app (``service/accuracy.py``) from the bundle and
the settings; None when ``HIMNET_LIVE_ACCURACY`` is off."""

from __future__ import annotations

from model.bundle import Manifest
from model.intervals import IntervalTable
from model.missing import MissingRule
from service.accuracy import LiveAccuracy, ScoringRules
from service.accuracy_store import AccuracyStore, MemoryAccuracyStore, RedisAccuracyStore
from service.live_metrics import LiveMetrics, manifest_test_mae
from service.metrics import Metrics
from service.settings import Settings
from service.stores import Stores


def missing_rule(manifest: Manifest) -> MissingRule:
    """The bundle's missing-value rule (today: a reading equal to ``missing_value``)."""
    return MissingRule("manifest", float(manifest.missing_value))


def build_live_accuracy(settings: Settings, manifest: Manifest, stores: Stores, metrics: Metrics,
                        intervals: IntervalTable | None) -> LiveAccuracy | None:
    """The scorer, sharing the buffer's store (Redis or memory) and reference clock."""
    if not settings.live_accuracy:
        return None
    buffer = stores.buffer
    interval_s = buffer.interval_s
    retention = max(1, int(settings.accuracy_retention_minutes * 60 // interval_s))
    rules = ScoringRules(out_steps=manifest.out_steps, num_nodes=manifest.num_nodes,
                         grace_slots=settings.accuracy_grace_slots, retention_slots=retention,
                         interval_s=interval_s, fallback=float(manifest.scaler_mean))
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
