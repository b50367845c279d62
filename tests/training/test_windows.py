"""Splits, windows and scaler: chronological, leak-free, and gathered from one array."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.time_features import time_features
from training.datasets import SensorData, regular_timestamps
from training.windows import Scaler, WindowDataset, parse_split, prepare, split_windows, training_rows


def _data(t: int = 300, n: int = 4) -> SensorData:
    vals = (np.arange(t * n, dtype=np.float32).reshape(t, n) % 97) + 1
    return SensorData(vals, regular_timestamps("2024-01-05T22:00", t, 5), [f"s{i}" for i in range(n)], 5, "toy")


def test_parse_split() -> None:
    assert parse_split("7:1:2") == pytest.approx((0.7, 0.1, 0.2))
    assert parse_split("6,2,2") == pytest.approx((0.6, 0.2, 0.2))
    assert parse_split("tgcn") == "los-loop" and parse_split("official") == "official"
    for bad in ("7:1", "a:b:c", "0:1:1", "1:1:0"):
        with pytest.raises(ValueError, match=rf"bad split {bad!r}: (use e\.g\.|need three ratios)"):
            parse_split(bad)


def test_ratio_split_is_chronological_over_windows() -> None:
    s = split_windows(124, 12, 12, "7:1:2")  # 101 windows
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (71, 10, 20)
    allw = np.concatenate([s["train"], s["val"], s["test"]])
    np.testing.assert_array_equal(allw, np.arange(101))  # every window once, in time order


def test_los_loop_split_keeps_segments_apart() -> None:
    s = split_windows(2016, 12, 12, "los-loop")
    # rows: train [0, 1451), val [1451, 1612), test [1612, 2016); windows stay inside
    assert s["train"][-1] + 24 <= 1451 and s["val"][0] == 1451 and s["val"][-1] + 24 <= 1612
    assert s["test"][0] == 1612 and s["test"][-1] + 24 == 2016
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (1428, 138, 381)


def test_split_too_short_is_an_error() -> None:
    with pytest.raises(ValueError, match="no train windows"):
        split_windows(30, 12, 12, "los-loop")  # 24 training rows cannot hold a 24-step window
    with pytest.raises(ValueError, match="no test windows"):
        split_windows(100, 12, 12, "los-loop")  # only 20 test rows


def test_windows_hold_scaled_values_and_shared_time_features() -> None:
    data = _data()
    prep = prepare(data, "7:1:2", 12, 12)
    ds = prep.splits["val"]
    b = ds[[0, 3]]
    s0 = int(ds.starts[0])
    assert b.x.shape == (2, 12, 4, 3) and b.y_cov.shape == (2, 12, 4, 2)
    assert b.labels.shape == (2, 12, 4, 1) and b.target.shape == (2, 12, 4, 1)
    np.testing.assert_allclose(b.x[0, :, :, 0].numpy(), (data.values[s0:s0 + 12] - prep.scaler.mean) / prep.scaler.std,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(b.target[0, :, :, 0].numpy(), data.values[s0 + 12:s0 + 24])
    feats = time_features(data.timestamps, 288)
    np.testing.assert_array_equal(b.x[0, :, 2, 1:].numpy(), feats[s0:s0 + 12])
    np.testing.assert_array_equal(b.y_cov[0, :, 0].numpy(), feats[s0 + 12:s0 + 24])
    np.testing.assert_allclose(prep.scaler.inverse(b.labels), b.target, rtol=1e-5)
    one = ds[3]
    torch.testing.assert_close(one.x, b.x[1])


def test_scaler_sees_training_inputs_only() -> None:
    data = _data()
    prep = prepare(data, "7:1:2", 12, 12)
    rows = training_rows(prep.splits["train"].starts, 12)
    assert prep.scaler.mean == pytest.approx(float(data.values[rows].astype(np.float64).mean()))
    changed = _data()
    changed.values[rows.max() + 1:] *= 100  # anything after the training inputs
    assert prepare(changed, "7:1:2", 12, 12).scaler == prep.scaler
    assert Scaler.fit(np.full(5, 3.0)).std == 1.0  # constant data does not divide by zero


def test_splits_share_one_array_and_scale_to_pems07() -> None:
    t, n = 28224, 883  # PEMS07
    vals = np.random.default_rng(0).uniform(0, 500, (t, n)).astype(np.float32)
    data = SensorData(vals, regular_timestamps("2017-05-01", t, 5), [str(i) for i in range(n)], 5, "pems07-size")
    prep = prepare(data, "6:2:2", 12, 12)
    ptrs = {ds.scaled.data_ptr() for ds in prep.splits.values()}
    assert len(ptrs) == 1  # one scaled copy of the series for all splits
    assert prep.splits["train"].raw.data_ptr() == torch.from_numpy(data.values).data_ptr() or \
        prep.splits["train"].raw.numel() == t * n
    b = prep.splits["test"][list(range(16))]
    assert b.x.shape == (16, 12, n, 3)
    assert len(prep.splits["train"]) + len(prep.splits["val"]) + len(prep.splits["test"]) == t - 23


def test_window_past_end_is_refused() -> None:
    data = _data(40)
    with pytest.raises(ValueError, match="past the end"):
        WindowDataset(data, np.array([20]), Scaler(0, 1))


def test_training_warns_about_weekdays_it_never_trains(caplog) -> None:
    from training.datasets import generate_synthetic
    from training.train import TrainSettings, _warn_unseen_contexts, resolve

    data = generate_synthetic(num_sensors=3, days=7)  # Monday..Sunday; 80/20 leaves Sat/Sun untrained
    cfg, _, split = resolve(TrainSettings(split="los-loop"), data)
    prep = prepare(data, split, 12, 12)
    with caplog.at_level("WARNING", logger="himnet.train"):
        _warn_unseen_contexts(prep, cfg)
    assert "day(s) of week [5, 6]" in caplog.text
    caplog.clear()
    cfg0, _, _ = resolve(TrainSettings(split="los-loop", embedding_dims=(8, 0, 16, 16)), data)
    with caplog.at_level("WARNING", logger="himnet.train"):
        _warn_unseen_contexts(prep, cfg0)
    assert caplog.text == ""
