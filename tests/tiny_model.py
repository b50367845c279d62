"""A tiny trained HimNet checkpoint for export and serving tests (``tiny_checkpoint`` /
``tiny_bundle`` fixtures in ``tests/conftest.py``).

Training: a few Adam steps, the way the training pipeline feeds the model (z-scored value plus
time of day and day of week per node, masked MAE on raw units), on a synthetic week of 8 sensors
with a daily speed profile, rush-hour dips and about 3 % missing readings (0). It is small and
fast, but its weights have moved away from their initialisation, so the bundle tests exercise a
trained model, not a freshly initialised one.
"""

from __future__ import annotations

import numpy as np
import torch

from model import HimNet, HimNetConfig
from model.time_features import time_features
from training.checkpoint import Checkpoint

TINY_CONFIG = HimNetConfig(num_nodes=8, in_steps=12, out_steps=12, hidden_dim=8,
                           tod_embedding_dim=4, dow_embedding_dim=3, node_embedding_dim=4,
                           st_embedding_dim=5, steps_per_day=288, tf_decay_steps=50.0)
INTERVAL_MINUTES = 5
TIMEZONE = "America/Los_Angeles"
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


def make_tiny_checkpoint(steps: int = 15, seed: int = 0) -> Checkpoint:
    cfg = TINY_CONFIG
    readings, feats = synthetic_week(cfg.num_nodes, seed=seed)
    cut = int(len(readings) * 0.8)
    observed = readings[:cut][readings[:cut] > 0]
    mean, std = float(observed.mean()), float(observed.std())

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = HimNet(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2, eps=1e-3)
    span = cfg.in_steps + cfg.out_steps
    model.train()
    for step in range(steps):
        starts = rng.integers(0, cut - span, 8)
        r, ti, tt, y = windows(readings, feats, cfg.in_steps, cfg.out_steps, starts)
        x, y_cov = model_inputs(r, ti, tt, mean, std)
        target = torch.from_numpy(y)
        labels = ((target - mean) / std).unsqueeze(-1)
        pred = model(x, y_cov, labels, batches_seen=step)[..., 0] * std + mean
        mask = (target > 0).float()
        loss = ((pred - target).abs() * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    model.eval()
    starts = np.arange(cut, len(readings) - span, 12)
    r, ti, tt, y = windows(readings, feats, cfg.in_steps, cfg.out_steps, starts)
    with torch.no_grad():
        pred = model(*model_inputs(r, ti, tt, mean, std))[..., 0].numpy() * std + mean
    mask = y > 0
    mae = float(np.abs(pred - y)[mask].mean())
    rmse = float(np.sqrt(((pred - y) ** 2)[mask].mean()))
    mape = float((np.abs(pred - y)[mask] / y[mask]).mean())
    return Checkpoint(
        config=cfg,
        state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
        scaler_mean=mean,
        scaler_std=std,
        sensor_ids=[f"7170{i:02d}" for i in range(cfg.num_nodes)],
        interval_minutes=INTERVAL_MINUTES,
        dataset="tiny-synthetic",
        coords=[(34.0 + 0.01 * i, -118.3 + 0.02 * i) for i in range(cfg.num_nodes)],
        timezone=TIMEZONE,
        metrics={"test": {"mae": mae, "rmse": rmse, "mape": mape}, "train_steps": steps},
    )


def tiny_eval_windows(batch: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out raw windows (serving form) from the same synthetic week."""
    cfg = TINY_CONFIG
    readings, feats = synthetic_week(cfg.num_nodes)
    span = cfg.in_steps + cfg.out_steps
    starts = np.random.default_rng(seed).integers(int(len(readings) * 0.8), len(readings) - span, batch)
    r, ti, tt, _ = windows(readings, feats, cfg.in_steps, cfg.out_steps, starts)
    return r.copy(), ti.copy(), tt.copy()
