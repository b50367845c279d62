"""Split-conformal calibration on synthetic residuals with known noise: the intervals cover what
they promise (within ±3 points) and fall back to the pooled quantile where a sensor has few."""

from __future__ import annotations

import numpy as np
import pytest

from model.intervals import IntervalError, IntervalTable, read_intervals, write_intervals
from training.calibration import calibrate, conformal_quantile, interval_scores


def _noisy(rng: np.random.Generator, windows: int, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W × T × N: a smooth signal as the forecast, truth = signal + N(0, sigma per sensor/step)."""
    steps, n = sigma.shape
    signal = 50 + 10 * np.sin(np.arange(windows)[:, None, None] / 20 + np.arange(n)[None, None, :])
    signal = np.broadcast_to(signal, (windows, steps, n)).copy()
    truth = signal + rng.normal(0.0, 1.0, signal.shape) * sigma[None]
    return signal, truth


def test_coverage_holds_on_new_data_with_known_noise() -> None:
    rng = np.random.default_rng(7)
    steps, n = 3, 12
    sigma = np.linspace(0.5, 6.0, n)[None, :] * np.array([1.0, 1.5, 2.0])[:, None]  # T × N
    pred_val, truth_val = _noisy(rng, 400, sigma)
    truth_val[rng.random(truth_val.shape) < 0.05] = 0.0  # missing readings are not residuals
    table = calibrate(pred_val, truth_val)
    assert table.per_sensor.all()
    pred_test, truth_test = _noisy(rng, 2000, sigma)
    rows = {r["level"]: r for r in interval_scores(table, pred_test, truth_test, lo=-np.inf)}
    for level in (0.8, 0.9):
        for cov in rows[level]["coverage"]:
            assert abs(cov - level) <= 0.03, (level, rows[level]["coverage"])
    # Gaussian noise: the 0.9 half-width is ~1.645 sigma per sensor and step
    ratio = table.half_width[table.index(0.9)] / sigma
    assert np.median(ratio) == pytest.approx(1.645, rel=0.1)


def test_sparse_sensors_fall_back_to_the_pooled_quantile() -> None:
    rng = np.random.default_rng(1)
    pred, truth = _noisy(rng, 200, np.ones((2, 4)))
    truth[20:, :, 3] = 0.0  # sensor 3: only 20 observed residuals per step
    table = calibrate(pred, truth, min_per_sensor=50)
    assert table.per_sensor[:, :3].all() and not table.per_sensor[:, 3].any()
    pooled = np.abs(pred - truth)[:, 0][truth[:, 0] != 0]
    assert table.half_width[table.index(0.9), 0, 3] == pytest.approx(conformal_quantile(pooled, 0.9))


def test_conformal_quantile_is_the_finite_sample_order_statistic() -> None:
    r = np.arange(1.0, 11.0)  # 10 residuals
    assert conformal_quantile(r, 0.9) == 10.0  # ceil(11 * 0.9) = 10th
    assert conformal_quantile(r, 0.5) == 6.0  # ceil(5.5) = 6th
    assert np.isnan(conformal_quantile(np.array([]), 0.9))


def test_table_round_trip_bounds_and_levels(tmp_path) -> None:
    half = np.ones((4, 2, 3), dtype=np.float32) * np.array([1, 2, 3, 4])[:, None, None]
    table = IntervalTable(np.array([0.5, 0.8, 0.9, 0.95]), half, np.ones((2, 3), dtype=bool))
    write_intervals(tmp_path / "i.npz", table)
    back = read_intervals(tmp_path / "i.npz")
    assert np.array_equal(back.half_width, table.half_width)
    lower, upper = back.bounds(np.full((2, 3), 2.0), 0.9, lo=0.0, hi=4.0)
    assert lower.min() == 0.0 and upper.max() == 4.0  # 2 ± 3 clipped to [0, 4]
    with pytest.raises(IntervalError, match="not calibrated"):
        back.index(0.99)
