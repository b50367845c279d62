"""A seeded synthetic road network with realistic speed patterns.

It is the default dataset, so a fresh clone can train, evaluate and serve with no downloads.
It has what makes HimNet's embeddings useful: sensors that differ (free-flow speed, how badly
they congest), daily and weekly cycles (weekday rush hours, quieter weekends), congestion that
starts at a bottleneck and spreads upstream along a corridor, occasional incidents, and missing
readings stored as 0 (scattered drops and whole-sensor outages).
"""

from __future__ import annotations

import numpy as np

from model.missing import MissingRule, parse_rule
from training.datasets.base import SensorData, regular_timestamps

CENTER = (34.05, -118.25)  # corridors are laid out around this point (lat, lon)


def _bump(hours: np.ndarray, center: float, width: float) -> np.ndarray:
    """Smooth peak in [0, 1] at ``center`` hours, ``width`` hours wide."""
    return np.exp(-0.5 * ((hours - center) / width) ** 2)


def _road_network(num_sensors: int, num_corridors: int, rng: np.random.Generator):
    """Sensors along straight corridors. Returns corridor id, position 0..1 along it (1 = the
    downstream bottleneck end), coords N × 2 and a Gaussian-kernel road adjacency N × N."""
    corridor = np.arange(num_sensors) % num_corridors
    position = np.zeros(num_sensors)
    coords = np.zeros((num_sensors, 2))
    for c in range(num_corridors):
        members = np.flatnonzero(corridor == c)
        pos = np.sort(rng.uniform(0, 1, len(members)))
        position[members] = pos
        angle = np.pi * c / num_corridors + rng.uniform(-0.2, 0.2)
        length = 0.25  # degrees, ~25 km
        offset = (rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05))
        along = (pos - 0.5) * length
        coords[members, 0] = CENTER[0] + offset[0] + along * np.sin(angle)
        coords[members, 1] = CENTER[1] + offset[1] + along * np.cos(angle)
    dist = np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=-1)  # N × N, degrees
    same = corridor[:, None] == corridor[None, :]
    sigma = 0.04
    adj = np.exp(-((dist / sigma) ** 2)) * np.where(same, 1.0, 0.3)
    adj[adj < 0.1] = 0.0
    np.fill_diagonal(adj, 1.0)
    return corridor, position, coords, adj.astype(np.float32)


def _add_incidents(speed: np.ndarray, rng: np.random.Generator, count: int, corridor: np.ndarray,
                   position: np.ndarray) -> None:
    """Incidents, in place on ``speed`` (T × N): a sudden drop at one sensor that spreads upstream
    on its corridor and clears."""
    t_total, num_sensors = speed.shape
    for _ in range(count):
        where = rng.integers(num_sensors)
        t0 = rng.integers(t_total)
        length = int(rng.integers(6, 19))  # 30-90 minutes at 5-min steps
        upstream = np.flatnonzero((corridor == corridor[where]) & (position <= position[where]))
        for s in upstream:
            delay = int(round((position[where] - position[s]) * 12))
            a, b = t0 + delay, min(t_total, t0 + delay + length)
            if a < t_total:
                speed[a:b, s] *= rng.uniform(0.35, 0.6)


def _sensor_noise(rng: np.random.Generator, t_total: int, num_sensors: int) -> np.ndarray:
    """T × N sensor noise with some persistence (AR(1)), of a different scale per sensor."""
    noise_scale = rng.uniform(0.8, 2.5, num_sensors)
    eps = rng.normal(0, 1, (t_total, num_sensors))
    noise = np.empty_like(eps)
    noise[0] = eps[0]
    for t in range(1, t_total):
        noise[t] = 0.7 * noise[t - 1] + 0.71 * eps[t]
    return noise * noise_scale


def _drop_readings(speed: np.ndarray, rng: np.random.Generator, missing_rate: float, outages: int,
                   gap: float) -> None:
    """Missing readings (``gap``: 0, or NaN under the nan rule), in place: scattered drops plus a
    few whole-sensor outages of 1-6 hours."""
    t_total, num_sensors = speed.shape
    speed[rng.random(speed.shape) < missing_rate] = gap
    for _ in range(outages):
        s = rng.integers(num_sensors)
        a = rng.integers(t_total)
        speed[a:a + int(rng.integers(12, 73)), s] = gap


