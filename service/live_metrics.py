"""The live-accuracy series: bounded labels (model version, horizon step, interval level).

Counters are incremented by the replica that scored a target slot (each slot is scored once
across replicas), so ``sum by (model_version, horizon) (rate(...))`` over replicas is the
fleet's figure: live MAE = rate(abs_error) / rate(scored_targets), skill = 1 - rate(abs_error) /
rate(baseline_abs_error), coverage = rate(covered) / rate(scored_targets). Every series is
created at zero when the model is loaded, so rules and panels see them from the first scrape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge


def manifest_test_mae(manifest_metrics: dict[str, Any], out_steps: int) -> list[float]:
    """The model's test-split MAE per step from the manifest (NaN where absent)."""
    try:
        rows = manifest_metrics["test"]["model"]["horizon"]
        values = [float(r["mae"]) if r.get("mae") is not None else math.nan for r in rows]
    except (KeyError, TypeError, ValueError):
        values = []
    return (values + [math.nan] * out_steps)[:out_steps]


class LiveSeries:
    """The metric families (created by ``service/metrics.py`` with the others, unlabelled)."""

    def __init__(self, r: CollectorRegistry) -> None:
        labels = ["model_version", "horizon"]
        self.targets = Counter("himnet_live_scored_targets_total",
                               "Targets (sensor x slot) scored against their forecast",
                               labels, registry=r)
        self.abs_error = Counter("himnet_live_abs_error_total",
                                 "Sum of |forecast - reading| over scored targets", labels, registry=r)
        self.sq_error = Counter("himnet_live_squared_error_total",
                                "Sum of (forecast - reading)^2 over scored targets", labels, registry=r)
        self.base_abs_error = Counter(
            "himnet_live_baseline_abs_error_total",
            "Sum of |last value - reading| over the same targets (persistence)", labels, registry=r)
        self.covered = Counter("himnet_live_covered_targets_total",
                               "Scored targets inside the prediction interval of a level",
                               labels + ["level"], registry=r)
        self.slots = Counter("himnet_live_scored_slots_total", "Target slots scored",
                             ["model_version"], registry=r)
        self.test_mae = Gauge("himnet_model_test_mae", "The model's test-split MAE (manifest)",
                              labels, registry=r)
        self.threshold = Gauge(
            "himnet_live_mae_alert_threshold",
            "Live MAE above which the drift alert fires: HIMNET_ACCURACY_ALERT_FACTOR x test "
            "MAE, at the longest horizon only", labels, registry=r)


class LiveMetrics:
    """The live series of one model version: every label value created at zero up front."""

    def __init__(self, series: LiveSeries, version: str, out_steps: int, levels: Sequence[float],
                 test_maes: Sequence[float], alert_factor: float) -> None:
        self.version = version
        self.steps = [str(h) for h in range(1, out_steps + 1)]
        self.levels = [f"{a:g}" for a in levels]
        self.targets, self.abs_error, self.sq_error = series.targets, series.abs_error, series.sq_error
        self.base_abs_error, self.covered, self.slots = (series.base_abs_error, series.covered,
                                                         series.slots)
        self.test_mae, self.threshold = series.test_mae, series.threshold
        for h, mae in zip(self.steps, test_maes):
            for c in (self.targets, self.abs_error, self.sq_error, self.base_abs_error):
                c.labels(version, h)
            for level in self.levels:
                self.covered.labels(version, h, level)
            self.test_mae.labels(version, h).set(mae)
        self.threshold.labels(version, self.steps[-1]).set(alert_factor * test_maes[-1])
        self.slots.labels(version)

    def add(self, sums: np.ndarray) -> None:
        """One scored slot's sums: T_out × F (count, abs, sq, base abs, base sq, covered…)."""
        v = self.version
        for i, h in enumerate(self.steps):
            n, ae, se, bae = (float(x) for x in sums[i, :4])
            if n == 0:
                continue
            self.targets.labels(v, h).inc(n)
            self.abs_error.labels(v, h).inc(ae)
            self.sq_error.labels(v, h).inc(se)
            self.base_abs_error.labels(v, h).inc(bae)
            for j, level in enumerate(self.levels):
                self.covered.labels(v, h, level).inc(float(sums[i, 5 + j]))
        self.slots.labels(v).inc()
