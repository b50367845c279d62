"""From an input window to the model's full output: imputation, time features, caching.

Windows come from the buffer (``last_slot`` = as_of) or from the request (stateless). Either
way the model always sees ``T_in`` consecutive slots ending at ``last_slot`` and forecasts the
``T_out`` slots after it; identical windows are computed once (cache + single flight).
Each call takes the active model once (:class:`~service.models.ModelSlot`) and uses it to the end:
its version is part of every digest and cache key, its engine runs the window, so a request
that started before a model swap finishes on the old model.
The write path tells the forecaster which slots changed (:meth:`Forecaster.readings_changed`);
errors are domain errors (``service/errors.py``), mapped to HTTP in ``service/problems.py``.
"""


from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from model.intervals import IntervalTable
from model.missing import parse_rule
from service.background import BackgroundWrites
from service.buffer import ReadingBuffer
from service.buffer_types import EndRule
from service.cache import ModelOutput, StatelessCache
from service.errors import NotFound
from service.metrics import Metrics
from service.models import ModelSlot, ServedModel
from service.timeslots import SlotClock

if TYPE_CHECKING:
    from service.live_setup import LiveScoring


def impute(window: np.ndarray, policy: str, missing_value: float | np.ndarray) -> np.ndarray:
    """Fill NaNs for the model.

    ``missing_value``: every gap becomes the manifest's missing value (what the model saw in a
    gap in training: the rule's sentinel, 0 by default, or under the ``nan`` rule the scaler
    mean; one per sensor, an N-vector, for a per-sensor-scaled bundle: ``Manifest.gap_readings``).
    ``locf``: the last observation in the window is
    carried forward per sensor; gaps before a sensor's first observation get the missing value.
    """
    filled = np.array(window, dtype=np.float32, copy=True)
    if policy == "locf":
        t_in, n = filled.shape
        observed = ~np.isnan(filled)
        last_seen = np.where(observed, np.arange(t_in)[:, None], -1)
        np.maximum.accumulate(last_seen, axis=0, out=last_seen)
        has = last_seen >= 0
        rows = np.where(has, last_seen, 0)
        filled = np.where(has, filled[rows, np.arange(n)[None, :]], np.float32(missing_value))
        return filled.astype(np.float32)
    if policy != "missing_value":
        raise ValueError(f"unknown missing-data policy {policy!r}")
    if np.ndim(missing_value):
        return np.where(np.isnan(filled), np.asarray(missing_value, np.float32), filled)  # T_in × N
    filled[np.isnan(filled)] = np.float32(missing_value)
    return filled


@dataclass(frozen=True)
class Forecast:
    """A window, where it came from, and the model output computed from it."""

    model_version: str
    last_slot: int
    window: np.ndarray  # T_in × N, NaN = missing
    output: ModelOutput
    digest: bytes
    source: Literal["buffer", "request"]
    cached: bool
    end_reason: str  # why the window ends at last_slot (``window_end_reason`` in the answer)
    newest_slot: int | None  # newest slot with a reading: the buffer's, or the window's
    intervals: IntervalTable | None = None  # the computing model's prediction intervals


def newest_in(window: np.ndarray, last_slot: int) -> int | None:
    """The newest slot of ``window`` (``T_in × N``, ending at ``last_slot``) with a reading."""
    rows = np.flatnonzero(~np.isnan(window).all(axis=1))
    return None if rows.size == 0 else last_slot - (window.shape[0] - 1 - int(rows[-1]))