def generate_synthetic(num_sensors: int = 24, days: int = 28, interval_minutes: float = 5,
                       seed: int = 0, start: str = "2024-01-01T00:00", num_corridors: int = 3,
                       missing_rate: float = 0.005, outages: int = 3,
                       timezone: str | None = "America/Los_Angeles", missing: MissingRule | str | None = None,
                       kind: str = "speed", **count_options: float | int | str) -> SensorData:
    """Speeds (mph) of ``num_sensors`` sensors over ``days`` days; the same seed gives the same data.

    ``kind=counts`` gives vehicle counts instead (``training/datasets/synthetic_counts.py``; 0 is
    a real reading there, so train it with ``missing=nan``); ``count_options`` go to that generator.
    """
    common = dict(num_sensors=num_sensors, days=days, interval_minutes=interval_minutes, seed=seed, start=start,
                  num_corridors=num_corridors, missing_rate=missing_rate, outages=outages, timezone=timezone,
                  missing=missing)
    if kind == "counts":
        from training.datasets.synthetic_counts import generate_counts  # it imports this module

        return generate_counts(**common, **count_options)
    if kind != "speed" or count_options:
        raise ValueError(f"synthetic kind {kind!r} with options {sorted(count_options)}: use kind=speed "
                         "(no extra options) or kind=counts (dispersion=)")
    return _speeds(**common)


def _speeds(num_sensors: int, days: int, interval_minutes: float, seed: int, start: str, num_corridors: int,
            missing_rate: float, outages: int, timezone: str | None, missing: MissingRule | str | None) -> SensorData:
    """The speed data set of :func:`generate_synthetic`."""
    rule = parse_rule(missing)
    num_sensors, days, seed, outages = int(num_sensors), int(days), int(seed), int(outages)
    interval_minutes, missing_rate = float(interval_minutes), float(missing_rate)
    rng = np.random.default_rng(seed)
    steps_per_day = int(round(1440 / interval_minutes))
    t_total = days * steps_per_day
    stamps = regular_timestamps(start, t_total, interval_minutes)
    seconds = stamps.astype(np.int64)
    hours = (seconds % 86400) / 3600.0  # T
    dow = (seconds // 86400 + 3) % 7  # T, 0 = Monday
    weekend = dow >= 5
    day_index = (seconds - seconds[0]) // 86400  # T

    corridor, position, coords, adj = _road_network(num_sensors, int(num_corridors), rng)
    free_flow = rng.uniform(55, 70, num_sensors)  # mph, per sensor
    severity = rng.uniform(0.25, 0.75, num_sensors) * (0.4 + 0.6 * position)  # worse near bottleneck
    # Inbound corridors jam in the morning, outbound ones in the evening; both a bit of each.
    am_weight = np.where(corridor % 2 == 0, 1.0, 0.45)
    pm_weight = np.where(corridor % 2 == 0, 0.5, 1.0)
    # Queue spillback: the jam reaches a sensor later the farther upstream it is (up to 50 min).
    lag_h = (1.0 - position) * 50 / 60.0
    day_intensity = rng.uniform(0.8, 1.2, (days, int(num_corridors)))  # per day and corridor
    intensity = day_intensity[day_index][:, corridor]  # T × N

    h = hours[:, None] - lag_h[None, :]  # T × N, hours as each sensor experiences the wave
    weekday_load = am_weight * _bump(h, 8.0, 0.9) + pm_weight * _bump(h, 17.5, 1.2)
    weekend_load = 0.35 * _bump(h, 13.5, 2.5)
    load = np.where(weekend[:, None], weekend_load, weekday_load) * intensity  # T × N
    # Friday evenings are worse, Sunday evenings see returning traffic.
    load = load + np.where((dow == 4)[:, None], 0.25 * _bump(h, 16.0, 1.5), 0.0)
    load = load + np.where((dow == 6)[:, None], 0.2 * _bump(h, 18.0, 1.5), 0.0)
    congestion = np.clip(load, 0, 1.3) * severity  # T × N, fraction of speed lost
    speed = free_flow * (1 - congestion) + 2.0 * _bump(hours[:, None], 3.0, 2.0)  # a bit faster at night

    _add_incidents(speed, rng, days // 2 + 1, corridor, position)
    speed = np.clip(speed + _sensor_noise(rng, t_total, num_sensors), 3.0, None)
    _drop_readings(speed, rng, missing_rate, outages, rule.value)

    return SensorData(values=speed.astype(np.float32), timestamps=stamps,
                      sensor_ids=[f"syn-{i:03d}" for i in range(num_sensors)],
                      interval_minutes=interval_minutes, name="synthetic", coords=coords, adjacency=adj,
                      timezone=timezone, missing=rule,
                      source="synthetic",
                      load_options=dict(num_sensors=num_sensors, days=days, interval_minutes=interval_minutes,
                                        seed=seed, start=start, num_corridors=int(num_corridors),
                                        missing_rate=missing_rate, outages=outages, timezone=timezone,
                                        missing=rule.spec))
