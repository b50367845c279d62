"""Timestamps ↔ slot numbers ↔ model time features.

A slot is ``floor(epoch_seconds / interval)``: every replica, the buffer keys and the forecast
cache agree on it without coordination. Time features always come from
``model.time_features`` with the manifest's zone, the same function training used.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from model.time_features import time_features


class SlotClock:
    """Slot arithmetic and time features for one model's interval and time zone."""

    def __init__(self, interval_minutes: float, steps_per_day: int, tz: str | None) -> None:
        seconds = interval_minutes * 60.0
        if seconds <= 0 or abs(seconds - round(seconds)) > 1e-9:
            raise ValueError(f"interval of {interval_minutes} minutes is not a whole number of seconds")
        self.interval_s = int(round(seconds))
        self.steps_per_day = steps_per_day
        self.tz_name = tz
        try:
            self.zone = ZoneInfo(tz) if tz else timezone.utc
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r} in the manifest") from exc
        self._features = lru_cache(maxsize=8192)(self._slot_features)

    # --- conversions ---------------------------------------------------------------------------
    def epoch(self, moment: datetime) -> float:
        """Seconds since the epoch; a naive timestamp is the model's local wall-clock time."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)
        return moment.timestamp()

    def slot_of(self, moment: datetime) -> tuple[int, bool]:
        """The slot containing ``moment`` and whether ``moment`` is exactly on its boundary."""
        seconds = self.epoch(moment)
        slot = int(seconds // self.interval_s)
        return slot, seconds == slot * self.interval_s

    def start(self, slot: int) -> datetime:
        """Start of ``slot`` as an aware UTC datetime."""
        return datetime.fromtimestamp(slot * self.interval_s, tz=timezone.utc)

    def iso(self, slot: int) -> str:
        return self.start(slot).isoformat().replace("+00:00", "Z")

    def now_slot(self, now: float | None = None) -> int:
        return int((time.time() if now is None else now) // self.interval_s)

    def slots_in(self, minutes: float) -> int:
        """Whole slots in a span of ``minutes`` (at least one)."""
        return max(1, int(minutes * 60 // self.interval_s))

    # --- features ------------------------------------------------------------------------------
    def features(self, first_slot: int, count: int) -> np.ndarray:
        """``count × 2`` float32 time features of consecutive slots from ``first_slot``."""
        return self._features(first_slot, count)

    def _slot_features(self, first_slot: int, count: int) -> np.ndarray:
        seconds = (np.arange(first_slot, first_slot + count, dtype=np.int64) * self.interval_s)
        stamps = seconds.astype("datetime64[s]")
        feats = time_features(stamps, self.steps_per_day, self.tz_name)
        feats.setflags(write=False)
        return feats
