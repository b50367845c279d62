"""The write path: validate a batch of snapshots, store it in the buffer all or nothing, and
tell the forecaster which slots changed.

Rules (every broken rule of a request is reported at once, nothing is stored): the timestamp
rules of :class:`~service.timeslots.InputRules` (supported dates, on the interval, not in the
future, within retention), each timestamp once per request, known sensors, and finite values
within the plausible range; ``null`` is no reading (nothing stored for that sensor). A refusal
lists the first :data:`~service.errors.MAX_LISTED` violations and counts all of them per
reason. Refusals are :class:`~service.errors.InvalidInput`; an unreachable store is
:class:`~service.buffer.BufferUnavailable`, a write Redis did not confirm in time
:class:`~service.buffer.WriteUncertain` (all mapped in ``service/problems.py``).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.buffer import BufferUnavailable, ReadingBuffer, SlotUpdate, WriteUncertain
from service.errors import MAX_LISTED, InvalidInput
from service.forecasting import Forecaster
from service.metrics import Metrics
from service.schemas import Snapshot
from service.timeslots import InputRules, TimestampRejected


@dataclass(frozen=True)
class Stored:
    """What one accepted batch wrote."""

    accepted: int  # readings
    slots: int  # distinct slots
    latest_slot: int | None  # None: every value was null, nothing written


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
            listed = ", ".join(sorted(self.unknown)[:10])
            more = f" and {len(self.unknown) - 10} more" if len(self.unknown) > 10 else ""
            parts.append(f"unknown sensors: {listed}{more}")
        return "readings refused, nothing stored: " + "; ".join(parts)

    def refusal(self) -> InvalidInput:
        extra: dict[str, Any] = {"errors": self.items, "counts": dict(self.tally),
                                 "errors_total": sum(self.tally.values())}
        if self.unknown:
            extra["unknown_sensors"] = sorted(self.unknown)[:MAX_LISTED]
            extra["unknown_sensors_total"] = len(self.unknown)
        slug = "unknown-sensors" if set(self.tally) == {"unknown_sensor"} else "invalid-readings"
        return InvalidInput(slug, self.detail(), **extra)


class Ingest:
    """Accepts readings for the buffer; one per app."""

    def __init__(
        self,
        *,
        rules: InputRules,
        buffer: ReadingBuffer,
        forecaster: Forecaster,
        metrics: Metrics,
        sensor_ids: Sequence[str],
        max_batch_timestamps: int,
    ) -> None:
        self.rules = rules
        self.buffer = buffer
        self.forecaster = forecaster
        self.metrics = metrics
        self.position = {s: i for i, s in enumerate(sensor_ids)}
        self.max_batch_timestamps = max_batch_timestamps

    async def store(self, snapshots: Sequence[Snapshot]) -> Stored:
        """Validate every snapshot, then store them in one transaction.

        Late readings (for older slots still within retention) and partial snapshots are
        normal; a reading overwrites the same sensor's earlier value for that slot.
        """
        if len(snapshots) > self.max_batch_timestamps:
            raise InvalidInput("too-many-timestamps",
                               f"{len(snapshots)} timestamps in one request; the limit is "
                               f"{self.max_batch_timestamps}")
        updates = [u for u in self._validate(snapshots, time.time()) if len(u.index)]
        if not updates:  # only nulls: nothing to store
            return Stored(accepted=0, slots=0, latest_slot=None)
        await self._write(updates)
        slots = {u.slot for u in updates}
        await self.forecaster.readings_changed(slots)
        accepted = sum(len(u.index) for u in updates)
        self.metrics.readings_accepted.inc(accepted)
        return Stored(accepted=accepted, slots=len(slots), latest_slot=max(slots))

    def _validate(self, snapshots: Sequence[Snapshot], now: float) -> list[SlotUpdate]:
        """One update per snapshot, or :class:`InvalidInput` listing every broken rule."""
        errors = _Errors()
        seen: set[int] = set()
        updates = [self._update(snap, now, seen, errors) for snap in snapshots]
        if errors.tally:
            for reason, count in errors.tally.items():
                self.metrics.readings_rejected.labels(reason).inc(count)
            raise errors.refusal()
        return [u for u in updates if u is not None]

    def _update(self, snap: Snapshot, now: float, seen: set[int],
                errors: _Errors) -> SlotUpdate | None:
        """The update of one snapshot; None (and the reasons in ``errors``) when refused."""
        ts = snap.timestamp.isoformat()
        n = len(snap.values)
        try:
            slot = self.rules.slot(snap.timestamp, now)
        except TimestampRejected as exc:
            errors.add(exc.reason, n, timestamp=ts, hint=exc.hint)
            return None
        if slot in seen:
            errors.add("duplicate_timestamp", n, timestamp=ts,
                       hint="each timestamp may appear once per request")
            return None
        seen.add(slot)
        unknown = [k for k in snap.values if k not in self.position]
        for sensor in unknown:
            errors.add("unknown_sensor", 1, timestamp=ts, sensor=sensor)
        errors.unknown.update(unknown)
        ids = [k for k, v in snap.values.items() if v is not None and k in self.position]
        values = np.fromiter((snap.values[k] for k in ids), dtype=np.float64, count=len(ids))
        faults = self._check_values(ts, ids, values, errors)  # checked even beside unknown ids
        if unknown or faults:
            return None
        index = np.fromiter((self.position[k] for k in ids), dtype=np.int64, count=len(ids))
        return SlotUpdate(slot, index, values.astype(np.float32))

    def _check_values(self, ts: str, ids: list[str], values: np.ndarray,
                      errors: _Errors) -> bool:
        """Add the value faults of one snapshot to ``errors``; whether there were any."""
        not_finite, out_of_range = self.rules.value_faults(values)
        for i in np.flatnonzero(not_finite):
            errors.add("not_finite", 1, timestamp=ts, sensor=ids[i])
        allowed = [self.rules.value_min, self.rules.value_max]
        for i in np.flatnonzero(out_of_range):
            errors.add("out_of_range", 1, timestamp=ts, sensor=ids[i], value=float(values[i]),
                       allowed=allowed)
        return bool(not_finite.any() or out_of_range.any())

    async def _write(self, updates: list[SlotUpdate]) -> None:
        """All updates in one transaction; a refused write counts its readings as rejected, an
        unconfirmed one (Redis may apply it later) does not."""
        try:
            await self.buffer.write(updates)
        except WriteUncertain:
            raise
        except BufferUnavailable:
            self.metrics.readings_rejected.labels("store_unavailable").inc(
                sum(len(u.index) for u in updates))
            raise
