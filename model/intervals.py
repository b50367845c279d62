"""Prediction intervals in the bundle: split-conformal half-widths per level, step and sensor.

``intervals.npz`` (bundle format 2, optional: a bundle without it serves no intervals)::

    levels      L            float64, nominal coverage (0.5, 0.8, 0.9, 0.95)
    half_width  L × T_out × N float32, raw units: the interval is forecast ± half_width
    per_sensor  T_out × N    bool, True where the sensor's own residual quantile is used,
                             False where the step's pooled quantile stands in (too few residuals)

Calibration (``training/calibration.py``) takes the absolute residuals of the validation split;
serving (``service/``) and ``himnet evaluate`` only read this table. numpy only, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

INTERVALS_FILE = "intervals.npz"
LEVELS = (0.5, 0.8, 0.9, 0.95)


class IntervalError(ValueError):
    """An interval table is malformed, or a level was asked that it does not hold."""


@dataclass(frozen=True)
class IntervalTable:
    """Half-widths of the calibrated intervals (see the module doc for the shapes)."""

    levels: np.ndarray  # L
    half_width: np.ndarray  # L × T_out × N
    per_sensor: np.ndarray  # T_out × N

    def __post_init__(self) -> None:
        if self.half_width.ndim != 3 or self.half_width.shape[0] != len(self.levels):
            raise IntervalError(f"half_width must be levels × T_out × N, got {self.half_width.shape}")
        if self.per_sensor.shape != self.half_width.shape[1:]:
            raise IntervalError(f"per_sensor must be T_out × N, got {self.per_sensor.shape}")
        if not np.all(np.isfinite(self.half_width)) or np.any(self.half_width < 0):
            raise IntervalError("half widths must be finite and non-negative")

    def index(self, level: float) -> int:
        """Position of ``level`` among the calibrated levels."""
        hits = np.flatnonzero(np.isclose(self.levels, level, atol=1e-9))
        if not len(hits):
            listed = ", ".join(f"{x:g}" for x in self.levels)
            raise IntervalError(f"interval level {level:g} is not calibrated; choose one of {listed}")
        return int(hits[0])

    def bounds(self, forecast: np.ndarray, level: float, lo: float = -np.inf,
               hi: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """``forecast`` (T_out × N) ± the level's half-widths, clipped to ``[lo, hi]``."""
        q = self.half_width[self.index(level)]
        return np.clip(forecast - q, lo, hi), np.clip(forecast + q, lo, hi)


def write_intervals(path: str | Path, table: IntervalTable) -> None:
    np.savez(path, levels=np.asarray(table.levels, dtype=np.float64),
             half_width=table.half_width.astype(np.float32),
             per_sensor=table.per_sensor.astype(bool))


def read_intervals(path: str | Path) -> IntervalTable:
    """The table in ``path`` (its sha256 is checked with the rest of the bundle)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return IntervalTable(np.asarray(data["levels"], dtype=np.float64),
                                 np.asarray(data["half_width"], dtype=np.float32),
                                 np.asarray(data["per_sensor"], dtype=bool))
    except (OSError, KeyError, ValueError) as exc:
        raise IntervalError(f"{path}: not a readable interval table ({exc})") from exc


def bundle_intervals(bundle_dir: str | Path, manifest: object) -> IntervalTable | None:
    """The bundle's interval table, or None for a bundle without one (format 1, or exported
    with ``--no-intervals``). The file's checksum is verified with the rest of the bundle."""
    record = getattr(manifest, "intervals", None)
    files = getattr(manifest, "files", {})
    if not record or INTERVALS_FILE not in files:
        return None
    table = read_intervals(Path(bundle_dir) / INTERVALS_FILE)
    want = (getattr(manifest, "out_steps"), getattr(manifest, "num_nodes"))
    if table.half_width.shape[1:] != want:
        raise IntervalError(f"{Path(bundle_dir) / INTERVALS_FILE}: half widths of shape "
                            f"{table.half_width.shape[1:]}, the model has T_out × N = {want}")
    return table
