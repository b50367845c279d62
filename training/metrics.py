"""Losses and metrics on inverse-scaled values, with missing targets masked by the data's rule.

What is missing is the data set's choice (``model.missing``): 0 under the default ``zero`` rule,
only NaN under ``nan`` (count data, where 0 is a real reading), or a sentinel. Every function
takes the rule; masking is done with ``torch.where`` so a NaN target never leaks into a sum.

Everything is kept as (sum, count) pairs so that batch results, per-horizon results and the
results of several DDP processes add up exactly to the mean over the whole split, and averages
over several horizon steps pool the errors (:func:`average_steps`), as published comparisons do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from model.missing import DEFAULT_RULE, MissingRule

LOSSES = ("masked_mae", "huber", "masked_mse", "mae_mse")
# mae_mse's weight on the MSE part. At LOS-LOOP's 15-minute errors (MAE ≈ 2.9, MSE ≈ 27 mph²)
# 0.1 makes the two parts about equal, and their gradients balance at |e| = 1/(2w) = 5 mph:
# smaller errors are pulled mostly by the MAE part, the tail (what RMSE counts) by the MSE part.
# At 1.0 the MSE part would be ~90 % of the loss, i.e. nearly masked_mse.
DEFAULT_MSE_WEIGHT = 0.1


def masked_mae(pred: Tensor, target: Tensor, rule: MissingRule = DEFAULT_RULE) -> Tensor:
    """Mean |pred − target| over the targets present under ``rule``; 0 when all are missing."""
    total, count = loss_terms("masked_mae", pred, target, rule)
    return total / count.clamp_min(1.0)


def loss_terms(name: str, pred: Tensor, target: Tensor, rule: MissingRule = DEFAULT_RULE,
               mse_weight: float = DEFAULT_MSE_WEIGHT) -> tuple[Tensor, Tensor]:
    """(sum of per-element losses, number of elements counted) for a name in ``LOSSES``.

    ``masked_mse`` is not the paper's: it trains for RMSE where that is the figure that counts.
    ``mae_mse`` = masked MAE + ``mse_weight`` · masked MSE: both parts count the same targets, so
    one (sum, count) pair carries it exactly. ``huber`` counts every target but NaN (the PEMS flow
    sets have no zero-masking).
    """
    if name in ("masked_mae", "masked_mse", "mae_mse"):
        mask = rule.observed(target)
        diff = torch.where(mask, pred - target, torch.zeros_like(pred))
        if name == "masked_mae":
            err = diff.abs()
        elif name == "masked_mse":
            err = diff.square()
        else:
            err = diff.abs() + mse_weight * diff.square()
        return err.sum(), mask.sum().to(pred.dtype)
    if name == "huber":  # δ = 1
        finite = target == target  # NaN: a gap under the nan rule, never a reading
        per = F.huber_loss(pred, torch.where(finite, target, pred), reduction="none", delta=1.0)
        return per.sum(), finite.sum().to(pred.dtype)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def compute_loss(name: str, pred: Tensor, target: Tensor, rule: MissingRule = DEFAULT_RULE,
                 mse_weight: float = DEFAULT_MSE_WEIGHT) -> Tensor:
    total, count = loss_terms(name, pred, target, rule, mse_weight)
    return total / count.clamp_min(1.0)


@dataclass
class MetricSums:
    """Running masked sums per horizon step: |e|, e², |e|/|y|, the count of targets present
    under ``rule`` and the count of those ≠ 0 (MAPE's: a real 0 has no percentage error)."""

    steps: int
    rule: MissingRule = DEFAULT_RULE
    abs_err: Tensor = field(init=False)
    sq_err: Tensor = field(init=False)
    pct_err: Tensor = field(init=False)
    count: Tensor = field(init=False)
    pct_count: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.abs_err, self.sq_err, self.pct_err, self.count, self.pct_count = (
            torch.zeros(self.steps, dtype=torch.float64) for _ in range(5))

    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: B × T_out × N (× 1), inverse-scaled."""
        pred = pred.detach().reshape(pred.shape[0], self.steps, -1).double().cpu()  # B × T × (N·C)
        target = target.detach().reshape(target.shape[0], self.steps, -1).double().cpu()
        mask = self.rule.observed(target)
        pct = mask & (target != 0)
        err = torch.where(mask, pred - target, torch.zeros_like(pred))
        safe = torch.where(pct, target.abs(), torch.ones_like(target))
        self.abs_err += err.abs().sum(dim=(0, 2))
        self.sq_err += (err ** 2).sum(dim=(0, 2))
        self.pct_err += torch.where(pct, err.abs() / safe, torch.zeros_like(err)).sum(dim=(0, 2))
        self.count += mask.sum(dim=(0, 2)).double()
        self.pct_count += pct.sum(dim=(0, 2)).double()

    def as_tensor(self) -> Tensor:
        return torch.stack([self.abs_err, self.sq_err, self.pct_err, self.count, self.pct_count])  # 5 × T

    def load_tensor(self, packed: Tensor) -> None:
        self.abs_err, self.sq_err, self.pct_err, self.count, self.pct_count = (
            t.clone() for t in packed.double().cpu())

    def result(self) -> dict:
        """``{"horizon": [{"step", "mae", "rmse", "mape", "count", "mape_count"}...], "all": {...}}``
        (MAPE in %; the counts let :func:`average_steps` pool steps exactly)."""
        rows = [{"step": i + 1, **_row(*(float(t[i]) for t in self.as_tensor()))} for i in range(self.steps)]
        return {"horizon": rows, "all": _row(*(float(t.sum()) for t in self.as_tensor()))}


def _row(a: float, s: float, p: float, c: float, pc: float) -> dict[str, float]:
    """One result row from the sums of |e|, e², |e|/|y| and the two counts."""
    return {"mae": a / c if c else math.nan, "rmse": math.sqrt(s / c) if c else math.nan,
            "mape": 100.0 * p / pc if pc else math.nan, "count": c, "mape_count": pc}


def average_steps(result: dict, steps: list[int]) -> dict[str, float]:
    """MAE / RMSE / MAPE over the given 1-based steps (e.g. 1–3 = the first 15 minutes), pooled:
    RMSE is the root of the mean squared error over every target of those steps, not the mean of
    the per-step RMSEs (which is lower, flattering the model). Rows without counts (results
    written before counts were kept) are weighted equally, exact when no target is missing."""
    rows = [r for r in result["horizon"] if r["step"] in steps]
    if not rows:
        raise ValueError(f"no horizon steps {steps} in the result")
    n = [float(r.get("count", 1.0)) for r in rows]
    npct = [float(r.get("mape_count", r.get("count", 1.0))) for r in rows]
    total, total_pct = sum(n), sum(npct)
    if total == 0:
        return {"mae": math.nan, "rmse": math.nan, "mape": math.nan}
    mae = sum(k * r["mae"] for k, r in zip(n, rows) if k) / total
    mse = sum(k * r["rmse"] ** 2 for k, r in zip(n, rows) if k) / total
    mape = sum(k * r["mape"] for k, r in zip(npct, rows) if k) / total_pct if total_pct else math.nan
    return {"mae": mae, "rmse": math.sqrt(mse), "mape": mape}
