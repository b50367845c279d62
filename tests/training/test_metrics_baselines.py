"""Masked metrics and the two baselines, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.baselines import HistoricalAverage, last_value
from training.datasets import SensorData, regular_timestamps
from training.metrics import MetricSums, compute_loss, loss_terms, masked_mae


def test_masked_mae_ignores_missing_targets() -> None:
    pred = torch.tensor([1.0, 2.0, 3.0, 100.0])
    target = torch.tensor([2.0, 2.0, 5.0, 0.0])
    assert masked_mae(pred, target).item() == pytest.approx((1 + 0 + 2) / 3)
    assert masked_mae(pred, torch.zeros(4)).item() == 0.0
    assert compute_loss("huber", torch.tensor([0.0, 3.0]), torch.tensor([0.5, 0.0])).item() == \
        pytest.approx((0.5 * 0.25 + 2.5) / 2)
    assert compute_loss("masked_mse", pred, target).item() == pytest.approx((1 + 0 + 4) / 3)
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        loss_terms("mse", pred, target)


def test_metric_sums_per_step_and_overall() -> None:
    # B=1, T=2, N=3; step 1 errors 1, 2 (third target missing); step 2 errors 3, 4, 0
    target = torch.tensor([[[10.0, 20.0, 0.0], [10.0, 40.0, 5.0]]])
    pred = torch.tensor([[[11.0, 18.0, 7.0], [13.0, 36.0, 5.0]]])
    m = MetricSums(2)
    m.update(pred, target)
    r = m.result()
    assert r["horizon"][0]["mae"] == pytest.approx(1.5)
    assert r["horizon"][0]["rmse"] == pytest.approx(math.sqrt((1 + 4) / 2))
    assert r["horizon"][0]["mape"] == pytest.approx(100 * (0.1 + 0.1) / 2)
    assert r["horizon"][1]["mae"] == pytest.approx(7 / 3)
    assert r["all"]["mae"] == pytest.approx(10 / 5)
    assert r["all"]["rmse"] == pytest.approx(math.sqrt((1 + 4 + 9 + 16) / 5))


def test_metric_sums_add_up_across_batches() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(10, 3, 5, generator=g) * 50
    target = torch.rand(10, 3, 5, generator=g) * 50
    target[target < 10] = 0
    whole, parts = MetricSums(3), MetricSums(3)
    whole.update(pred, target)
    parts.update(pred[:4], target[:4])
    parts.update(pred[4:], target[4:])
    for a, b in zip(whole.as_tensor(), parts.as_tensor()):
        torch.testing.assert_close(a, b)
    mask = target != 0
    assert whole.result()["all"]["mae"] == pytest.approx(float((pred - target).abs()[mask].mean()), rel=1e-6)


def test_last_value_skips_missing_readings() -> None:
    x = torch.tensor([[[5.0, 0.0, 0.0], [6.0, 3.0, 0.0], [0.0, 0.0, 0.0]]])  # B=1, T_in=3, N=3
    out = last_value(x, 4, fallback=torch.tensor([1.0, 2.0, 9.0]))
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [6.0] * 4  # last non-zero, not the trailing 0
    assert out[0, :, 1].tolist() == [3.0] * 4
    assert out[0, :, 2].tolist() == [9.0] * 4  # nothing observed: fallback


def test_historical_average_by_slot_and_weekday_with_fallbacks() -> None:
    # two days at 12-hour steps (steps_per_day = 2): Mon 00:00, Mon 12:00, Tue 00:00, Tue 12:00
    vals = np.array([[10.0, 1.0], [20.0, 0.0], [30.0, 3.0], [40.0, 5.0]], dtype=np.float32)
    data = SensorData(vals, regular_timestamps("2024-01-01", 4, 720), ["a", "b"], 720, "ha")
    ha = HistoricalAverage(data, rows=np.array([0, 1, 2]))  # Tue 12:00 is not training data
    pred = ha.predict(torch.tensor([[0, 1, 2, 3]]))  # 1 × 4 × N
    assert pred[0, :, 0].tolist() == [10.0, 20.0, 30.0, 20.0]  # Tue 12:00 -> slot mean over days
    assert pred[0, 1, 1].item() == pytest.approx(2.0)  # Mon 12:00 of b missing -> sensor mean (1+3)/2
