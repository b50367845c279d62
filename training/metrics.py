"""Losses and metrics on inverse-scaled values, with missing targets (0) masked.

Everything is kept as (sum, count) pairs so that batch results, per-horizon results and the
results of several DDP processes add up exactly to the mean over the whole split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from model.missing import observed_mask

LOSSES = ("masked_mae", "huber", "masked_mse")


def masked_mae(pred: Tensor, target: Tensor) -> Tensor:
    """Mean |pred − target| over targets ≠ 0 (0 marks a missing reading); 0 when all missing."""
    mask = observed_mask(target).to(pred.dtype)
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp_min(1.0)


def loss_terms(name: str, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of per-element losses, number of elements counted) for a name in ``LOSSES``.

    ``masked_mse`` is not the paper's: it trains for RMSE where that is the figure that counts.
    """
    if name in ("masked_mae", "masked_mse"):
        mask = observed_mask(target).to(pred.dtype)
        err = (pred - target).abs() if name == "masked_mae" else (pred - target).square()
        return (err * mask).sum(), mask.sum()
    if name == "huber":  # δ = 1, every element counts (the PEMS flow sets have no zero-masking)
        return F.huber_loss(pred, target, reduction="sum", delta=1.0), pred.new_tensor(float(pred.numel()))
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def compute_loss(name: str, pred: Tensor, target: Tensor) -> Tensor:
    total, count = loss_terms(name, pred, target)
    return total / count.clamp_min(1.0)


@dataclass
class MetricSums:
    """Running masked sums per horizon step: |e|, e², |e|/|y| and the count of targets ≠ 0."""

    steps: int
    abs_err: Tensor = field(init=False)
    sq_err: Tensor = field(init=False)
    pct_err: Tensor = field(init=False)
    count: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.abs_err, self.sq_err, self.pct_err, self.count = (
            torch.zeros(self.steps, dtype=torch.float64) for _ in range(4))

    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: B × T_out × N (× 1), inverse-scaled."""
        pred = pred.detach().reshape(pred.shape[0], self.steps, -1).double().cpu()  # B × T × (N·C)
        target = target.detach().reshape(target.shape[0], self.steps, -1).double().cpu()
        mask = observed_mask(target)
        err = torch.where(mask, pred - target, torch.zeros_like(pred))
        safe = torch.where(mask, target.abs(), torch.ones_like(target))
        self.abs_err += err.abs().sum(dim=(0, 2))
        self.sq_err += (err ** 2).sum(dim=(0, 2))
        self.pct_err += (err.abs() / safe).sum(dim=(0, 2))
        self.count += mask.sum(dim=(0, 2)).double()

    def as_tensor(self) -> Tensor:
        return torch.stack([self.abs_err, self.sq_err, self.pct_err, self.count])  # 4 × T

    def load_tensor(self, packed: Tensor) -> None:
        self.abs_err, self.sq_err, self.pct_err, self.count = (t.clone() for t in packed.double().cpu())

    def result(self) -> dict:
        """``{"horizon": [{"step", "mae", "rmse", "mape"}...], "all": {...}}`` (MAPE in %)."""
        def one(a: float, s: float, p: float, c: float) -> dict[str, float]:
            if c == 0:
                return {"mae": math.nan, "rmse": math.nan, "mape": math.nan}
            return {"mae": a / c, "rmse": math.sqrt(s / c), "mape": 100.0 * p / c}

        rows = [{"step": i + 1, **one(float(self.abs_err[i]), float(self.sq_err[i]), float(self.pct_err[i]),
                                     float(self.count[i]))} for i in range(self.steps)]
        total = one(float(self.abs_err.sum()), float(self.sq_err.sum()), float(self.pct_err.sum()),
                    float(self.count.sum()))
        return {"horizon": rows, "all": total}


def average_steps(result: dict, steps: list[int]) -> dict[str, float]:
    """Mean of per-step MAE/RMSE/MAPE over the given 1-based steps (e.g. 1–3 = first 15 min)."""
    rows = [r for r in result["horizon"] if r["step"] in steps]
    return {k: sum(r[k] for r in rows) / len(rows) for k in ("mae", "rmse", "mape")}
