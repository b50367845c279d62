"""A seeded synthetic COUNT data set: vehicles per interval on a road-like graph.

Zero is a real reading here (the commonest one: at night and on low-demand ramps), which is what
the ``nan`` missing-value rule is for. The series has what count data on roads has:

- a daily cycle (weekday morning and evening peaks, a midday plateau, near-empty nights) and a
  weekly one (quieter weekends with one broad midday peak);
- a road-like graph: sensors along corridors (the speed generator's layout), flow travelling
  downstream, so a sensor sees its corridor's demand some minutes after the sensors upstream;
- a time-varying demand level per corridor (a persistent log-AR(1) process) and occasional
  surges (an event releasing traffic) that propagate along the corridor with that delay;
- heavy-tailed counts: negative binomial (Poisson-gamma) around the time-varying rate;
- missing readings (scattered drops and whole-sensor outages) stored as the rule's gap value:
  NaN under ``missing=nan``, 0 under the default ``zero`` rule (where they look like real zeros).

Same arguments, same data (one ``numpy`` generator seeded once, draws in a fixed order).
"""

from __future__ import annotations

import numpy as np

from model.missing import MissingRule, parse_rule
from training.datasets.base import SensorData, regular_timestamps
from training.datasets.synthetic import _bump, _road_network


def _daily_profile(hours: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    """Relative demand in [~0.01, ~1.1] at each (lagged) hour: T × N for T × N hours."""
    weekday = 0.01 + 0.95 * _bump(hours, 8.0, 1.1) + 1.0 * _bump(hours, 17.5, 1.4) + 0.45 * _bump(hours, 12.5, 2.5)
    weekend_p = 0.01 + 0.7 * _bump(hours, 14.0, 3.0) + 0.15 * _bump(hours, 20.0, 1.5)
    return np.where(weekend, weekend_p, weekday)


def _corridor_demand(rng: np.random.Generator, steps: int, corridors: int, phi: float = 0.995,
                     scale: float = 0.35) -> np.ndarray:
    """T × C log demand level: AR(1) with stationary std ``scale``, started at its stationary law."""
    eps = rng.normal(0.0, scale * np.sqrt(1 - phi ** 2), (steps, corridors))
    level = np.empty_like(eps)
    level[0] = rng.normal(0.0, scale, corridors)
    for t in range(1, steps):
        level[t] = phi * level[t - 1] + eps[t]
    return level


def _surges(rng: np.random.Generator, steps: int, corridors: int, count: int, steps_per_hour: int) -> np.ndarray:
    """T × C multiplicative surges (1 = none): ``count`` events of 30-90 minutes, +60-200 %."""
    out = np.ones((steps, corridors))
    for _ in range(count):
        c, t0 = int(rng.integers(corridors)), int(rng.integers(steps))
        length = int(rng.integers(steps_per_hour // 2, 3 * steps_per_hour // 2 + 1))
        ramp = np.sin(np.linspace(0, np.pi, length)) * rng.uniform(0.6, 2.0)
        out[t0:t0 + length, c] += ramp[: max(0, min(length, steps - t0))]
    return out


def _delayed(series: np.ndarray, corridor: np.ndarray, delay: np.ndarray) -> np.ndarray:
    """T × N: each sensor's corridor series (T × C) seen ``delay`` steps later (edge held)."""
    t = np.arange(series.shape[0])[:, None] - delay[None, :]  # T × N
    return series[np.clip(t, 0, series.shape[0] - 1), corridor[None, :]]


def _drop(counts: np.ndarray, rng: np.random.Generator, rule: MissingRule, rate: float, outages: int) -> None:
    """Missing readings in place: scattered drops plus whole-sensor outages of 1-6 hours."""
    steps, n = counts.shape
    counts[rng.random(counts.shape) < rate] = rule.value
    for _ in range(outages):
        s, a = int(rng.integers(n)), int(rng.integers(steps))
        counts[a:a + int(rng.integers(12, 73)), s] = rule.value


def generate_counts(num_sensors: int = 32, days: int = 21, interval_minutes: float = 5, seed: int = 0,
                    start: str = "2024-01-01T00:00", num_corridors: int = 4, missing_rate: float = 0.005,
                    outages: int = 3, dispersion: float = 4.0, timezone: str | None = "America/Los_Angeles",
                    missing: MissingRule | str | None = None) -> SensorData:
    """Vehicle counts per ``interval_minutes`` of ``num_sensors`` sensors over ``days`` days.

    ``dispersion`` is the negative-binomial shape k (variance = rate + rate² / k; smaller is
    heavier-tailed). The same arguments give the same data.
    """
    num_sensors, days, seed, outages = int(num_sensors), int(days), int(seed), int(outages)
    interval_minutes, missing_rate, dispersion = float(interval_minutes), float(missing_rate), float(dispersion)
    corridors, rule = int(num_corridors), parse_rule(missing)
    rng = np.random.default_rng(seed)
    steps_per_hour = max(1, int(round(60 / interval_minutes)))
    steps = days * int(round(1440 / interval_minutes))
    stamps = regular_timestamps(start, steps, interval_minutes)
    seconds = stamps.astype(np.int64)
    weekend = (((seconds // 86400 + 3) % 7) >= 5)[:, None]  # T × 1, 0 = Monday

    corridor, position, coords, adj = _road_network(num_sensors, corridors, rng)
    # Flow runs towards the corridor's downstream end (position 1): up to 40 minutes of travel.
    delay = np.rint(position * 40 / interval_minutes).astype(np.int64)  # N steps
    low = rng.random(num_sensors) < 0.25  # low-demand sensors (ramps, side roads): mostly zeros
    peak_rate = np.exp(np.where(low, rng.uniform(np.log(0.3), np.log(2.0), num_sensors),
                                rng.uniform(np.log(5.0), np.log(60.0), num_sensors)))  # vehicles per interval
    hours = ((seconds % 86400) / 3600.0)[:, None] - delay[None, :] * interval_minutes / 60.0  # T × N
    level = _delayed(np.exp(_corridor_demand(rng, steps, corridors)) * _surges(
        rng, steps, corridors, days, steps_per_hour), corridor, delay)  # T × N
    day_factor = rng.uniform(0.85, 1.15, (days, corridors))[(seconds - seconds[0]) // 86400][:, corridor]
    rate = peak_rate * _daily_profile(hours % 24.0, weekend) * level * day_factor  # T × N
    counts = rng.poisson(rng.gamma(dispersion, rate / dispersion)).astype(np.float32)
    _drop(counts, rng, rule, missing_rate, outages)
    return SensorData(values=counts, timestamps=stamps, sensor_ids=[f"cnt-{i:03d}" for i in range(num_sensors)],
                      interval_minutes=interval_minutes, name="synthetic-counts", coords=coords, adjacency=adj,
                      timezone=timezone, source="synthetic", missing=rule,
                      load_options=dict(kind="counts", num_sensors=num_sensors, days=days,
                                        interval_minutes=interval_minutes, seed=seed, start=start,
                                        num_corridors=corridors, missing_rate=missing_rate, outages=outages,
                                        dispersion=dispersion, timezone=timezone, missing=rule.spec))
