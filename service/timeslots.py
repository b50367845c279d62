"""Timestamps ↔ slot numbers ↔ model time features, and the rules for what a client may send.

A slot is ``floor(epoch_seconds / interval)``: every replica, the buffer keys and the forecast
cache agree on it without coordination. Time features always come from
``model.time_features`` with the manifest's zone, the same function training used.

:class:`InputRules` is the one place that validates client timestamps (on the interval, not in
the future, within retention, within the supported dates) and values (finite, in range);
every conversion of a client timestamp to a slot goes through it. The supported dates
(1900 … 2199, UTC) keep every later conversion (slot starts, hints, time features in the
model's zone) inside what ``datetime`` can represent: year 1 with a +14:00 offset or
9999-12-31T23:59:59Z would overflow one of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import lru_cache
from typing import Literal
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


# --- what a client may send ----------------------------------------------------------------------
TimestampReason = Literal["misaligned", "in_future", "too_old", "unsupported_date"]

EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)  # first moment no longer supported

_SENTENCES: dict[str, str] = {
    "unsupported_date": "{subject} is outside the supported dates: {hint}",
    "misaligned": "{subject} is not on the model's interval: {hint}",
    "in_future": "{subject} is in the future: {hint}",
    "too_old": "{subject} is {hint}",
}


class TimestampRejected(ValueError):
    """A timestamp breaks a rule. ``reason`` is the metric label, ``hint`` says what is allowed."""

    def __init__(self, reason: TimestampReason, hint: str) -> None:
        super().__init__(hint)
        self.reason: TimestampReason = reason
        self.hint = hint

    def describe(self, subject: str) -> str:
        """One sentence for a problem detail, e.g. ``as_of 2026-… is in the future: …``."""
        return _SENTENCES[self.reason].format(subject=subject, hint=self.hint)


class InputRules:
    """The one place that says which timestamps and values a client may send.

    Timestamps lie exactly on the model's interval (no rounding: a misaligned clock is a client
    bug worth surfacing), are at most ``clock_skew_s`` ahead of the server clock and, where the
    buffer is involved, not older than its retention. Values are finite and within
    ``[value_min, value_max]``. Readings, stateless windows and ``as_of`` all ask this class.
    """

    def __init__(
        self,
        clock: SlotClock,
        *,
        clock_skew_s: float,
        retention_minutes: float,
        oldest_kept: Callable[[float], int],
        value_min: float,
        value_max: float,
    ) -> None:
        self.clock = clock
        self.clock_skew_s = clock_skew_s
        self.retention_minutes = retention_minutes
        self.oldest_kept = oldest_kept  # the buffer's: oldest slot it still keeps at a time
        self.value_min = value_min
        self.value_max = value_max

    def seconds(self, moment: datetime) -> float:
        """Epoch seconds of a client timestamp, refused outside the supported dates."""
        try:
            seconds = self.clock.epoch(moment)
        except (OverflowError, ValueError, OSError):  # beyond datetime's range in some zone
            seconds = math.nan
        if not EARLIEST.timestamp() <= seconds < LATEST.timestamp():
            raise TimestampRejected(
                "unsupported_date", f"timestamps must lie from {EARLIEST.date()} up to "
                f"{LATEST.date()} (UTC)")
        return seconds

    def on_grid(self, moment: datetime) -> int:
        """The slot that starts exactly at ``moment``."""
        seconds = self.seconds(moment)
        slot = int(seconds // self.clock.interval_s)
        if seconds != slot * self.clock.interval_s:
            raise TimestampRejected(
                "misaligned", f"timestamps must be multiples of {self.clock.interval_s} s, "
                f"e.g. {self.clock.iso(slot)} or {self.clock.iso(slot + 1)}")
        return slot

    def not_ahead(self, moment: datetime, now: float) -> None:
        """``moment`` is not later than the server clock plus the tolerated skew."""
        if self.seconds(moment) > now + self.clock_skew_s:
            raise TimestampRejected(
                "in_future", f"more than {self.clock_skew_s:g} s ahead of the server clock")

    def retained(self, slot: int, now: float) -> None:
        """``slot`` is still within the buffer's retention."""
        if slot < self.oldest_kept(now):
            raise TimestampRejected(
                "too_old", f"older than the retention of {self.retention_minutes:g} minutes")

    def slot(self, moment: datetime, now: float) -> int:
        """The buffer slot of ``moment``: on the grid, not ahead, within retention (in that order)."""
        slot = self.on_grid(moment)
        self.not_ahead(moment, now)
        self.retained(slot, now)
        return slot

    def value_faults(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks of ``values`` that are not finite (NaN included), and finite but out of range."""
        finite = np.isfinite(values)
        with np.errstate(invalid="ignore"):
            out_of_range = finite & ((values < self.value_min) | (values > self.value_max))
        return ~finite, out_of_range
