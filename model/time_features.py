"""Timestamp -> (time-of-day fraction, day of week): one function for training and serving.

Time features use the sensor network's local wall-clock time (day of week 0 = Monday), so a
UTC timestamp from a client is converted to the model's zone first, DST included.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np


def time_features(
    timestamps: np.ndarray, steps_per_day: int, tz: str | None = None
) -> np.ndarray:
    """Encode timestamps as ``T × 2`` float32: ``[slot / steps_per_day, day_of_week]``.

    ``timestamps`` is anything ``numpy.datetime64`` understands. Naive values are taken as local
    wall-clock time already; with ``tz`` they are taken as UTC and converted to that zone.
    The slot is the whole number of ``86400 / steps_per_day``-second intervals since midnight.
    """
    ts = np.asarray(timestamps, dtype="datetime64[s]")
    if tz is not None:
        ts = _utc_to_local(ts, tz)
    seconds = ts.astype(np.int64)
    day_seconds = np.mod(seconds, 86400)
    slot = day_seconds * steps_per_day // 86400
    days = np.floor_divide(seconds, 86400)
    dow = np.mod(days + 3, 7)  # 1970-01-01 was a Thursday (3 with Monday = 0)
    tod = slot.astype(np.float32) / np.float32(steps_per_day)
    return np.stack([tod, dow.astype(np.float32)], axis=-1).astype(np.float32)


def encode_time(moment: datetime, steps_per_day: int, tz: str | None = None) -> tuple[float, float]:
    """One timestamp -> ``(tod, dow)``; an aware datetime is converted to ``tz`` first."""
    if moment.tzinfo is not None:
        if tz is not None:
            moment = moment.astimezone(ZoneInfo(tz))
        moment = moment.replace(tzinfo=None)
    feats = time_features(np.array([np.datetime64(moment, "s")]), steps_per_day)
    return float(feats[0, 0]), float(feats[0, 1])


def _utc_to_local(ts: np.ndarray, tz: str) -> np.ndarray:
    """UTC datetime64[s] -> naive local wall-clock datetime64[s] in zone ``tz``."""
    zone = ZoneInfo(tz)
    out = np.empty_like(ts)
    epoch = datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))
    for i, t in enumerate(ts.ravel()):
        secs = int(t.astype(np.int64))
        local = (epoch + np.timedelta64(secs, "s").item()).astimezone(zone)
        out.ravel()[i] = np.datetime64(local.replace(tzinfo=None), "s")
    return out
