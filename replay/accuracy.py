"""Online scoring: forecasts wait for the readings they predicted; MAE, RMSE and MAPE per horizon
over the readings that are present under the model's missing-value rule (as in training: under
``zero`` a 0 is skipped, under ``nan`` it is scored)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.datasets import MissingRule


@dataclass
class HorizonStats:
    count: int = 0
    abs_sum: float = 0.0
    sq_sum: float = 0.0
    pct_sum: float = 0.0
    pct_count: int = 0

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        err = pred.astype(np.float64) - truth.astype(np.float64)
        self.count += int(err.size)
        self.abs_sum += float(np.abs(err).sum())
        self.sq_sum += float((err ** 2).sum())
        nonzero = truth != 0  # a real 0 (nan rule) has no percentage error
        self.pct_count += int(nonzero.sum())
        self.pct_sum += float((np.abs(err[nonzero]) / np.abs(truth[nonzero])).sum())

    def summary(self) -> dict[str, float | int | None]:
        if self.count == 0:
            return {"n": 0, "mae": None, "rmse": None, "mape": None}
        return {"n": self.count, "mae": self.abs_sum / self.count,
                "rmse": math.sqrt(self.sq_sum / self.count),
                "mape": self.pct_sum / self.pct_count if self.pct_count else None}


@dataclass
class OnlineAccuracy:
    """Forecasts waiting for their truth, and error sums per horizon (1-based steps)."""

    out_steps: int
    rule: MissingRule
    horizons: dict[int, HorizonStats] = field(default_factory=dict)
    pending: dict[int, np.ndarray] = field(default_factory=dict)  # as_of row -> T_out × C

    def __post_init__(self) -> None:
        self.horizons = {h: HorizonStats() for h in range(1, self.out_steps + 1)}

    def add_forecast(self, row: int, forecast: np.ndarray) -> None:
        """``forecast``: T_out × C predictions for rows ``row+1 … row+T_out`` (NaN = not asked)."""
        self.pending[row] = forecast

    def truth_arrived(self, row: int, values: np.ndarray) -> None:
        """Score every pending forecast that predicted ``row``; ``values``: C readings."""
        present = np.isfinite(values) & self.rule.observed(values)
        for h in range(1, self.out_steps + 1):
            pred = self.pending.get(row - h)
            if pred is None:
                continue
            ok = present & np.isfinite(pred[h - 1])
            if ok.any():
                self.horizons[h].add(pred[h - 1][ok], values[ok])
        self.pending.pop(row - self.out_steps, None)  # its last horizon is now scored

    def unscored(self) -> int:
        return len(self.pending)

    def report(self, interval_s: int) -> list[dict[str, Any]]:
        return [{"horizon": h, "minutes": h * interval_s / 60.0, **s.summary()}
                for h, s in self.horizons.items()]


def format_report(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any, pct: bool = False) -> str:
        if v is None:
            return "-"
        return f"{100 * v:.2f}%" if pct else f"{v:.4f}"
    lines = [f"{'horizon':>7} {'minutes':>7} {'n':>7} {'MAE':>10} {'RMSE':>10} {'MAPE':>9}"]
    for r in rows:
        lines.append(f"{r['horizon']:>7} {r['minutes']:>7g} {r['n']:>7} {cell(r['mae']):>10} "
                     f"{cell(r['rmse']):>10} {cell(r['mape'], pct=True):>9}")
    return "\n".join(lines)
