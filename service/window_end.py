"""Where the default forecast window ends: the rule and the window the buffer picks by it.

Kept apart from ``service/buffer.py`` (which applies it in Redis and in memory) so the rule can
be read and tested on its own; ``service.buffer`` re-exports these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EndRule:
    """Which slot may end the default window: the newest one holding ``min_readings``
    readings among the newest slot with readings and the ``lookback`` slots before it."""

    min_readings: int = 0
    lookback: int = 0

    def choose(self, counts: Sequence[int]) -> tuple[int, bool]:
        """Slots to step back, given reading counts newest first, and whether that slot meets
        the rule; when none does, the best-covered slot (the newest of equals)."""
        best, best_count = 0, -1
        for back, count in enumerate(counts[: self.lookback + 1]):
            if count >= self.min_readings:
                return back, True
            if count > best_count:
                best, best_count = back, count
        return best, False


EVERY_SLOT = EndRule()


@dataclass(frozen=True)
class LatestWindow:
    """The default window: the newest slot with readings, the slot the window ends at, the
    window (``T_in × N``, NaN = none), the prefetched extra value, and whether the end slot
    met the rule (False: no slot did, the window ends at the best-covered one)."""

    newest: int
    last: int
    window: np.ndarray
    extra: bytes | None
    met: bool
