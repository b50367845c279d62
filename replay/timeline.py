"""How dataset time becomes service time: the replayed rows are shifted by whole days (or weeks,
when the model uses the day of week) so that the last one falls at or before the wall-clock slot
in which it is sent, keeping each row's time of day (see the ``replay`` package doc)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from replay.errors import ReplayError


def _zone(name: str | None) -> Any:
    if not name:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ReplayError(f"unknown time zone {name!r}") from exc


def projected_end_slot(now: float, rows: int, interval_s: int, speedup: float) -> int:
    """Epoch seconds of the slot in which the last of ``rows`` rows will be sent."""
    duration = (rows - 1) * interval_s / speedup if math.isfinite(speedup) else 0.0
    return int((now + duration) // interval_s) * interval_s


def choose_start(local_stamps: np.ndarray, rows: int, end_epoch: int, zone_name: str | None,
                 interval_s: int) -> int:
    """First row of a ``rows``-long range whose last row has the same day of week and time of day
    (model zone) as ``end_epoch``; falls back to the same time of day, then to row 0."""
    total = len(local_stamps)
    if rows > total:
        raise ReplayError(f"asked for {rows} slots but the dataset has only {total} rows")
    end_local = datetime.fromtimestamp(end_epoch, _zone(zone_name)).replace(tzinfo=None)
    end_seconds = np.datetime64(end_local.replace(microsecond=0), "s").astype(np.int64)
    seconds = local_stamps.astype("datetime64[s]").astype(np.int64)
    candidates = np.arange(rows - 1, total)
    tod = (seconds[candidates] % 86400) // interval_s
    dow = (seconds[candidates] // 86400 + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    want_tod = (end_seconds % 86400) // interval_s
    want_dow = (end_seconds // 86400 + 3) % 7
    for mask in ((tod == want_tod) & (dow == want_dow), tod == want_tod):
        hits = candidates[mask]
        if len(hits):
            return int(hits[0]) - (rows - 1)
    return 0


def rebase(local_stamps: np.ndarray, start: int, rows: int, end_epoch: int) -> np.ndarray:
    """Epoch seconds for rows ``start … start+rows-1``: the last maps to ``end_epoch``, the
    others keep their spacing from the dataset."""
    span = local_stamps[start:start + rows].astype("datetime64[s]").astype(np.int64)
    return end_epoch - (span[-1] - span)


def keep_clock(local_stamps: np.ndarray, start: int, rows: int, end_epoch: int,
               zone_name: str | None, period_days: int) -> np.ndarray:
    """Epoch seconds for rows ``start … start+rows-1`` shifted by the most whole periods
    (``period_days``: 7 when the model uses the day of week, else 1) that keep the last row at
    or before ``end_epoch``: each row keeps its local time of day (and weekday) in the model's
    zone, so the service computes the time features the model saw in training."""
    zone = _zone(zone_name)
    span = local_stamps[start:start + rows].astype("datetime64[s]")
    period = np.timedelta64(period_days * 86400, "s")
    end_local = np.datetime64(
        datetime.fromtimestamp(end_epoch, zone).replace(tzinfo=None, microsecond=0), "s")
    shift = ((end_local - span[-1]) // period) * period
    while _epoch(span[-1] + shift, zone) > end_epoch:  # a DST change can push it past the end
        shift -= period
    return np.array([_epoch(t + shift, zone) for t in span], dtype=np.int64)


def _epoch(local: np.datetime64, zone: Any) -> int:
    moment = local.astype("datetime64[s]").astype(datetime).replace(tzinfo=zone)
    return int(moment.timestamp())


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")