class Forecaster:
    """Serves model outputs for buffered and caller-supplied windows."""

    def __init__(
        self,
        *,
        clock: SlotClock,
        buffer: ReadingBuffer,
        models: ModelSlot,
        stateless_cache: StatelessCache,
        metrics: Metrics,
        in_steps: int,
        out_steps: int,
        missing_policy: str,
        min_slot_coverage: float = 0.0,
        coverage_lookback: int = 0,
    ) -> None:
        self.clock = clock
        self.buffer = buffer
        self.models = models
        self.stateless_cache = stateless_cache
        self.metrics = metrics
        self.in_steps = in_steps
        self.out_steps = out_steps
        self.policy = missing_policy
        self._inflight: dict[bytes, asyncio.Future[ModelOutput]] = {}
        self._landing: dict[bytes, ModelOutput] = {}  # computed, cache write still in flight
        self.background = BackgroundWrites()  # writes the answer does not wait for
        self.live: LiveScoring | None = None  # set by startup: remembers buffer forecasts
        self.min_slot_coverage = min_slot_coverage
        num_nodes = buffer.num_nodes
        self.end_rule = EndRule(math.ceil(min_slot_coverage * num_nodes - 1e-9), coverage_lookback)

    @staticmethod
    def as_gaps(model: ServedModel, window: np.ndarray) -> np.ndarray:
        """T_in × N with every reading the model's rule calls missing as NaN: under ``zero`` a
        posted 0 is a gap (imputed, and reported missing), under ``nan`` it is a reading."""
        rule = parse_rule(model.manifest.missing_rule)  # the bundle's, as in training
        if rule.nan_only:
            return window
        return np.where(rule.mask(window), np.float32(np.nan), window).astype(np.float32, copy=False)

    def digest(self, window: np.ndarray, last_slot: int, model_version: str) -> bytes:
        """Identity of a computation: window content, its slot, policy and model version."""
        h = hashlib.blake2b(digest_size=16)
        h.update(np.ascontiguousarray(window, dtype="<f4").tobytes())
        h.update(f"|{last_slot}|{self.policy}|{model_version}".encode())
        return h.digest()

    async def from_buffer(self, last_slot: int | None) -> Forecast:
        """Forecast from the buffered window ending at ``last_slot`` (an ``as_of``) or, by
        default, at the newest slot whose coverage reaches ``min_slot_coverage``."""
        model = self.models.active  # this request's model, whatever a reload does meanwhile
        cache = model.cache
        if last_slot is None:  # default window and its cache entry in one round trip
            last_slot, window, prefetched, newest, reason = await self._default_window(model)
        else:
            prefetch = cache.prefetch_key(last_slot)
            window, extra = await self.buffer.read_window_with(
                last_slot, self.in_steps, [prefetch] if prefetch else [])
            prefetched = extra[0] if extra else None
            newest, reason = newest_in(window, last_slot), "as_of"
        window = self.as_gaps(model, window)
        if np.isnan(window).all():
            raise NotFound("no-readings",
                           f"no readings in the input window ending at {self.clock.iso(last_slot)}")
        self.metrics.window_coverage.set(float((~np.isnan(window)).mean()))
        digest = self.digest(window, last_slot, model.version)
        out = self._landing.get(digest)
        if out is None:
            out = await cache.get(last_slot, digest, prefetched)
        if out is not None:
            self.metrics.cache_hits.labels("buffer").inc()
            if self.live is not None:
                await self.live.remember(model, last_slot, window, out.forecast)
            return Forecast(model.version, last_slot, window, out, digest, "buffer", True, reason,
                            newest, model.intervals)
        self.metrics.cache_misses.labels("buffer").inc()
        out = await self._compute_once(model, window, last_slot, digest)
        self._landing[digest] = out  # identical requests until the write lands: no recompute
        self.background.spawn(self._keep(model, last_slot, window, digest, out), "keep-forecast")
        return Forecast(model.version, last_slot, window, out, digest, "buffer", False, reason,
                        newest, model.intervals)

    async def _keep(self, model: ServedModel, last_slot: int, window: np.ndarray, digest: bytes,
                    out: ModelOutput) -> None:
        """After the answer: cache the output for other requests and replicas, and remember the
        forecast for live accuracy. Both stores report their own failures."""
        try:
            ttl = self.buffer.expires_at(last_slot) - time.time()
            if ttl > 0:
                await model.cache.put(last_slot, digest, out, ttl)
            if self.live is not None:
                await self.live.remember(model, last_slot, window, out.forecast)
        finally:
            self._landing.pop(digest, None)

    async def _default_window(self, model: ServedModel
                              ) -> tuple[int, np.ndarray, bytes | None, int, str]:
        """End slot, window, prefetched cache value, newest slot and the reason for the end."""
        found = await self.buffer.latest_window(self.in_steps, model.cache.prefetch_prefix(),
                                                self.end_rule)
        if found is None:
            raise NotFound("no-readings",
                           "the reading buffer is empty: POST /readings first, or send the "
                           "input window with the request ('window')")
        rule, threshold = self.end_rule, f"{self.min_slot_coverage:g}"
        if rule.min_readings == 0:
            reason = "newest slot"
        elif found.met:
            reason = f"newest slot with coverage >= {threshold}"
        else:
            reason = (f"best-covered of the newest {rule.lookback + 1} slot(s) (none reached "
                      f"coverage {threshold})")
        return found.last, found.window, found.extra, found.newest, reason

    async def from_request(self, window: np.ndarray, last_slot: int) -> Forecast:
        """Forecast from a caller-supplied window (works with an empty or unreachable buffer)."""
        model = self.models.active
        window = self.as_gaps(model, window)
        digest = self.digest(window, last_slot, model.version)  # the key carries the version
        newest = newest_in(window, last_slot)
        out = self.stateless_cache.get(digest)
        if out is not None:
            self.metrics.cache_hits.labels("request").inc()
            return Forecast(model.version, last_slot, window, out, digest, "request", True,
                            "window", newest, model.intervals)
        self.metrics.cache_misses.labels("request").inc()
        out = await self._compute_once(model, window, last_slot, digest)
        self.stateless_cache.put(digest, out)
        return Forecast(model.version, last_slot, window, out, digest, "request", False, "window",
                        newest, model.intervals)

    async def readings_changed(self, slots: Iterable[int]) -> None:
        """New readings were stored for ``slots``: forget outputs of windows that cover them."""
        await self.models.active.cache.invalidate(slots)

    async def clear_cache(self) -> None:
        """Forget every cached output (buffered of the active version, and stateless); writes
        still in flight land first, so none re-creates an entry after the clear."""
        await self.background.drain()
        self.stateless_cache.clear()
        await self.models.active.cache.clear()

    async def _compute_once(self, model: ServedModel, window: np.ndarray, last_slot: int,
                            digest: bytes) -> ModelOutput:
        """Run the model, sharing one run among concurrent requests for the same window."""
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ModelOutput] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            out = await self._compute(model, window, last_slot)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            future.set_result(out)
            return out
        finally:
            del self._inflight[digest]

    async def _compute(self, model: ServedModel, window: np.ndarray, last_slot: int) -> ModelOutput:
        readings = impute(window, self.policy, model.manifest.gap_readings())
        input_time = self.clock.features(last_slot - self.in_steps + 1, self.in_steps)
        target_time = self.clock.features(last_slot + 1, self.out_steps)
        forecast, st, spread = await model.engine.predict(readings, input_time, target_time)
        return ModelOutput(forecast, st, spread)
