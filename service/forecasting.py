"""From an input window to the model's full output: imputation, time features, caching.

Windows come from the buffer (``last_slot`` = as_of) or from the request (stateless). Either
way the model always sees ``T_in`` consecutive slots ending at ``last_slot`` and forecasts the
``T_out`` slots after it; identical windows are computed once (cache + single flight).
The write path tells the forecaster which slots changed (:meth:`Forecaster.readings_changed`);
errors are domain errors (``service/errors.py``), mapped to HTTP in ``service/problems.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.accuracy import LiveAccuracy
from service.buffer import ReadingBuffer
from service.cache import ForecastCache, ModelOutput, StatelessCache
from service.errors import NotFound
from service.inference import InferenceEngine
from service.metrics import Metrics
from service.timeslots import SlotClock


def impute(window: np.ndarray, policy: str, missing_value: float) -> np.ndarray:
    """Fill NaNs for the model.

    ``missing_value``: every gap becomes the manifest's missing value (what the model saw in
    training, where 0 meant "no reading"). ``locf``: the last observation in the window is
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
    filled[np.isnan(filled)] = np.float32(missing_value)
    return filled


@dataclass(frozen=True)
class Forecast:
    """A window, where it came from, and the model output computed from it."""

    last_slot: int
    window: np.ndarray  # T_in × N, NaN = missing
    output: ModelOutput
    digest: bytes
    source: Literal["buffer", "request"]
    cached: bool


class Forecaster:
    """Serves model outputs for buffered and caller-supplied windows."""

    def __init__(
        self,
        *,
        clock: SlotClock,
        buffer: ReadingBuffer,
        cache: ForecastCache,
        stateless_cache: StatelessCache,
        engine: InferenceEngine,
        metrics: Metrics,
        in_steps: int,
        out_steps: int,
        missing_policy: str,
        missing_value: float,
        model_version: str,
    ) -> None:
        self.clock = clock
        self.buffer = buffer
        self.cache = cache
        self.stateless_cache = stateless_cache
        self.engine = engine
        self.metrics = metrics
        self.in_steps = in_steps
        self.out_steps = out_steps
        self.policy = missing_policy
        self.missing_value = missing_value
        self.model_version = model_version
        self._inflight: dict[bytes, asyncio.Future[ModelOutput]] = {}
        self.live: LiveAccuracy | None = None  # set by startup: remembers buffer forecasts

    def digest(self, window: np.ndarray, last_slot: int) -> bytes:
        """Identity of a computation: window content, its slot, policy and model version."""
        h = hashlib.blake2b(digest_size=16)
        h.update(np.ascontiguousarray(window, dtype="<f4").tobytes())
        h.update(f"|{last_slot}|{self.policy}|{self.model_version}".encode())
        return h.digest()

    async def from_buffer(self, last_slot: int | None) -> Forecast:
        """Forecast from the buffered window ending at ``last_slot`` (default: newest)."""
        if last_slot is None:  # newest window and its cache entry in one round trip
            found = await self.buffer.latest_window(self.in_steps, self.cache.prefetch_prefix())
            if found is None:
                raise NotFound("no-readings",
                               "the reading buffer is empty: POST /readings first, or send the "
                               "input window with the request ('window')")
            last_slot, window, prefetched = found
        else:
            prefetch = self.cache.prefetch_key(last_slot)
            window, extra = await self.buffer.read_window_with(
                last_slot, self.in_steps, [prefetch] if prefetch else [])
            prefetched = extra[0] if extra else None
        if np.isnan(window).all():
            raise NotFound("no-readings",
                           f"no readings in the input window ending at {self.clock.iso(last_slot)}")
        digest = self.digest(window, last_slot)
        out = await self.cache.get(last_slot, digest, prefetched)
        if out is not None:
            self.metrics.cache_hits.labels("buffer").inc()
            if self.live is not None:
                await self.live.remember(last_slot, window, out.forecast)
            return Forecast(last_slot, window, out, digest, "buffer", True)
        self.metrics.cache_misses.labels("buffer").inc()
        out = await self._compute_once(window, last_slot, digest)
        ttl = self.buffer.expires_at(last_slot) - time.time()
        if ttl > 0:
            await self.cache.put(last_slot, digest, out, ttl)
        if self.live is not None:
            await self.live.remember(last_slot, window, out.forecast)
        return Forecast(last_slot, window, out, digest, "buffer", False)

    async def from_request(self, window: np.ndarray, last_slot: int) -> Forecast:
        """Forecast from a caller-supplied window (works with an empty or unreachable buffer)."""
        digest = self.digest(window, last_slot)
        out = self.stateless_cache.get(digest)
        if out is not None:
            self.metrics.cache_hits.labels("request").inc()
            return Forecast(last_slot, window, out, digest, "request", True)
        self.metrics.cache_misses.labels("request").inc()
        out = await self._compute_once(window, last_slot, digest)
        self.stateless_cache.put(digest, out)
        return Forecast(last_slot, window, out, digest, "request", False)

    async def readings_changed(self, slots: Iterable[int]) -> None:
        """New readings were stored for ``slots``: forget outputs of windows that cover them."""
        await self.cache.invalidate(slots)

    async def clear_cache(self) -> None:
        """Forget every cached output (buffered and stateless)."""
        self.stateless_cache.clear()
        await self.cache.clear()

    async def _compute_once(self, window: np.ndarray, last_slot: int, digest: bytes) -> ModelOutput:
        """Run the model, sharing one run among concurrent requests for the same window."""
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ModelOutput] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            out = await self._compute(window, last_slot)
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

    async def _compute(self, window: np.ndarray, last_slot: int) -> ModelOutput:
        readings = impute(window, self.policy, self.missing_value)
        input_time = self.clock.features(last_slot - self.in_steps + 1, self.in_steps)
        target_time = self.clock.features(last_slot + 1, self.out_steps)
        forecast, st = await self.engine.predict(readings, input_time, target_time)
        return ModelOutput(forecast, st)

