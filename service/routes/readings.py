"""``POST /readings``: validate a batch of snapshots and store it in the buffer, all or nothing.

Rules (each broken rule is reported with the offending timestamps/sensors, nothing is stored):
timestamps lie exactly on the model's interval (no rounding: a misaligned clock is a client
bug worth surfacing), are not later than now + clock skew, not older than the retention, and
appear once per request; sensors are known; values are finite and within the plausible range.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends

from service.buffer import BufferUnavailable, SlotUpdate
from service.problems import Problem
from service.schemas import ReadingsAck, ReadingsIn, problem_responses
from service.security import require_key
from service.state import Services, get_services

router = APIRouter(tags=["readings"])

MAX_LISTED = 50


class _Errors:
    """Collects rule violations of one request, tallied per reason for the metrics."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.tally: Tally[str] = Tally()
        self.unknown: set[str] = set()

    def add(self, reason: str, readings: int, **info: Any) -> None:
        self.tally[reason] += readings
        if len(self.items) < MAX_LISTED:
            self.items.append({"reason": reason, **info})

    def detail(self) -> str:
        parts = [f"{n} reading(s) {reason.replace('_', ' ')}" for reason, n in self.tally.items()]
        if self.unknown:
            listed = ", ".join(sorted(self.unknown)[:MAX_LISTED])
            parts.append(f"unknown sensors: {listed}")
        return "readings refused, nothing stored: " + "; ".join(parts)


def _check_values(ts: str, ids: list[str], values: np.ndarray, services: Services,
                  errors: _Errors) -> None:
    s = services.settings
    bad_finite = ~np.isfinite(values)
    for i in np.flatnonzero(bad_finite)[:MAX_LISTED]:
        errors.add("not_finite", 1, timestamp=ts, sensor=ids[i])
    if bad_finite.sum() > MAX_LISTED:
        errors.tally["not_finite"] += int(bad_finite.sum()) - MAX_LISTED
    with np.errstate(invalid="ignore"):
        bad_range = np.isfinite(values) & ((values < s.value_min) | (values > s.value_max))
    for i in np.flatnonzero(bad_range):
        errors.add("out_of_range", 1, timestamp=ts, sensor=ids[i], value=float(values[i]),
                   allowed=[s.value_min, s.value_max])


@router.post(
    "/readings",
    response_model=ReadingsAck,
    summary="Store sensor readings (one or many timestamps)",
    dependencies=[Depends(require_key)],
    responses=problem_responses(401, 403, 413, 422, 503),
)
async def post_readings(body: ReadingsIn, services: Services = Depends(get_services)) -> ReadingsAck:
    """Validate every snapshot, then store them in one transaction and acknowledge.

    Late readings (for older slots still within retention) and partial snapshots are normal;
    a reading overwrites the same sensor's earlier value for that slot.
    """
    s, clock, buffer, metrics = services.settings, services.clock, services.buffer, services.metrics
    if len(body.readings) > s.max_batch_timestamps:
        raise Problem(422, "too-many-timestamps",
                      f"{len(body.readings)} timestamps in one request; the limit is "
                      f"{s.max_batch_timestamps}")
    now = time.time()
    oldest = buffer.oldest_kept(now)
    errors = _Errors()
    updates: list[SlotUpdate] = []
    seen: set[int] = set()
    position = services.position
    for snap in body.readings:
        ts = snap.timestamp.isoformat()
        n = len(snap.values)
        slot, aligned = clock.slot_of(snap.timestamp)
        if not aligned:
            errors.add("misaligned", n, timestamp=ts,
                       hint=f"timestamps must be multiples of {clock.interval_s} s, e.g. "
                       f"{clock.iso(slot)} or {clock.iso(slot + 1)}")
            continue
        if clock.epoch(snap.timestamp) > now + s.clock_skew_s:
            errors.add("in_future", n, timestamp=ts,
                       hint=f"more than {s.clock_skew_s:g} s ahead of the server clock")
            continue
        if slot < oldest:
            errors.add("too_old", n, timestamp=ts,
                       hint=f"older than the retention of {s.retention_minutes:g} minutes")
            continue
        if slot in seen:
            errors.add("duplicate_timestamp", n, timestamp=ts,
                       hint="each timestamp may appear once per request")
            continue
        seen.add(slot)
        ids = list(snap.values)
        unknown = [k for k in ids if k not in position]
        if unknown:
            errors.unknown.update(unknown)
            errors.tally["unknown_sensor"] += len(unknown)
            continue
        values = np.fromiter(snap.values.values(), dtype=np.float64, count=n)
        _check_values(ts, ids, values, services, errors)
        index = np.fromiter((position[k] for k in ids), dtype=np.int64, count=n)
        updates.append(SlotUpdate(slot, index, values.astype(np.float32)))
    if errors.tally:
        for reason, count in errors.tally.items():
            metrics.readings_rejected.labels(reason).inc(count)
        extra: dict[str, Any] = {"errors": errors.items}
        if errors.unknown:
            extra["unknown_sensors"] = sorted(errors.unknown)
        slug = "unknown-sensors" if set(errors.tally) == {"unknown_sensor"} else "invalid-readings"
        raise Problem(422, slug, errors.detail(), **extra)
    try:
        await buffer.write(updates)
    except BufferUnavailable as exc:
        metrics.redis_errors.labels("write").inc()
        metrics.readings_rejected.labels("store_unavailable").inc(
            sum(len(u.index) for u in updates))
        raise Problem(503, "store-unavailable",
                      "the reading buffer (Redis) is unreachable; nothing was stored, retry later",
                      headers={"Retry-After": str(s.retry_after_s)}) from exc
    await services.forecaster.cache.invalidate(seen)
    accepted = sum(len(u.index) for u in updates)
    metrics.readings_accepted.inc(accepted)
    return ReadingsAck(accepted=accepted, slots=len(seen), latest=clock.iso(max(seen)))
