"""The tiny model behind the ``tiny_checkpoint`` / ``tiny_bundle`` fixtures (tests/conftest.py),
and raw serving-form windows to feed it.

``train_tiny`` runs the real training pipeline (``training.train.train_model``) for a few steps on
8 synthetic sensors, so export and serving tests start from a checkpoint as ``himnet train``
writes it. The evaluation windows come from an independent synthetic week (daily profile,
rush-hour dips, about 3 % missing readings = 0) so the runtime sees plausible raw speeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.time_features import time_features
from training.checkpoint import Checkpoint

NUM_NODES, IN_STEPS, OUT_STEPS = 8, 12, 12
D_TOD, D_DOW, D_S, D_ST = 4, 3, 4, 5
INTERVAL_MINUTES = 5
START = np.datetime64("2024-03-04T00:00:00", "s")  # a Monday, local wall-clock time


def synthetic_week(num_nodes: int = 8, days: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(readings T × N raw speeds with 0 = missing, time features T × 2) at 5-minute steps."""
    rng = np.random.default_rng(seed)
    steps = days * 288
    stamps = START + np.arange(steps) * np.timedelta64(INTERVAL_MINUTES * 60, "s")
    feats = time_features(stamps, 288)
    hour = feats[:, 0] * 24
    weekday = feats[:, 1] < 5
    rush = np.exp(-((hour - 8) ** 2) / 2) + np.exp(-((hour - 17.5) ** 2) / 3)
    depth = rng.uniform(10, 30, num_nodes)  # some sensors jam more than others
    free = rng.uniform(55, 70, num_nodes)
    speed = free[None] - depth[None] * (rush * weekday)[:, None] + rng.normal(0, 2, (steps, num_nodes))
    speed = np.clip(speed, 3, None)
    speed[rng.random(speed.shape) < 0.03] = 0.0
    return speed.astype(np.float32), feats


def windows(readings: np.ndarray, feats: np.ndarray, in_steps: int, out_steps: int,
            starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw serving-form windows: readings B×T_in×N, input_time, target_time, targets B×T_out×N."""
    idx_in = starts[:, None] + np.arange(in_steps)[None]
    idx_out = starts[:, None] + in_steps + np.arange(out_steps)[None]
    return readings[idx_in], feats[idx_in], feats[idx_out], readings[idx_out]


def model_inputs(readings: np.ndarray, input_time: np.ndarray, target_time: np.ndarray, mean: float,
                 std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Serving-form windows -> HimNet's (x, y_cov), built the way training builds them."""
    b, t, n = readings.shape
    x = np.concatenate([((readings - mean) / std)[..., None],
                        np.broadcast_to(input_time[:, :, None], (b, t, n, 2))], -1)
    y_cov = np.broadcast_to(target_time[:, :, None], (b, target_time.shape[1], n, 2))
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(
        np.ascontiguousarray(y_cov, np.float32))


def train_tiny(output: Path, steps: int = 15, seed: int = 0) -> Checkpoint:
    """A few optimiser steps of the real pipeline: 8 synthetic sensors over 3 days, hidden 8."""
    from training.train import train_model

    return train_model("synthetic", data_options={"num_sensors": NUM_NODES, "days": 3}, hidden=8,
                       embedding_dims=(D_TOD, D_DOW, D_S, D_ST), in_steps=IN_STEPS, out_steps=OUT_STEPS,
                       max_steps=steps, epochs=1, batch_size=8, output=output, device="cpu",
                       progress=False, seed=seed, threads=2)


def tiny_eval_windows(batch: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw windows (serving form: readings, input_time, target_time) for the tiny model."""
    readings, feats = synthetic_week(NUM_NODES)
    span = IN_STEPS + OUT_STEPS
    starts = np.random.default_rng(seed).integers(0, len(readings) - span, batch)
    r, ti, tt, _ = windows(readings, feats, IN_STEPS, OUT_STEPS, starts)
    return r.copy(), ti.copy(), tt.copy()


def train_tiny_scaled(output: Path, steps: int = 15, seed: int = 0) -> Checkpoint:
    """The tiny model on synthetic counts (``nan`` rule: 0 is a reading), per-sensor scaling and
    the log1p transform: the non-default scaling path through training, export and serving."""
    from training.train import train_model

    return train_model("synthetic", data_options={"num_sensors": NUM_NODES, "days": 3, "kind": "counts"},
                       missing="nan", scaling="per_sensor", transform="log1p", hidden=8,
                       embedding_dims=(D_TOD, D_DOW, D_S, D_ST), in_steps=IN_STEPS, out_steps=OUT_STEPS,
                       max_steps=steps, epochs=1, batch_size=8, output=output, device="cpu",
                       progress=False, seed=seed, threads=2)


def count_windows(batch: int, seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw serving-form count windows for the scaled tiny model: heavy-tailed, many zeros."""
    rng = np.random.default_rng(seed)
    _, feats = synthetic_week(NUM_NODES)
    span = IN_STEPS + OUT_STEPS
    starts = rng.integers(0, len(feats) - span, batch)
    counts = rng.poisson(rng.gamma(0.6, 8.0, (len(feats), NUM_NODES))).astype(np.float32)
    r, ti, tt, _ = windows(counts, feats, IN_STEPS, OUT_STEPS, starts)
    return r.copy(), ti.copy(), tt.copy()
