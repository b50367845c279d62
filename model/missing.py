"""The missing-value rule: which raw reading means "no reading", shared by training and serving.

The public benchmarks (METR-LA, PEMS-BAY, LOS-LOOP) store a missing reading as 0, so the model
was trained with 0 in the gaps and every loss and metric ignores targets equal to 0 (rule
``zero``, the default). In count data (vehicles per lane at night, passengers per hour) 0 is the
commonest real value, so a data set chooses its rule at training and the checkpoint and the
bundle manifest record it (absent = ``zero``):

- ``zero``: a reading equal to 0 is missing (the paper's convention);
- ``nan``: only NaN (an empty cell, a JSON ``null``) is missing; 0 is a reading;
- ``value:<x>``: a reading equal to the sentinel ``x`` is missing (e.g. ``value:-1``).

Under a sentinel rule (``zero``, ``value:x``) the data keeps the sentinel in its gaps and the
model sees it there; NaN is not a gap under those rules (readers store NaN as the sentinel before
anything masks). Under ``nan`` there is no finite reading to show the model, so a gap gets the
scaler mean (0 after scaling) in training and in serving alike: :meth:`MissingRule.gap_input`.

Works on numpy arrays and torch tensors alike (``==`` / ``!=`` with a float return a boolean
array of the same kind, and ``x != x`` is NaN's mask in both). torch is never imported here: the
service reads this module without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

Values = TypeVar("Values")  # numpy.ndarray or torch.Tensor

RULE_SPELLINGS = "zero, nan or value:<number> (e.g. value:-1)"


@dataclass(frozen=True, eq=False)
class MissingRule:
    """A reading equal to ``value`` is missing (NaN: only NaN is); ``value`` is what the data
    stores in a gap. Two rules are equal when they mask the same readings."""

    name: str
    value: float

    @property
    def nan_only(self) -> bool:
        return math.isnan(self.value)

    @property
    def spec(self) -> str:
        """The spelling :func:`parse_rule` reads back: ``zero``, ``nan`` or ``value:<x>``."""
        if self.nan_only:
            return "nan"
        return "zero" if self.value == 0.0 else f"value:{self.value!r}"

    def mask(self, values: Values) -> Values:
        """True where a reading is missing (same shape and library as ``values``)."""
        if self.nan_only:
            return values != values  # type: ignore[return-value]  # NaN is the one value unequal to itself
        return values == self.value  # type: ignore[return-value]

    def observed(self, values: Values) -> Values:
        """True where a reading is present: the complement of :meth:`mask`."""
        if self.nan_only:
            return values == values  # type: ignore[return-value]
        return values != self.value  # type: ignore[return-value]

    def gap_input(self, scaler_mean: float) -> float:
        """The raw reading the model sees in a gap: the sentinel, or under ``nan`` the scaler mean."""
        return float(scaler_mean) if self.nan_only else float(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MissingRule) and self.spec == other.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def __str__(self) -> str:
        return self.spec


ZERO = MissingRule("zero", 0.0)  # the benchmarks' convention: the official presets' rule
NAN = MissingRule("nan", math.nan)  # only empty cells / NaN / null are missing; 0 is a reading
DEFAULT_RULE = ZERO
MISSING_VALUE = DEFAULT_RULE.value  # the raw reading that marks a gap under the default rule


def parse_rule(spec: str | MissingRule | None) -> MissingRule:
    """``zero`` | ``nan`` | ``value:<x>`` (a rule passes through; ``None`` = the default).

    Raises ValueError naming the accepted spellings for anything else.
    """
    if spec is None:
        return DEFAULT_RULE
    if isinstance(spec, MissingRule):
        return spec
    text = str(spec).strip().lower()
    if text in ("zero", "0"):
        return ZERO
    if text in ("nan", "empty", "null"):
        return NAN
    head, sep, number = text.partition(":")
    if head == "value" and sep:
        try:
            value = float(number)
        except ValueError:
            value = math.inf
        if math.isnan(value):
            return NAN
        if math.isfinite(value):
            return ZERO if value == 0.0 else MissingRule("value", value)
    raise ValueError(f"missing-value rule {spec!r}: use {RULE_SPELLINGS}")


def missing_mask(values: Values, rule: MissingRule = DEFAULT_RULE) -> Values:
    """True where ``values`` (numpy array or torch tensor) holds a missing reading."""
    return rule.mask(values)


def observed_mask(values: Values, rule: MissingRule = DEFAULT_RULE) -> Values:
    """True where ``values`` holds a real reading: what losses, metrics and baselines count."""
    return rule.observed(values)
