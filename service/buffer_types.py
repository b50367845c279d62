"""The buffer's value types and errors: what a write stores, how the default window's end is
chosen, what a read answers (``service/buffer.py`` uses and re-exports them)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

FLOAT = np.dtype("<f4")


StoreOperation = Literal["read", "write", "write_uncertain", "replicate", "cache"]


class BufferUnavailable(RuntimeError):
    """The shared store did not answer; nothing was stored or read.

    ``operation`` says what failed (reading the buffer, writing it, or clearing the forecast
    cache): the client's answer differs, ``service/problems.py`` maps each.
    """

    def __init__(self, message: str, operation: StoreOperation) -> None:
        super().__init__(message)
        self.operation: StoreOperation = operation


class WriteUncertain(BufferUnavailable):
    """A write timed out: Redis may still apply it (the transaction may have been sent).

    A retry is safe: a write sets the same bytes again (readings are idempotent).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "write_uncertain")


def _ignore(operation: str) -> None:
    """Default error callback: count nothing."""


@dataclass(frozen=True)
class SlotUpdate:
    """New readings for one slot: sensor positions (model order) and their values."""

    slot: int
    index: np.ndarray  # int64, unique
    values: np.ndarray  # float32, finite


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


def layout_key(sensor_ids: Sequence[str]) -> str:
    """Short digest of the sensor list: part of every key, so layouts never mix."""
    return hashlib.blake2b("\x1f".join(sensor_ids).encode(), digest_size=6).hexdigest()


def runs(index: np.ndarray, values: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Split sensor positions into maximal runs of adjacent positions: (first, values)."""
    order = np.argsort(index, kind="stable")
    idx, vals = index[order], values[order]
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(idx)]])
    return [(int(idx[s]), vals[s:e]) for s, e in zip(starts, ends)]
