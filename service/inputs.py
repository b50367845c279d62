"""What a forecast request asks for, checked against the model: sensors, horizons, and the input
window (an ``as_of`` slot of the buffer, or a window sent with the request, stateless mode).

Timestamps and values are checked by :class:`~service.timeslots.InputRules`; refusals are
:class:`~service.errors.InvalidInput` (422 in ``service/problems.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from datetime import datetime

import numpy as np

from service.errors import MAX_LISTED, InvalidInput
from service.schemas import InputWindow
from service.timeslots import InputRules, TimestampRejected


class ForecastInputs:
    """Checks the parts of a forecast request against one model's sensors and steps."""

    def __init__(self, rules: InputRules, sensor_ids: Sequence[str], in_steps: int,
                 out_steps: int) -> None:
        self.rules = rules
        self.position = {s: i for i, s in enumerate(sensor_ids)}
        self.in_steps = in_steps
        self.out_steps = out_steps
        self.num_nodes = len(sensor_ids)

    def check_sensors(self, names: Iterable[str]) -> None:
        """Refuse sensor ids the model does not know."""
        unknown = sorted({n for n in names if n not in self.position})
        if unknown:
            raise InvalidInput("unknown-sensors",
                               f"{len(unknown)} unknown sensor(s): {', '.join(unknown[:10])}"
                               f"{' …' if len(unknown) > 10 else ''}; GET /embeddings lists the "
                               "sensors", unknown_sensors=unknown[:MAX_LISTED],
                               unknown_sensors_total=len(unknown))

    def steps(self, horizons: list[int] | None, minutes: list[float] | None) -> list[int]:
        """Requested horizons as 1-based steps, in request order without repeats (None: all)."""
        out_steps = self.out_steps
        interval_min = self.rules.clock.interval_s / 60.0
        if minutes is not None:
            steps = []
            for m in minutes:
                if not math.isfinite(m):  # Python's JSON reads NaN, Infinity and 1e309
                    raise InvalidInput("invalid-horizon", f"horizon of {m} minutes: horizons "
                                       "must be finite numbers")
                step = m / interval_min
                if abs(step - round(step)) > 1e-9 or not 1 <= round(step) <= out_steps:
                    raise InvalidInput(
                        "invalid-horizon", f"horizon of {m:g} minutes is not one of the model's "
                        f"horizons ({interval_min:g} … {out_steps * interval_min:g} minutes in "
                        f"steps of {interval_min:g})")
                steps.append(int(round(step)))
        elif horizons is not None:
            bad = [h for h in horizons if not 1 <= h <= out_steps]
            if bad:
                raise InvalidInput("invalid-horizon",
                                   f"horizons {bad} out of range: steps go from 1 to {out_steps}")
            steps = list(horizons)
        else:
            return list(range(1, out_steps + 1))
        return list(dict.fromkeys(steps))

    def as_of_slot(self, as_of: datetime) -> int:
        """The last slot of the buffered window named by ``as_of``."""
        try:
            return self.rules.slot(as_of, time.time())
        except TimestampRejected as exc:
            detail = exc.describe(f"as_of {as_of.isoformat()}")
            if exc.reason == "too_old":
                detail += "; send the window with the request instead"
            raise InvalidInput("invalid-as-of", detail) from exc

    def window(self, win: InputWindow) -> tuple[np.ndarray, int]:
        """A caller-supplied window as ``T_in × N`` float32 (NaN = missing) and its last slot.

        Timestamps first, then values; a stateless window has no retention limit.
        """
        last = self._last_slot(win.timestamps)
        grid, given = self._values(win) if win.values is not None else self._series(win)
        not_finite, out_of_range = self.rules.value_faults(grid[given])  # null marks missing
        if not_finite.any():
            raise _invalid(f"{int(not_finite.sum())} window value(s) are NaN or infinite: "
                           "values must be finite numbers, null marks a missing reading")
        if out_of_range.any():
            raise _invalid(f"{int(out_of_range.sum())} window value(s) outside the plausible "
                           f"range [{self.rules.value_min:g}, {self.rules.value_max:g}]")
        if not given.any():
            raise _invalid("the window holds no readings at all")
        grid[~given] = np.nan
        return grid.astype(np.float32), last

    def _last_slot(self, timestamps: list[datetime]) -> int:
        """``in_steps`` consecutive slots on the grid, the last not in the future."""
        rules, t_in = self.rules, self.in_steps
        if len(timestamps) != t_in:
            raise _invalid(f"window has {len(timestamps)} timestamps; the model needs exactly "
                           f"{t_in} consecutive slots")
        slots = []
        for ts in timestamps:
            try:
                slots.append(rules.on_grid(ts))
            except TimestampRejected as exc:
                raise _invalid(exc.describe(f"window timestamp {ts.isoformat()}")) from exc
        if any(b - a != 1 for a, b in zip(slots, slots[1:])):
            raise _invalid("window timestamps must be consecutive slots in increasing order, "
                           f"{rules.clock.interval_s} s apart")
        try:
            rules.not_ahead(timestamps[-1], time.time())
        except TimestampRejected as exc:
            raise _invalid(exc.describe(f"window end {timestamps[-1].isoformat()}")) from exc
        return slots[-1]

    def _values(self, win: InputWindow) -> tuple[np.ndarray, np.ndarray]:
        """``T_in × N`` values (float64) and where they were given (not null)."""
        assert win.values is not None
        t_in, n = self.in_steps, self.num_nodes
        if len(win.values) != t_in or any(len(row) != n for row in win.values):
            widths = sorted({len(row) for row in win.values})
            raise _invalid(f"'values' must be {t_in} rows × {n} sensors (model order), got "
                           f"{len(win.values)} rows of width {widths}")
        given = np.array([[v is not None for v in row] for row in win.values], dtype=bool)
        grid = np.array([[0.0 if v is None else v for v in row] for row in win.values],
                        dtype=np.float64)
        return grid, given

    def _series(self, win: InputWindow) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`_values`, from ``series``; absent sensors are missing throughout."""
        assert win.series is not None
        self.check_sensors(win.series)
        grid = np.zeros((self.in_steps, self.num_nodes))
        given = np.zeros((self.in_steps, self.num_nodes), dtype=bool)
        for sensor, series in win.series.items():
            if len(series) != self.in_steps:
                raise _invalid(f"series of sensor {sensor} has {len(series)} values, needs "
                               f"{self.in_steps}")
            col = self.position[sensor]
            given[:, col] = [v is not None for v in series]
            grid[:, col] = [0.0 if v is None else v for v in series]
        return grid, given


def _invalid(detail: str) -> InvalidInput:
    return InvalidInput("invalid-window", detail)
