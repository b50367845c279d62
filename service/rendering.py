"""The JSON body of a forecast, memoised per window and request shape.

Rendering 2,484 floats costs more than a cache hit, so identical answers are encoded once: the
key is the window's digest plus which sensors, horizons and extras were asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from model.intervals import IntervalError, IntervalTable
from service.cache import LRU
from service.errors import InvalidInput
from service.forecasting import Forecast
from service.timeslots import SlotClock


class ForecastRenderer:
    """Encodes :class:`~service.forecasting.Forecast` objects as response bodies."""

    def __init__(
        self,
        clock: SlotClock,
        *,
        sensor_ids: Sequence[str],
        model_version: str,
        missing_policy: str,
        decimals: int | None,
        capacity: int = 512,
        intervals: IntervalTable | None = None,
        value_range: tuple[float, float] = (-np.inf, np.inf),
    ) -> None:
        self.clock = clock
        self.sensor_ids = list(sensor_ids)
        self.position = {s: i for i, s in enumerate(self.sensor_ids)}
        self.model_version = model_version
        self.missing_policy = missing_policy
        self.decimals = decimals
        self._bodies = LRU(capacity)
        self.intervals = intervals
        self.value_range = value_range  # bounds are clipped to the plausible readings

    def check_level(self, level: float | None) -> None:
        """Refuse an interval level the bundle has not calibrated."""
        if level is None:
            return
        if self.intervals is None:
            raise InvalidInput("no-intervals", "this model bundle has no prediction intervals "
                               "(exported before format 2 or with --no-intervals)")
        try:
            self.intervals.index(level)
        except IntervalError as exc:
            raise InvalidInput("invalid-interval", str(exc)) from exc

    def render(self, fc: Forecast, sensors: list[str] | None, steps: list[int],
               with_st: bool, level: float | None = None) -> bytes:
        """The body for ``sensors`` (None: all, model order) at ``steps`` (1-based), with the
        interval of ``level`` when asked (checked by :meth:`check_level`)."""
        memo_key = (fc.digest, None if sensors is None else tuple(sensors), tuple(steps), with_st,
                    level)
        cached = self._bodies.get(memo_key)
        if cached is not None:
            return cached  # type: ignore[return-value]
        body = self._body(fc, sensors, steps, with_st)
        if level is not None:
            body["intervals"] = self._intervals(fc, sensors, steps, level)
        encoded = orjson.dumps(body)  # ~6x faster than json
        self._bodies.put(memo_key, encoded)
        return encoded

    def clear(self) -> None:
        """Forget every memoised body."""
        self._bodies.clear()

    def _intervals(self, fc: Forecast, sensors: list[str] | None, steps: list[int],
                   level: float) -> dict[str, Any]:
        assert self.intervals is not None
        ids = self.sensor_ids if sensors is None else sensors
        cols = np.array([self.position[x] for x in ids], dtype=np.int64)
        rows = np.asarray(steps, dtype=np.int64) - 1
        lower, upper = self.intervals.bounds(fc.output.forecast, level, *self.value_range)
        out: dict[str, Any] = {"level": level}
        for name, bound in (("lower", lower), ("upper", upper)):
            values = bound[np.ix_(rows, cols)].T.astype(np.float64)
            if self.decimals is not None:
                values = np.round(values, self.decimals)
            out[name] = dict(zip(ids, values.tolist()))
        return out

    def _body(self, fc: Forecast, sensors: list[str] | None, steps: list[int],
              with_st: bool) -> dict[str, Any]:
        clock = self.clock
        ids = self.sensor_ids if sensors is None else sensors
        cols = np.arange(len(self.sensor_ids)) if sensors is None else np.array(
            [self.position[x] for x in sensors], dtype=np.int64)
        rows = np.asarray(steps, dtype=np.int64) - 1
        values = fc.output.forecast[np.ix_(rows, cols)].T.astype(np.float64)
        if self.decimals is not None:
            values = np.round(values, self.decimals)
        missing = np.isnan(fc.window).all(axis=0)
        body: dict[str, Any] = {
            "model_version": self.model_version,
            "as_of": clock.iso(fc.last_slot),
            "source": fc.source,
            "units": "raw",
            "horizons": [{"step": h, "minutes": h * clock.interval_s / 60.0,
                          "timestamp": clock.iso(fc.last_slot + h)} for h in steps],
            "forecasts": dict(zip(ids, values.tolist())),  # NaN would become null
            "quality": {
                "observed_fraction": round(float((~np.isnan(fc.window)).mean()), 6),
                "missing_policy": self.missing_policy,
                "sensors_missing": [ids[i] for i in np.flatnonzero(missing[cols])],
                "sensors_missing_total": int(missing.sum()),
            },
        }
        if with_st:
            st = fc.output.st_embedding[cols].astype(np.float64)
            body["st_embedding"] = dict(zip(ids, st.tolist()))
        return body
