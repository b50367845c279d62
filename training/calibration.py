"""Split-conformal prediction intervals: calibrated on the validation split at export, checked
on the test split by ``himnet evaluate``.

Rule: for each horizon step and sensor, the half-width at level ``a`` is the
``ceil((n + 1) · a) / n`` empirical quantile of the ``n`` absolute residuals |forecast − truth|
of that step and sensor on the validation split (observed targets only, under the missing-value
rule). Where a sensor has fewer than ``min_per_sensor`` residuals at a step (default 50), the
step's quantile pooled over all sensors stands in (``per_sensor`` records which was used).
With exchangeable residuals this covers at least ``a`` of new targets, and little more.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from model.intervals import LEVELS, IntervalTable
from model.missing import observed_mask
from training.windows import PreparedData

MIN_PER_SENSOR = 50


def conformal_quantile(residuals: np.ndarray, level: float) -> float:
    """The finite-sample conformal quantile of 1-D ``residuals`` (NaN when empty)."""
    n = residuals.size
    if n == 0:
        return math.nan
    k = min(n, math.ceil((n + 1) * level))  # 1-based order statistic
    return float(np.partition(residuals, k - 1)[k - 1])


def calibrate(pred: np.ndarray, truth: np.ndarray, levels: tuple[float, ...] = LEVELS,
              min_per_sensor: int = MIN_PER_SENSOR) -> IntervalTable:
    """pred, truth: W × T_out × N raw values (truth's missing readings follow the rule)."""
    observed = observed_mask(truth) & np.isfinite(truth)
    resid = np.abs(pred.astype(np.float64) - truth.astype(np.float64))  # W × T × N
    _, steps, n = resid.shape
    half = np.zeros((len(levels), steps, n), dtype=np.float32)
    per_sensor = np.zeros((steps, n), dtype=bool)
    for t in range(steps):
        pooled_res = resid[:, t][observed[:, t]]
        pooled = [conformal_quantile(pooled_res, a) for a in levels]
        for j in range(n):
            r = resid[:, t, j][observed[:, t, j]]
            per_sensor[t, j] = r.size >= min_per_sensor
            for i, a in enumerate(levels):
                q = conformal_quantile(r, a) if per_sensor[t, j] else pooled[i]
                half[i, t, j] = 0.0 if math.isnan(q) else q
    return IntervalTable(np.asarray(levels, dtype=np.float64), half, per_sensor)


def interval_scores(table: IntervalTable, pred: np.ndarray, truth: np.ndarray,
                    lo: float = 0.0, hi: float = math.inf) -> list[dict[str, Any]]:
    """Per level and step: empirical coverage and mean width of the (clipped) intervals on
    observed targets. pred, truth: W × T_out × N raw."""
    observed = observed_mask(truth) & np.isfinite(truth)
    rows = []
    for a in table.levels:
        lower, upper = table.bounds(pred, float(a), lo, hi)  # W × T × N (broadcast)
        inside = (truth >= lower) & (truth <= upper) & observed
        width = np.where(observed, upper - lower, 0.0)
        count = observed.sum(axis=(0, 2))  # T
        rows.append({"level": float(a),
                     "coverage": (inside.sum(axis=(0, 2)) / np.maximum(count, 1)).tolist(),
                     "mean_width": (width.sum(axis=(0, 2)) / np.maximum(count, 1)).tolist(),
                     "targets": count.tolist()})
    return rows


@torch.no_grad()
def predict_split(model: nn.Module, prepared: PreparedData, split: str,
                  batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(forecast, truth): W × T_out × N raw values on every window of ``split``."""
    ds = prepared.splits[split]
    model = model.eval()
    preds, truths = [], []
    for lo in range(0, len(ds), batch_size):
        batch = ds[list(range(lo, min(lo + batch_size, len(ds))))]
        out = model(batch.x, batch.y_cov)  # B × T_out × N × 1, scaled
        preds.append(prepared.scaler.inverse(out.squeeze(-1)).numpy())
        truths.append(batch.target.squeeze(-1).numpy())
    return np.concatenate(preds), np.concatenate(truths)


def calibrate_prepared(model: nn.Module, prepared: PreparedData,
                       min_per_sensor: int = MIN_PER_SENSOR) -> IntervalTable:
    """The interval table of ``model`` calibrated on ``prepared``'s validation split."""
    if len(prepared.splits["val"]) == 0:
        raise ValueError("the split has no validation windows to calibrate intervals on "
                         "(export with --no-intervals, or train with a validation split)")
    pred, truth = predict_split(model, prepared, "val")
    return calibrate(pred, truth, LEVELS, min_per_sensor)


def calibrate_checkpoint(checkpoint: Any, data: Any = None,
                         min_per_sensor: int = MIN_PER_SENSOR) -> tuple[IntervalTable, dict[str, Any]]:
    """Calibrate a checkpoint on the validation split of the data it was trained on (re-read
    from its settings unless ``data`` is given); returns the table and the manifest record."""
    from training.evaluate import check_compatible, data_from_settings
    from training.windows import prepare

    settings = checkpoint.train_settings or {}
    data = data_from_settings(settings) if data is None else data
    check_compatible(checkpoint, data, "calibration data")
    cfg = checkpoint.config
    spec = settings.get("split", "7:1:2")
    prepared = prepare(data, spec, cfg.in_steps, cfg.out_steps,
                       scaler=checkpoint.scaler())
    table = calibrate_prepared(checkpoint.build_model(), prepared, min_per_sensor)
    record = {"method": "split-conformal: ceil((n+1)a)/n quantile of |forecast - truth|",
              "split": "val", "split_spec": str(spec), "windows": len(prepared.splits["val"]),
              "levels": [float(a) for a in table.levels], "min_per_sensor": min_per_sensor,
              "fallback": "the step's quantile pooled over all sensors",
              "per_sensor_fraction": round(float(table.per_sensor.mean()), 4)}
    return table, record
