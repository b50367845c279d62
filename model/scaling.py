"""How raw readings become model inputs: the scaling and the value transform, shared by training,
the exported graph and the service.

The paper standardises every reading by one global mean and standard deviation (``global``, the
default). Two options, chosen at training and recorded in the checkpoint and the bundle:

- ``per_sensor`` scaling: each sensor by its own mean and std (fitted on its observed training
  inputs). Sensors at different levels (a 30 mph arterial beside a 65 mph freeway, a quiet lane
  beside a busy one) then all reach the model centred with unit spread.
- the ``log1p`` transform: ``log(1 + x)`` before standardising, ``exp(x) - 1`` after inverting.
  Counts are heavy-tailed; in log space a rush-hour burst no longer dominates the loss and
  the scale. Readings must be non-negative; the graph clamps a negative one to 0.

Works on numpy arrays and torch tensors alike (a tensor is recognised by its ``exp`` method);
torch is never imported here, so the service reads this module without it. ONNX has no
``expm1``, so the tensor inverse is ``exp(x) - 1``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

from model.missing import MissingRule

Values = TypeVar("Values")  # numpy.ndarray or torch.Tensor

GLOBAL, PER_SENSOR = "global", "per_sensor"
SCALINGS = (GLOBAL, PER_SENSOR)
NO_TRANSFORM, LOG1P = "none", "log1p"
TRANSFORMS = (NO_TRANSFORM, LOG1P)


def parse_scaling(value: str | None) -> str:
    """``global`` | ``per_sensor`` (``per-sensor`` accepted); None = the default ``global``."""
    key = GLOBAL if value is None else str(value).strip().lower().replace("-", "_")
    if key not in SCALINGS:
        raise ValueError(f"scaling {value!r}: use {' or '.join(SCALINGS)}")
    return key


def parse_transform(value: str | None) -> str:
    """``none`` | ``log1p``; None = the default ``none``."""
    key = NO_TRANSFORM if value is None else str(value).strip().lower()
    if key not in TRANSFORMS:
        raise ValueError(f"transform {value!r}: use {' or '.join(TRANSFORMS)}")
    return key


def _is_tensor(values: Any) -> bool:
    return hasattr(values, "exp") and not isinstance(values, np.ndarray)


def to_model_space(values: Values, log1p: bool) -> Values:
    """Raw readings -> the space the scaler standardises in (identity, or log1p of max(x, 0))."""
    if not log1p:
        return values
    if _is_tensor(values):
        return values.clamp_min(0).log1p()  # type: ignore[attr-defined]
    return np.log1p(np.maximum(values, 0))  # type: ignore[return-value]


def to_raw_space(values: Values, log1p: bool) -> Values:
    """The inverse of :func:`to_model_space` (on non-negative readings)."""
    if not log1p:
        return values
    if _is_tensor(values):
        return values.exp() - 1  # type: ignore[attr-defined]
    return np.expm1(values)  # type: ignore[return-value]


def check_transformable(values: np.ndarray, rule: MissingRule, log1p: bool) -> None:
    """Refuse data the log1p transform would distort: negative readings, or a negative sentinel
    (log1p would clamp it onto a real 0, so the model could not tell a gap from a zero)."""
    if not log1p:
        return
    if not rule.nan_only and rule.value < 0:
        raise ValueError(f"transform log1p needs non-negative readings, and the missing-value rule "
                         f"{rule.spec} marks gaps with {rule.value:g}; use --missing nan (or zero)")
    negative = np.asarray(rule.observed(values)) & (values < 0)  # NaN < 0 is False
    if negative.any():
        first = tuple(int(i) for i in np.argwhere(negative)[0])
        raise ValueError(f"transform log1p needs non-negative readings: {int(negative.sum())} are "
                         f"negative (first {float(values[first]):g} at row, sensor {first})")


def gap_readings(rule: MissingRule, means: float | np.ndarray, log1p: bool) -> float | np.ndarray:
    """The raw reading a gap gets so the model sees what it saw in training: the rule's sentinel,
    or under ``nan`` the reading that scales to 0 (the mean, per sensor where ``means`` is a
    vector). A scalar mean gives a float; a vector gives float32 per sensor."""
    if np.ndim(means) == 0:
        return rule.gap_input(float(to_raw_space(np.float64(means), log1p)) if log1p else means)
    level = to_raw_space(np.asarray(means, dtype=np.float64), log1p)  # N
    gap = level if rule.nan_only else np.full(level.shape, rule.value)
    return gap.astype(np.float32)
