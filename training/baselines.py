"""Two baselines every model must beat, computed on exactly the evaluation windows.

- last value: each sensor's last observed reading in the input window, held flat;
- historical average: mean of the training data at the same (time-of-day slot, day of week),
  falling back to the slot's mean over all days, then the sensor's mean, where training data
  never saw that context (LOS-LOOP's one week has no training Wednesday, for instance).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from model.missing import DEFAULT_RULE, MissingRule
from model.time_features import time_features
from training.datasets.base import SensorData


def last_value(x_raw: Tensor, out_steps: int, fallback: Tensor, rule: MissingRule = DEFAULT_RULE) -> Tensor:
    """x_raw: B × T_in × N raw inputs (gaps as ``rule`` marks them) -> B × T_out × N forecast.

    ``fallback`` (N) is used for a sensor with no reading in the whole window.
    """
    b, t_in, n = x_raw.shape
    observed = rule.observed(x_raw)  # B × T_in × N
    pos = torch.arange(t_in).view(1, t_in, 1).expand(b, t_in, n)
    last = torch.where(observed, pos, torch.full_like(pos, -1)).max(dim=1).values  # B × N
    value = x_raw.gather(1, last.clamp_min(0).unsqueeze(1)).squeeze(1)  # B × N
    value = torch.where(last >= 0, value, fallback.to(value.dtype).expand(b, n))
    return value.unsqueeze(1).expand(b, out_steps, n)


class HistoricalAverage:
    """Per-sensor mean by (slot, day of week) over training rows, ignoring missing readings."""

    def __init__(self, data: SensorData, rows: np.ndarray) -> None:
        spd = data.steps_per_day
        feats = time_features(data.timestamps, spd)  # T × 2
        self.slot = np.rint(feats[:, 0] * spd).astype(np.int64) % spd  # T
        self.dow = feats[:, 1].astype(np.int64)  # T
        seen_mask = data.missing.observed(data.values[rows])  # R × N
        vals = np.where(seen_mask, data.values[rows], 0.0).astype(np.float64)  # R × N, gaps add nothing
        seen = seen_mask.astype(np.float64)
        n = data.num_nodes
        sums = np.zeros((7, spd, n))
        counts = np.zeros((7, spd, n))
        np.add.at(sums, (self.dow[rows], self.slot[rows]), vals)
        np.add.at(counts, (self.dow[rows], self.slot[rows]), seen)
        slot_mean = sums.sum(0) / np.maximum(counts.sum(0), 1)  # spd × N
        sensor_mean = vals.sum(0) / np.maximum(seen.sum(0), 1)  # N
        slot_mean = np.where(counts.sum(0) > 0, slot_mean, sensor_mean)
        table = np.where(counts > 0, sums / np.maximum(counts, 1), slot_mean[None])  # 7 × spd × N
        self.table = torch.from_numpy(table.astype(np.float32))
        self.sensor_mean = torch.from_numpy(sensor_mean.astype(np.float32))
        self._slot = torch.from_numpy(self.slot)
        self._dow = torch.from_numpy(self.dow)

    def predict(self, rows: Tensor) -> Tensor:
        """rows: B × T_out target rows -> B × T_out × N forecast."""
        return self.table[self._dow[rows], self._slot[rows]]
