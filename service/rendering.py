"""The JSON body of a forecast, memoised per window and request shape.

Rendering 2,484 floats costs more than a cache hit, so identical answers are encoded once: the
key is the window's digest (which carries the model version, so a reload never serves another
model's body), where it came from (``source``, why it ends where it ends, the newest reading)
plus which sensors, horizons and extras were asked for. The age of the newest reading changes
with every request, so it is appended to the memoised body each time. The per-sensor arrays are
encoded straight from numpy (orjson), never as one Python float per value: at 883 sensors with
the ST embedding that took 51 ms on a loaded box, almost all of it allocating the Python floats
(docs/performance.md, "Large networks").
"""

from __future__ import annotations

import time
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
        missing_policy: str,
        decimals: int | None,
        capacity: int = 512,
        value_range: tuple[float, float] = (-np.inf, np.inf),
    ) -> None:
        self.clock = clock
        self.sensor_ids = list(sensor_ids)
        self.position = {s: i for i, s in enumerate(self.sensor_ids)}
        self._keys = [orjson.dumps(s) + b":[" for s in self.sensor_ids]  # '"id":[' per sensor
        self.missing_policy = missing_policy
        self.decimals = decimals
        self._bodies = LRU(capacity)
        self.value_range = value_range  # bounds are clipped to the plausible readings

    @staticmethod
    def check_level(level: float | None, intervals: IntervalTable | None) -> None:
        """Refuse an interval level the bundle (``intervals``: the active model's) lacks."""
        if level is None:
            return
        if intervals is None:
            raise InvalidInput("no-intervals", "this model bundle has no prediction intervals "
                               "(exported before format 2 or with --no-intervals)")
        try:
            intervals.index(level)
        except IntervalError as exc:
            raise InvalidInput("invalid-interval", str(exc)) from exc

    @staticmethod
    def check_spread(asked: bool, has_spread: bool) -> None:
        """Refuse ``include: ["spread"]`` from a model that is not a seed ensemble."""
        if asked and not has_spread:
            raise InvalidInput("no-spread", "the served model is a single model, not a seed ensemble "
                               "(himnet ensemble): it has no spread between members")

    def render(self, fc: Forecast, sensors: list[str] | None, steps: list[int],
               with_st: bool, level: float | None = None, with_spread: bool = False) -> bytes:
        """The body for ``sensors`` (None: all, model order) at ``steps`` (1-based), with the
        interval of ``level`` (checked by :meth:`check_level`) and the ensemble members'
        spread (:meth:`check_spread`) when asked."""
        memo_key = (fc.digest, fc.source, fc.end_reason, fc.newest_slot,
                    None if sensors is None else tuple(sensors), tuple(steps), with_st, level,
                    with_spread)
        encoded = self._bodies.get(memo_key)
        if encoded is None:
            body = self._body(fc, sensors, steps, with_st)
            if with_spread:
                body["spread"] = self._spread(fc, sensors, steps)
            if level is not None:
                body["intervals"] = self._intervals(fc, sensors, steps, level)
            encoded = orjson.dumps(body)  # ~6x faster than json
            self._bodies.put(memo_key, encoded)
        return encoded[:-1] + self._age(fc.newest_slot)  # type: ignore[index]

    def _age(self, newest_slot: int | None) -> bytes:
        """``,"newest_reading_age_s":…}``: seconds since the newest reading's slot started."""
        if newest_slot is None:
            return b',"newest_reading_age_s":null}'
        age = time.time() - newest_slot * self.clock.interval_s
        return b',"newest_reading_age_s":' + orjson.dumps(round(age, 1)) + b"}"

    def clear(self) -> None:
        """Forget every memoised body."""
        self._bodies.clear()

    def _intervals(self, fc: Forecast, sensors: list[str] | None, steps: list[int],
                   level: float) -> dict[str, Any]:
        self.check_level(level, fc.intervals)  # a reload between check and render
        assert fc.intervals is not None
        ids = self.sensor_ids if sensors is None else sensors
        cols = self._columns(sensors)
        lower, upper = fc.intervals.bounds(fc.output.forecast, level, *self.value_range)
        out: dict[str, Any] = {"level": level}
        for name, bound in (("lower", lower), ("upper", upper)):
            out[name] = dict(zip(ids, self._per_sensor(bound, steps, cols).tolist()))
        return out

    def _spread(self, fc: Forecast, sensors: list[str] | None, steps: list[int]) -> orjson.Fragment:
        """``{"<sensor>": [spread per step], ...}`` (raw units, rounded as the forecasts)."""
        spread = fc.output.spread
        self.check_spread(True, spread is not None)  # a reload between check and render
        assert spread is not None
        cols = self._columns(sensors)
        return self._rows(cols, self._per_sensor(spread, steps, cols))

    def _per_sensor(self, matrix: np.ndarray, steps: list[int], cols: np.ndarray) -> np.ndarray:
        """``matrix`` (T_out × N) at ``steps`` (1-based) and model columns ``cols``, one row per
        sensor (len(cols) × len(steps), float64), rounded to the response's decimals."""
        values = matrix[np.ix_(np.asarray(steps, dtype=np.int64) - 1, cols)].T.astype(np.float64)
        return values if self.decimals is None else np.round(values, self.decimals)

    def _columns(self, sensors: list[str] | None) -> np.ndarray:
        """Model positions of ``sensors`` (None: all, in model order)."""
        if sensors is None:
            return np.arange(len(self.sensor_ids))
        return np.array([self.position[x] for x in sensors], dtype=np.int64)

    def _body(self, fc: Forecast, sensors: list[str] | None, steps: list[int],
              with_st: bool) -> dict[str, Any]:
        clock = self.clock
        ids = self.sensor_ids if sensors is None else sensors
        cols = self._columns(sensors)
        values = self._per_sensor(fc.output.forecast, steps, cols)
        body: dict[str, Any] = {
            "model_version": fc.model_version,
            "as_of": clock.iso(fc.last_slot),
            "window_end_reason": fc.end_reason,
            "newest_reading": None if fc.newest_slot is None else clock.iso(fc.newest_slot),
            "source": fc.source,
            "units": "raw",
            "horizons": [{"step": h, "minutes": h * clock.interval_s / 60.0,
                          "timestamp": clock.iso(fc.last_slot + h)} for h in steps],
            "forecasts": self._rows(cols, values),  # NaN would become null
            "quality": self._quality(fc.window, ids, cols),
        }
        if with_st:
            st = fc.output.st_embedding[cols].astype(np.float64)
            body["st_embedding"] = self._rows(cols, st)
        return body

    def _rows(self, cols: np.ndarray, matrix: np.ndarray) -> orjson.Fragment:
        """``{"<sensor>": [row...], ...}`` for ``matrix`` (len(cols) × k, float64), encoded by
        orjson from the array in one call and split per row (no Python float per value)."""
        if not len(cols):
            return orjson.Fragment(b"{}")
        encoded = orjson.dumps(np.ascontiguousarray(matrix), option=orjson.OPT_SERIALIZE_NUMPY)
        rows = encoded[2:-2].split(b"],[")  # '[[a,b],[c,d]]' -> [b'a,b', b'c,d']
        keys = self._keys
        return orjson.Fragment(b"{" + b"],".join([keys[c] + r for c, r in zip(cols.tolist(), rows)])
                               + b"]}")

    def _quality(self, window: np.ndarray, ids: Sequence[str], cols: np.ndarray
                 ) -> dict[str, Any]:
        """Coverage of the window (``T_in × N``, NaN = imputed) and the imputed sensors, of
        those asked for (``ids`` at model positions ``cols``) and in total."""
        gaps = np.isnan(window)  # T_in × N

        def listed(mask: np.ndarray) -> list[str]:
            return [ids[i] for i in np.flatnonzero(mask[cols])]

        anywhere, last, always = gaps.any(axis=0), gaps[-1], gaps.all(axis=0)
        return {
            "observed_fraction": round(float((~gaps).mean()), 6),
            "slot_coverage": np.round((~gaps).mean(axis=1), 6).tolist(),
            "last_slot_coverage": round(float((~gaps[-1]).mean()), 6),
            "missing_policy": self.missing_policy,
            "sensors_missing": listed(always),
            "sensors_missing_total": int(always.sum()),
            "sensors_imputed": listed(anywhere),
            "sensors_imputed_total": int(anywhere.sum()),
            "sensors_imputed_last_slot": listed(last),
            "sensors_imputed_last_slot_total": int(last.sum()),
        }
