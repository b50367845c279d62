"""Live accuracy: the service scores the forecasts it served once their targets arrive.

Rules
    * Remembered: the first forecast served from the buffer for each window end (per model
      version), with the last-value baseline (each sensor's last observed reading in the
      window; the scaler mean for a sensor with none). Stateless forecasts are not scored.
    * Scored once: target slot ``s`` is scored when a reading for slot ``s + grace`` or later
      has been stored (``HIMNET_ACCURACY_GRACE_SLOTS``, default 2), against the readings of
      ``s`` held then, for every remembered forecast whose horizon points at ``s``. Readings
      for ``s`` that arrive after that are stored and forecast from, but never scored; a
      forecast served after ``s`` was scored is not scored at ``s``. Slots whose due moment
      was missed by more than ``T_out`` slots (a feed gap) have no forecasts left and are skipped.
    * Targets: sensors that reported at ``s`` (NaN = no reading and the bundle's missing value,
      ``model/missing.py``, do not count). Per horizon: count, Σ|e|, Σe², the same for the
      baseline, and how many fell inside each calibrated interval.
    * Windows: ``GET /accuracy`` sums the buckets of the target slots of the last hour and day
      (judged against the reference clock, ``service/refclock.py``).

Scoring runs after the write has been acknowledged, on the event loop (one task at a time);
``flush`` waits for it (``GET /accuracy`` does).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.intervals import IntervalTable
from model.missing import MissingRule
from service.accuracy_store import AccuracyStore
from service.buffer import BufferUnavailable
from service.live_metrics import LiveMetrics
from service.refclock import ReferenceClock

log = logging.getLogger("service")
BASE_FIELDS = 5  # count, Σ|e|, Σe², Σ|e_baseline|, Σe_baseline²; then one count per level


@dataclass(frozen=True)
class ScoringRules:
    out_steps: int
    num_nodes: int
    grace_slots: int
    retention_slots: int
    interval_s: int
    fallback: float  # baseline of a sensor without a reading in the window


def last_observed(window: np.ndarray, rule: MissingRule, fallback: float) -> np.ndarray:
    """window: T_in × N (NaN = none) -> N: each sensor's last observed reading."""
    observed = ~np.isnan(window) & rule.observed(window)
    t_in, n = window.shape
    last = np.where(observed, np.arange(t_in)[:, None], -1).max(axis=0)  # N
    values = window[np.clip(last, 0, None), np.arange(n)]
    return np.where(last >= 0, values, fallback).astype(np.float32)


