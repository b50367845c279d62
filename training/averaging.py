"""Weight averaging for the training loop: an EMA of the weights, or SWA over the last epochs.

Averaged weights often generalise better than the last ones (a flatter point of the loss
surface, less noise from the final steps), so with averaging on the loop validates, early-stops
on and returns the *averaged* weights. HimNet has no BatchNorm or other buffers, so neither
kind needs a statistics update after averaging.

- ``ema``: e_1 = w_1, e_k = d · e_{k−1} + (1 − d) · w_k after every optimiser step k
  (``torch.optim.swa_utils.AveragedModel`` with its EMA function); it forgets over ~1/(1 − d) steps.
- ``swa``: the uniform mean of the weights at the end of each of the last ``swa_epochs`` epochs,
  counting only epochs ≥ ``swa_start``: a sliding window, so whenever early stopping ends the run
  the candidate is the mean of the epochs just before.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

AVERAGES = ("none", "ema", "swa")
DEFAULT_EMA_DECAY = 0.999
DEFAULT_SWA_EPOCHS = 5


def check_average(kind: str, ema_decay: float | None, swa_epochs: int | None,
                  swa_start: int | None) -> tuple[float, int, int]:
    """(ema_decay, swa_epochs, swa_start) with defaults filled in; ValueError for a bad value or
    for an option of the other kind (it would be ignored without a word)."""
    if kind not in AVERAGES:
        raise ValueError(f"unknown --average {kind!r}; choose one of {AVERAGES}")
    if ema_decay is not None and kind != "ema":
        raise ValueError(f"--ema-decay applies to --average ema only, not {kind}")
    if (swa_epochs is not None or swa_start is not None) and kind != "swa":
        raise ValueError(f"--swa-epochs/--swa-start apply to --average swa only, not {kind}")
    decay = DEFAULT_EMA_DECAY if ema_decay is None else float(ema_decay)
    if not 0.0 < decay < 1.0:
        raise ValueError(f"--ema-decay must be between 0 and 1 (exclusive), got {decay}")
    epochs = DEFAULT_SWA_EPOCHS if swa_epochs is None else swa_epochs
    start = 1 if swa_start is None else swa_start
    if epochs < 1 or start < 1:
        raise ValueError(f"--swa-epochs and --swa-start must be >= 1, got {epochs} and {start}")
    return decay, epochs, start


class EmaAverager:
    """Exponential moving average of the weights, updated after every optimiser step."""

    kind = "ema"

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)

    def after_step(self, model: nn.Module) -> None:
        self.avg.update_parameters(model)
        for mine, theirs in zip(self.avg.module.buffers(), model.buffers()):
            mine.copy_(theirs)  # buffers (HimNet has none) are state, not weights: copied

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        """Nothing: the EMA moves per step."""

    def averaged(self) -> nn.Module | None:
        """The averaged model, or None before the first step."""
        return self.avg.module if int(self.avg.n_averaged) > 0 else None

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "avg": {k: v.detach().cpu().clone() for k, v in self.avg.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.avg.load_state_dict(state["avg"])


class SwaAverager:
    """Uniform mean of the end-of-epoch weights of the last ``window`` epochs from ``start`` on."""

    kind = "swa"

    def __init__(self, model: nn.Module, window: int, start: int) -> None:
        self.window, self.start = window, start
        self.snapshots: deque[dict[str, torch.Tensor]] = deque(maxlen=window)
        self.module = copy.deepcopy(model)  # holds the mean for validation
        self._stale = True

    def after_step(self, model: nn.Module) -> None:
        """Nothing: SWA samples once per epoch."""

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        if epoch >= self.start:
            self.snapshots.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            self._stale = True

    def averaged(self) -> nn.Module | None:
        """The mean of the snapshots, or None before the first one."""
        if not self.snapshots:
            return None
        if self._stale:
            self.module.load_state_dict(mean_state(list(self.snapshots)))
            self._stale = False
        return self.module

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "snapshots": list(self.snapshots)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshots = deque(state["snapshots"], maxlen=self.window)
        self._stale = True


def mean_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of state dicts (in float64, cast back); non-float entries: the last one's."""
    out = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            out[key] = torch.stack([s[key].double() for s in states]).mean(dim=0).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


Averager = EmaAverager | SwaAverager


def make_averager(kind: str, model: nn.Module, ema_decay: float, swa_epochs: int,
                  swa_start: int) -> Averager | None:
    """The averager for ``--average kind`` (None for ``none``: the paper's plain training)."""
    if kind == "ema":
        return EmaAverager(model, ema_decay)
    if kind == "swa":
        return SwaAverager(model, swa_epochs, swa_start)
    return None
