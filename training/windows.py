"""Sliding windows over one array, chronological splits and the scaler.

Windows are never materialised: a dataset keeps the ``T × N`` series once and gathers a batch
of windows by index, so PEMS07 (28k steps × 883 sensors, ~100 MB) costs no more than its array.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from model.missing import DEFAULT_RULE, MissingRule
from model.scaling import (
    GLOBAL,
    LOG1P,
    NO_TRANSFORM,
    PER_SENSOR,
    check_transformable,
    parse_scaling,
    parse_transform,
    to_model_space,
    to_raw_space,
)
from model.serving import assemble_inputs
from model.time_features import time_features
from training.datasets.base import DatasetError, SensorData

SPLIT_NAMES = ("train", "val", "test")
# T-GCN's LOS-LOOP protocol: 80 % train / 20 % test by time, last 10 % of train for validation.
LOS_LOOP_SPLIT = "los-loop"

log = logging.getLogger("himnet.train")


@dataclass(frozen=True, eq=False)
class Scaler:
    """z-score of channel 0; fitted on the training inputs only, so no test data leaks in.

    ``mean``/``std`` are floats (the paper's global scaling) or N-vectors (one per sensor,
    ``model.scaling``); with ``log1p`` they live in log1p space: transform = (log1p(x) - mean) / std,
    inverse = expm1(z·std + mean). ``global_mean``/``global_std``: the scalar figures the
    checkpoint and the manifest record (the scalars themselves under global scaling).
    """

    mean: float | np.ndarray
    std: float | np.ndarray
    log1p: bool = False
    global_mean: float | None = None
    global_std: float | None = None

    @classmethod
    def fit(cls, values: np.ndarray, *, scaling: str = GLOBAL, transform: str = NO_TRANSFORM,
            rule: MissingRule = DEFAULT_RULE) -> Scaler:
        """Global: mean and std of all values (zeros = missing included, as the official code
        does); NaN (a gap under the ``nan`` rule) is left out. Per sensor: each column over its
        observed values only (``rule``), see :func:`fit_per_sensor`."""
        values = np.asarray(values, dtype=np.float64)
        log1p = parse_transform(transform) == LOG1P
        check_transformable(values, rule, log1p)
        if parse_scaling(scaling) == PER_SENSOR:
            return fit_per_sensor(values, rule, log1p)
        if np.isnan(values).all():
            raise ValueError("no readings to fit the scaler on: every training value is missing")
        values = to_model_space(values, log1p)
        std = float(np.nanstd(values))
        return cls(float(np.nanmean(values)), std if std > 0 else 1.0, log1p)

    def __eq__(self, other: object) -> bool:
        """Same scaling: equal figures (vectors element-wise), transform and global figures."""
        return (isinstance(other, Scaler) and self.log1p == other.log1p
                and np.array_equal(self.mean, other.mean) and np.array_equal(self.std, other.std)
                and (self.global_mean, self.global_std) == (other.global_mean, other.global_std))

    def __hash__(self) -> int:
        return hash((self.log1p, np.asarray(self.mean).tobytes(), np.asarray(self.std).tobytes()))

    @property
    def per_sensor(self) -> bool:
        return np.ndim(self.mean) > 0

    @property
    def scaling(self) -> str:
        return PER_SENSOR if self.per_sensor else GLOBAL

    @property
    def transform_name(self) -> str:
        return LOG1P if self.log1p else NO_TRANSFORM

    @property
    def scalar_mean(self) -> float:
        return float(self.mean) if not self.per_sensor else float(self.global_mean)  # type: ignore[arg-type]

    @property
    def scalar_std(self) -> float:
        return float(self.std) if not self.per_sensor else float(self.global_std)  # type: ignore[arg-type]

    def _params(self, values: np.ndarray | Tensor) -> tuple[Any, Any]:
        """mean, std shaped to broadcast against ``values``: N at the last dim, or at the one
        before a trailing 1 (``B × T × N × 1`` model outputs)."""
        if not self.per_sensor:
            return self.mean, self.std
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        if values.shape[-1] != mean.shape[0]:
            mean, std = mean[:, None], std[:, None]  # N × 1
        if isinstance(values, Tensor):
            return (torch.as_tensor(mean, dtype=values.dtype, device=values.device),
                    torch.as_tensor(std, dtype=values.dtype, device=values.device))
        return mean, std

    def transform(self, values: np.ndarray | Tensor) -> np.ndarray | Tensor:
        mean, std = self._params(values)
        return (to_model_space(values, self.log1p) - mean) / std

    def inverse(self, values: np.ndarray | Tensor) -> np.ndarray | Tensor:
        mean, std = self._params(values)
        return to_raw_space(values * std + mean, self.log1p)


def fit_per_sensor(values: np.ndarray, rule: MissingRule, log1p: bool) -> Scaler:
    """Mean and std of each sensor's observed training values (gaps under ``rule`` left out).

    A sensor with no observed value, or a constant one (std 0), cannot be standardised by its
    own figures: it gets the global mean and/or std of all observed values, with a warning.
    """
    if values.ndim != 2:
        raise ValueError(f"per-sensor scaling fits T × N readings, got shape {values.shape}")
    observed = np.asarray(rule.observed(values)) & ~np.isnan(values)  # T × N
    if not observed.any():
        raise ValueError("no readings to fit the scaler on: every training value is missing")
    space = np.where(observed, to_model_space(values, log1p), np.nan)  # T × N
    g_mean, g_std = float(np.nanmean(space)), float(np.nanstd(space))
    g_std = g_std if g_std > 0 else 1.0
    counts = observed.sum(axis=0)  # N
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(space, axis=0) / np.maximum(counts, 1)
        std = np.sqrt(np.nansum((space - mean) ** 2, axis=0) / np.maximum(counts, 1))
    empty, flat = counts == 0, (counts > 0) & ~(std > 0)
    if empty.any():
        log.warning("per-sensor scaling: sensor column(s) %s have no observed training value; they "
                    "get the global mean %.4g and std %.4g", np.flatnonzero(empty).tolist(), g_mean, g_std)
    if flat.any():
        log.warning("per-sensor scaling: sensor column(s) %s are constant in training (std 0); they "
                    "get the global std %.4g", np.flatnonzero(flat).tolist(), g_std)
    mean = np.where(empty, g_mean, mean)
    std = np.where(empty | flat, g_std, std)
    return Scaler(mean, std, log1p, g_mean, g_std)


def model_inputs(raw: Tensor, scaler: Scaler) -> Tensor:
    """T × N raw -> T × N scaled model inputs. A NaN gap (``nan`` rule) becomes 0, the scaler
    mean: the model must get a finite input, and the service fills such gaps with the mean too
    (manifest ``missing_value``). Sentinel gaps (0, x) keep the sentinel, as the paper does."""
    return torch.nan_to_num(scaler.transform(raw).float(), nan=0.0)


def parse_split(spec: str | tuple[float, ...] | list[float]) -> str | tuple[float, float, float]:
    """``"7:1:2"``, ``"0.6,0.2,0.2"``, ``(0.7, 0.1, 0.2)``, ``"los-loop"`` or ``"official"``."""
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in (LOS_LOOP_SPLIT, "tgcn", "official"):
            return LOS_LOOP_SPLIT if key == "tgcn" else key
        parts = key.replace(":", ",").split(",")
        try:
            ratios = tuple(float(p) for p in parts)
        except ValueError as exc:
            raise ValueError(f"bad split {spec!r}: use e.g. 7:1:2, 0.6,0.2,0.2, los-loop or official") from exc
    else:
        ratios = tuple(float(p) for p in spec)
    if len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0 or ratios[2] <= 0:
        raise ValueError(f"bad split {spec!r}: need three ratios train:val:test with train, test > 0")
    total = sum(ratios)
    return (ratios[0] / total, ratios[1] / total, ratios[2] / total)


def _windows_in(lo: int, hi: int, span: int) -> np.ndarray:
    """Start rows of every window of length ``span`` lying wholly in rows [lo, hi)."""
    return np.arange(lo, max(lo, hi - span + 1), dtype=np.int64)


def split_windows(num_steps: int, in_steps: int, out_steps: int,
                  split: str | tuple[float, ...], index: dict[str, np.ndarray] | None = None
                  ) -> dict[str, np.ndarray]:
    """Start row of every window in each split, in time order.

    Ratios split the windows themselves, as the official code does (so 7:1:2 on METR-LA gives
    its exact sets); ``los-loop`` splits the *rows* 80/20 (T-GCN), the last 10 % of the training
    rows becoming validation, and keeps windows inside their segment; ``official`` uses the
    dataset's ``index.npz``.
    """
    spec = parse_split(split)
    span = in_steps + out_steps
    if spec == "official":
        if index is None:
            raise ValueError("split 'official' needs a dataset with index.npz")
        out = {}
        for name in SPLIT_NAMES:
            rows = index[name]
            if len(rows) and (np.any(rows[:, 1] - rows[:, 0] != in_steps) or np.any(rows[:, 2] - rows[:, 1] != out_steps)):
                raise ValueError(f"index.npz {name} windows are not {in_steps} -> {out_steps} steps")
            out[name] = rows[:, 0].astype(np.int64)
    elif spec == LOS_LOOP_SPLIT:
        train_end = int(num_steps * 0.8)
        fit_end = train_end - int(round(train_end * 0.1))
        out = {"train": _windows_in(0, fit_end, span), "val": _windows_in(fit_end, train_end, span),
               "test": _windows_in(train_end, num_steps, span)}
    else:
        starts = _windows_in(0, num_steps, span)
        n = len(starts)
        n_train = int(round(n * spec[0]))
        n_test = int(round(n * spec[2]))
        n_val = n - n_train - n_test
        out = {"train": starts[:n_train], "val": starts[n_train:n_train + n_val], "test": starts[n - n_test:]}
    for name in ("train", "test"):
        if len(out[name]) == 0:
            raise ValueError(f"split {split!r} leaves no {name} windows of {span} steps in {num_steps} rows")
    return out


def training_rows(starts: np.ndarray, length: int) -> np.ndarray:
    """Sorted distinct rows covered by windows ``[s, s + length)`` (for fitting on training data)."""
    mask = np.zeros(int(starts.max()) + length, dtype=bool)
    for offset in range(length):
        mask[starts + offset] = True
    return np.flatnonzero(mask)


@dataclass
class Batch:
    """One batch of windows, all float32 tensors."""

    x: Tensor  # B × T_in × N × 3: scaled value, tod fraction, dow
    y_cov: Tensor  # B × T_out × N × 2: tod fraction, dow of the target steps
    labels: Tensor  # B × T_out × N × 1: scaled targets (teacher forcing)
    target: Tensor  # B × T_out × N × 1: raw targets (losses and metrics)
    start: Tensor  # B, first input row of each window

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in
                       (self.x, self.y_cov, self.labels, self.target, self.start)))


class WindowDataset(Dataset):
    """Windows of one series by start row. ``ds[i]`` is one window, ``ds[[i, j, ...]]`` a batch:
    pair it with a ``BatchSampler`` and ``DataLoader(batch_size=None)`` to gather whole batches
    with one fancy-index instead of collating B small tensors."""

    def __init__(self, data: SensorData, starts: np.ndarray, scaler: Scaler, in_steps: int = 12,
                 out_steps: int = 12, raw: Tensor | None = None, scaled: Tensor | None = None,
                 time: Tensor | None = None) -> None:
        self.starts = np.asarray(starts, dtype=np.int64)
        self.in_steps, self.out_steps = in_steps, out_steps
        if len(self.starts) and self.starts.max() + in_steps + out_steps > data.num_steps:
            raise DatasetError(data.source or data.name, "a window runs past the end of the data")
        # Shared across the three splits when given, so the series is held once.
        self.raw = raw if raw is not None else torch.from_numpy(data.values)  # T × N
        self.scaled = scaled if scaled is not None else model_inputs(self.raw, scaler)  # T × N
        self.time = time if time is not None else torch.from_numpy(
            time_features(data.timestamps, data.steps_per_day))  # T × 2

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, item: int | list[int] | np.ndarray) -> Batch:
        single = np.isscalar(item)
        starts = torch.from_numpy(self.starts[np.atleast_1d(np.asarray(item, dtype=np.int64))])  # B
        rows_in = starts[:, None] + torch.arange(self.in_steps)  # B × T_in
        rows_out = starts[:, None] + self.in_steps + torch.arange(self.out_steps)  # B × T_out
        # x: B × T_in × N × 3, y_cov: B × T_out × N × 2, built as the served graph builds them
        x, y_cov = assemble_inputs(self.scaled[rows_in], self.time[rows_in], self.time[rows_out])
        labels = self.scaled[rows_out].unsqueeze(-1)  # B × T_out × N × 1
        target = self.raw[rows_out].unsqueeze(-1)  # B × T_out × N × 1
        batch = Batch(x, y_cov, labels, target, starts)
        if single:
            return Batch(*(t[0] for t in (batch.x, batch.y_cov, batch.labels, batch.target, batch.start)))
        return batch


@dataclass
class PreparedData:
    """Everything the loop and the evaluation need from one dataset and split."""

    data: SensorData
    scaler: Scaler
    splits: dict[str, WindowDataset]
    split_spec: str | tuple[float, float, float]
    train_rows: np.ndarray  # rows covered by training windows (inputs and targets)


def prepare(data: SensorData, split: str | tuple[float, ...] = (0.7, 0.1, 0.2), in_steps: int = 12,
            out_steps: int = 12, scaler: Scaler | None = None, scaling: str = GLOBAL,
            transform: str = NO_TRANSFORM) -> PreparedData:
    """Split into windows, fit the scaler on the training inputs (unless given; ``scaling`` and
    ``transform`` as in ``model.scaling``), build datasets."""
    spec = parse_split(split)
    starts = split_windows(data.num_steps, in_steps, out_steps, spec, data.index)
    if scaler is None:
        input_rows = training_rows(starts["train"], in_steps)
        scaler = Scaler.fit(data.values[input_rows], scaling=scaling, transform=transform, rule=data.missing)
    raw = torch.from_numpy(data.values)
    scaled = model_inputs(raw, scaler)  # T × N
    time = torch.from_numpy(time_features(data.timestamps, data.steps_per_day))
    sets = {name: WindowDataset(data, s, scaler, in_steps, out_steps, raw, scaled, time)
            for name, s in starts.items()}
    return PreparedData(data, scaler, sets, spec, training_rows(starts["train"], in_steps + out_steps))