class LiveAccuracy:
    """Remembers served forecasts and scores them when their targets are due."""

    def __init__(self, store: AccuracyStore, clock: ReferenceClock, metrics: LiveMetrics,
                 rules: ScoringRules, rule: MissingRule, intervals: IntervalTable | None) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.rules = rules
        self.rule = rule
        self.intervals = intervals
        self.levels = [] if intervals is None else [float(a) for a in intervals.levels]
        self.fields = BASE_FIELDS + len(self.levels)
        self._remembered: dict[int, None] = {}  # window ends this replica stored (bounded)
        self._done: int | None = None  # newest target slot this replica has handled
        self._task: asyncio.Task[None] | None = None

    # --- the read path ----------------------------------------------------------------------
    async def remember(self, end: int, window: np.ndarray, forecast: np.ndarray) -> None:
        """Keep the forecast served for window end ``end`` (first one only; cheap when repeated)."""
        if end in self._remembered:
            return
        r = self.rules
        baseline = last_observed(window, self.rule, r.fallback)
        blob = (np.ascontiguousarray(forecast, dtype="<f4").tobytes()
                + np.ascontiguousarray(baseline, dtype="<f4").tobytes())
        keep = (r.out_steps + r.grace_slots + 2) * r.interval_s  # until its last target is due
        ttl = self.clock.wall_deadline((end + 1) * r.interval_s + keep) - _now()
        try:
            await self.store.remember(end, blob, min(max(ttl, r.interval_s), keep))
        except BufferUnavailable as exc:  # counted by the store; the forecast is still served
            log.warning("live accuracy: forecast for slot %s not remembered: %s", end, exc)
            return
        self._remembered[end] = None
        while len(self._remembered) > 4 * (r.out_steps + r.grace_slots + 1):
            del self._remembered[next(iter(self._remembered))]

    # --- the write path ---------------------------------------------------------------------
    def readings_stored(self) -> None:
        """Readings were stored: score the slots that became due, after this request."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._score_due())

    async def flush(self) -> None:
        """Wait until every slot due now is scored."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])  # its errors are logged by the task, not raised here
        if self._due_range():
            await self._score_due()

    def _due_range(self) -> range:
        newest = self.clock.newest_slot
        if newest is None:
            return range(0)
        upto = newest - self.rules.grace_slots
        first = upto - self.rules.out_steps if self._done is None else self._done + 1
        return range(max(first, upto - self.rules.out_steps), upto + 1)

    async def _score_due(self) -> None:
        while due := self._due_range():
            for target in due:
                try:
                    await self.score(target)
                except BufferUnavailable as exc:  # counted by the store; the slot is lost
                    log.warning("live accuracy: slot %s not scored: %s", target, exc)
                except Exception:  # a bug must not stop scoring for good: log it, go on
                    log.exception("live accuracy: scoring slot %s failed", target)
                self._done = target

    async def score(self, target: int) -> bool:
        """Score ``target`` against every remembered forecast; True if this call scored it."""
        r = self.rules
        ends = [target - h for h in range(1, r.out_steps + 1)]
        truth, blobs, scored = await self.store.fetch(target, ends)
        if scored or all(b is None for b in blobs):
            return False
        sums = self._sums(truth, blobs)
        ttl = max(self.clock.wall_deadline((target + 1 + r.retention_slots) * r.interval_s) - _now(),
                  r.interval_s)  # a backfilled old slot still keeps its bucket for a slot
        if not await self.store.save(target, sums.astype("<f8").tobytes(), ttl, ends[-1]):
            return False
        self.metrics.add(sums)
        return True

    def _sums(self, truth: np.ndarray, blobs: list[bytes | None]) -> np.ndarray:
        """T_out × F sums of one target slot (row h-1 scores the forecast made h slots before)."""
        r = self.rules
        sums = np.zeros((r.out_steps, self.fields))
        ok = ~np.isnan(truth) & self.rule.observed(truth)  # N
        if not ok.any():
            return sums
        y = truth[ok].astype(np.float64)
        for h, blob in enumerate(blobs, start=1):
            if blob is None:
                continue
            values = np.frombuffer(blob, dtype="<f4")
            pred = values[(h - 1) * r.num_nodes:h * r.num_nodes][ok].astype(np.float64)
            base = values[r.out_steps * r.num_nodes:][ok].astype(np.float64)
            err, base_err = pred - y, base - y
            sums[h - 1, :BASE_FIELDS] = (ok.sum(), np.abs(err).sum(), (err ** 2).sum(),
                                         np.abs(base_err).sum(), (base_err ** 2).sum())
            if self.intervals is not None:
                half = self.intervals.half_width[:, h - 1, ok]  # L × n
                sums[h - 1, BASE_FIELDS:] = (np.abs(err)[None, :] <= half).sum(axis=1)
        return sums

    async def close(self) -> None:
        """Stop scoring (shutdown): a slot being scored is dropped, not half-written."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    # --- GET /accuracy --------------------------------------------------------------------
    async def window(self, minutes: float) -> dict[str, Any]:
        """Rolling figures per horizon over the target slots of the last ``minutes``."""
        r = self.rules
        whole = min(minutes * 60 // r.interval_s, r.retention_slots)  # huge: inf // x is NaN
        slots = r.retention_slots if whole != whole else max(1, int(whole))
        if self.clock.replay:  # the newest reading's slot is "now"
            now_slot = self.clock.newest_slot
        else:
            now_slot = int(self.clock.now() // r.interval_s)
        targets = [] if now_slot is None else list(range(now_slot - slots + 1, now_slot + 1))
        blobs = await self.store.buckets(targets)
        total = np.zeros((r.out_steps, self.fields))
        scored = 0
        for blob in blobs:
            if blob is not None:
                total += np.frombuffer(blob, dtype="<f8").reshape(r.out_steps, self.fields)
                scored += 1
        return {"minutes": slots * r.interval_s / 60.0, "slots_scored": scored,
                "scored_targets": int(total[:, 0].sum()), "horizons": self._rows(total)}

    def _rows(self, total: np.ndarray) -> list[dict[str, Any]]:
        rows = []
        for h in range(1, self.rules.out_steps + 1):
            n, ae, se, bae, bse = total[h - 1, :BASE_FIELDS]
            row: dict[str, Any] = {"step": h, "minutes": h * self.rules.interval_s / 60.0,
                                   "scored_targets": int(n)}
            if n:
                row.update(mae=ae / n, rmse=math.sqrt(se / n), baseline_mae=bae / n,
                           baseline_rmse=math.sqrt(bse / n),
                           skill=(1.0 - ae / bae) if bae > 0 else None)
                if self.levels:
                    row["coverage"] = {f"{a:g}": float(c / n) for a, c in
                                       zip(self.levels, total[h - 1, BASE_FIELDS:])}
            else:
                row.update(mae=None, rmse=None, baseline_mae=None, baseline_rmse=None, skill=None)
            rows.append(row)
        return rows


def _now() -> float:
    import time

    return time.time()
