"""The missing-value rule: which raw reading means "no reading", shared by training and serving.

The public benchmarks (METR-LA, PEMS-BAY, LOS-LOOP) store a missing reading as 0, so the model
was trained with 0 in the gaps and every loss and metric ignores targets equal to 0. Training
must mask exactly what serving fills in, or forecasts and scores silently shift; hence one rule.

Works on numpy arrays and torch tensors alike (both support ``==`` / ``!=`` with a float and
return a boolean array of the same kind). torch is never imported here: the service reads this
module without it.

Today there is one rule, :data:`ZERO`. A rule is a frozen value so that a data set's own rule
(for example NaN only, or a sentinel) can later be chosen at training and recorded in the
checkpoint and the bundle manifest without changing the callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

Values = TypeVar("Values")  # numpy.ndarray or torch.Tensor


@dataclass(frozen=True)
class MissingRule:
    """A reading equal to ``value`` is missing; ``value`` is also what the model sees in a gap."""

    name: str
    value: float

    def mask(self, values: Values) -> Values:
        """True where a reading is missing (same shape and library as ``values``)."""
        return values == self.value  # type: ignore[return-value]

    def observed(self, values: Values) -> Values:
        """True where a reading is present: the complement of :meth:`mask`."""
        return values != self.value  # type: ignore[return-value]


ZERO = MissingRule("zero", 0.0)  # the benchmarks' convention, and the only rule so far
DEFAULT_RULE = ZERO
MISSING_VALUE = DEFAULT_RULE.value  # the raw reading that marks a gap (manifest ``missing_value``)


def missing_mask(values: Values, rule: MissingRule = DEFAULT_RULE) -> Values:
    """True where ``values`` (numpy array or torch tensor) holds a missing reading."""
    return rule.mask(values)


def observed_mask(values: Values, rule: MissingRule = DEFAULT_RULE) -> Values:
    """True where ``values`` holds a real reading: what losses, metrics and baselines count."""
    return rule.observed(values)
