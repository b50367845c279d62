"""The data set's missing-value rule through the offline pipeline: readers, scaler and inputs,
loss, metrics, baselines, pooled horizon averages, checkpoint, manifest, the count generator and
a wide CSV of counts trained with one flag."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from model.bundle import BundleError, Manifest
from model.missing import NAN, ZERO, MissingRule, parse_rule
from training.baselines import HistoricalAverage, last_value
from training.checkpoint import Checkpoint
from training.datasets import SensorData, generate_synthetic, load_dataset, read_wide_csv
from training.manifest import build_manifest
from training.metrics import MetricSums, average_steps, compute_loss, loss_terms, masked_mae
from training.windows import Scaler, model_inputs, prepare

SENTINEL = MissingRule("value", -1.0)


# --- the rule itself --------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "rule"), [
    ("zero", ZERO), ("ZERO", ZERO), ("0", ZERO), ("value:0", ZERO), ("nan", NAN), ("empty", NAN),
    ("value:-1", SENTINEL), (" value:-1.0 ", SENTINEL), ("value:nan", NAN), (None, ZERO)])
def test_rule_spellings(text, rule) -> None:
    assert parse_rule(text) == rule
    assert parse_rule(rule.spec) == rule  # the recorded spelling reads back


@pytest.mark.parametrize("text", ["", "none", "value:", "value:abc", "value:inf", "sentinel:-1", "-1"])
def test_bad_rule_names_the_spellings(text) -> None:
    with pytest.raises(ValueError, match=r"use zero, nan or value:<number>"):
        parse_rule(text)


def test_rules_mask_what_they_say_and_compare_by_meaning() -> None:
    values = np.array([0.0, np.nan, -1.0, 3.0], np.float32)
    assert ZERO.mask(values).tolist() == [True, False, False, False]
    assert NAN.mask(values).tolist() == [False, True, False, False]
    assert SENTINEL.mask(values).tolist() == [False, False, True, False]
    assert NAN.mask(torch.from_numpy(values)).tolist() == [False, True, False, False]
    assert NAN.observed(torch.from_numpy(values)).tolist() == [True, False, True, True]
    assert MissingRule("nan", float("nan")) == NAN and len({NAN, parse_rule("nan")}) == 1
    assert NAN.spec == "nan" and ZERO.spec == "zero" and SENTINEL.spec == "value:-1.0"
    assert NAN.gap_input(5.5) == 5.5 and ZERO.gap_input(5.5) == 0.0 and SENTINEL.gap_input(5.5) == -1.0


# --- loss, metrics, baselines per rule -------------------------------------------------------------
def test_loss_and_metrics_count_what_the_rule_keeps() -> None:
    target = torch.tensor([[[0.0, 10.0], [np.nan, -1.0]]])  # B=1, T=2, N=2
    pred = torch.tensor([[[2.0, 11.0], [5.0, 3.0]]])
    zero_t = torch.nan_to_num(target, nan=0.0)  # the zero rule's data has no NaN
    assert masked_mae(pred, zero_t).item() == pytest.approx((1 + 4) / 2)  # 0s left out
    assert masked_mae(pred, target, NAN).item() == pytest.approx((2 + 1 + 4) / 3)  # real 0 counted
    sentinel_t = torch.tensor([[[0.0, 10.0], [7.0, -1.0]]])
    assert masked_mae(pred, sentinel_t, SENTINEL).item() == pytest.approx((2 + 1 + 2) / 3)
    total, count = loss_terms("masked_mse", pred, target, NAN)
    assert count.item() == 3 and total.item() == pytest.approx(4 + 1 + 16)
    assert math.isfinite(compute_loss("huber", pred, target, NAN).item())  # NaN never leaks in
    sums = MetricSums(2, NAN)
    sums.update(pred, target)
    assert sums.count.tolist() == [2.0, 1.0] and sums.pct_count.tolist() == [1.0, 1.0]
    r = sums.result()
    assert r["horizon"][0]["mae"] == pytest.approx(1.5) and r["horizon"][0]["mape"] == pytest.approx(10.0)
    assert r["horizon"][1]["rmse"] == pytest.approx(4.0) and math.isfinite(r["all"]["mape"])


def test_loss_gradient_ignores_nan_targets() -> None:
    pred = torch.tensor([1.0, 2.0], requires_grad=True)
    compute_loss("masked_mae", pred, torch.tensor([0.0, np.nan]), NAN).backward()
    assert pred.grad.tolist() == [1.0, 0.0]


def test_last_value_per_rule() -> None:
    x = torch.tensor([[[5.0, 4.0], [0.0, np.nan]]])  # B=1, T_in=2, N=2
    assert last_value(x, 1, torch.tensor([9.0, 9.0]), NAN).tolist() == [[[0.0, 4.0]]]  # 0 is the last reading
    z = torch.nan_to_num(x, nan=0.0)
    assert last_value(z, 1, torch.tensor([9.0, 9.0]), ZERO).tolist() == [[[5.0, 4.0]]]


def _tiny_counts(rule: MissingRule) -> SensorData:
    values = np.array([[0.0, 2.0], [4.0, np.nan], [0.0, 6.0], [8.0, 0.0]] * 2016, np.float32)  # 4-row cycle
    if not rule.nan_only:
        values = np.nan_to_num(values, nan=rule.value)
    stamps = np.datetime64("2024-01-01T00:00", "s") + np.arange(len(values)) * np.timedelta64(300, "s")
    return SensorData(values, stamps, ["a", "b"], 5, "tiny", missing=rule)


def test_historical_average_per_rule() -> None:
    rows = np.arange(288 * 7)
    nan_avg = HistoricalAverage(_tiny_counts(NAN), rows)
    zero_avg = HistoricalAverage(_tiny_counts(ZERO), rows)
    assert nan_avg.sensor_mean.tolist() == pytest.approx([3.0, 8 / 3])  # zeros in, the gap out
    assert zero_avg.sensor_mean.tolist() == pytest.approx([6.0, 4.0])  # zeros (and the gap) out
    assert torch.isfinite(nan_avg.table).all()


def test_nan_gaps_get_the_scaler_mean_and_do_not_move_the_scaler() -> None:
    data = _tiny_counts(NAN)
    scaler = Scaler.fit(data.values)
    assert scaler.mean == pytest.approx(np.nanmean(data.values))
    inputs = model_inputs(torch.from_numpy(data.values), scaler)
    assert torch.isfinite(inputs).all() and inputs[1, 1].item() == 0.0  # the gap: the mean, scaled
    prepared = prepare(data, (0.7, 0.1, 0.2))
    batch = prepared.splits["train"][[0, 1]]
    assert torch.isfinite(batch.x).all() and torch.isnan(batch.target).any()  # targets keep the gap
    with pytest.raises(ValueError, match="every training value is missing"):
        Scaler.fit(np.full((3, 2), np.nan))


# --- pooled averages over horizon steps ---------------------------------------------------------------
def test_average_steps_pools_the_squared_errors() -> None:
    result = {"horizon": [{"step": 1, "mae": 1.0, "rmse": 1.0, "mape": 10.0, "count": 100, "mape_count": 100},
                          {"step": 2, "mae": 2.0, "rmse": 3.0, "mape": 20.0, "count": 100, "mape_count": 100},
                          {"step": 3, "mae": 3.0, "rmse": 5.0, "mape": 30.0, "count": 200, "mape_count": 50}]}
    got = average_steps(result, [1, 2, 3])
    assert got["rmse"] == pytest.approx(math.sqrt((100 * 1 + 100 * 9 + 200 * 25) / 400))
    assert got["rmse"] > (1 + 3 + 5) / 3  # the mean of per-step RMSEs flatters
    assert got["mae"] == pytest.approx((100 + 200 + 600) / 400)
    assert got["mape"] == pytest.approx((1000 + 2000 + 1500) / 250)
    legacy = {"horizon": [{k: v for k, v in r.items() if "count" not in k} for r in result["horizon"]]}
    assert average_steps(legacy, [1, 2, 3])["rmse"] == pytest.approx(math.sqrt((1 + 9 + 25) / 3))


def test_average_steps_equals_the_metric_over_the_pooled_targets() -> None:
    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(6, 3, 4, generator=g) * 10, torch.rand(6, 3, 4, generator=g) * 10
    target[target < 3] = 0  # missing under zero: unequal counts per step
    sums = MetricSums(3)
    sums.update(pred, target)
    mask = target != 0
    pooled = math.sqrt(float(((pred.double() - target.double())[mask] ** 2).mean()))
    assert average_steps(sums.result(), [1, 2, 3])["rmse"] == pytest.approx(pooled, rel=1e-9)
    assert average_steps(sums.result(), [1, 2, 3])["rmse"] == pytest.approx(sums.result()["all"]["rmse"])


# --- the count generator ----------------------------------------------------------------------------
def test_count_data_is_deterministic_with_many_real_zeros() -> None:
    a = load_dataset("synthetic", kind="counts", num_sensors=24, days=14, missing="nan")
    b = generate_synthetic(kind="counts", num_sensors=24, days=14, missing="nan")
    np.testing.assert_array_equal(a.values, b.values)
    other = generate_synthetic(kind="counts", num_sensors=24, days=14, missing="nan", seed=1)
    assert not np.array_equal(np.nan_to_num(a.values), np.nan_to_num(other.values))
    v = a.values
    gaps = np.isnan(v)
    assert 0.002 < gaps.mean() < 0.05  # drops and outages, NaN under the nan rule
    assert (v[~gaps] == np.round(v[~gaps])).all() and v[~gaps].min() == 0  # whole counts
    assert 0.25 < (v == 0).mean() < 0.65  # many real zeros ...
    hour = (a.timestamps.astype(np.int64) % 86400) // 3600
    assert (v[hour == 3] == 0).mean() > 2 * (v[hour == 17] == 0).mean()  # ... mostly at night
    assert np.nanmax(v) > 10 * np.nanmean(v)  # heavy tail
    assert a.adjacency is not None and a.describe()["missing_fraction"] == pytest.approx(gaps.mean())
    zero = generate_synthetic(kind="counts", num_sensors=24, days=14)  # the default rule: zeros masked
    np.testing.assert_array_equal(zero.values, np.nan_to_num(v, nan=0.0))  # same draws, gaps as 0
    assert zero.describe()["missing_fraction"] == pytest.approx((zero.values == 0).mean())
    assert a.load_options["kind"] == "counts" and a.load_options["missing"] == "nan"


def test_unknown_synthetic_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind=counts"):
        generate_synthetic(kind="flow")


# --- readers, checkpoint, manifest ----------------------------------------------------------------------
def _counts_csv(tmp_path, rows: int = 288 * 4):
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.0, (rows, 4)).astype(float)  # about a third zeros
    lines = ["time,s1,s2,s3,s4"]
    stamps = np.datetime64("2024-01-01T00:00") + np.arange(rows) * np.timedelta64(5, "m")
    for t in range(rows):
        cells = ["" if (t == 7 and j == 1) else f"{counts[t, j]:g}" for j in range(4)]
        lines.append(f"{stamps[t]},{','.join(cells)}")
    path = tmp_path / "counts.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, counts


def test_readers_store_gaps_by_the_rule(tmp_path) -> None:
    path, counts = _counts_csv(tmp_path, rows=300)
    zero, nan, sentinel = (read_wide_csv(path, missing=m) for m in ("zero", "nan", "value:-1"))
    assert zero.values[7, 1] == 0 and np.isnan(nan.values[7, 1]) and sentinel.values[7, 1] == -1
    assert nan.describe()["missing_fraction"] == pytest.approx(1 / nan.values.size)
    assert zero.describe()["missing_fraction"] == pytest.approx((zero.values == 0).mean())
    assert nan.describe()["missing_rule"] == "nan" and nan.missing == NAN
    assert load_dataset(path, missing="nan").load_options["missing"] == "nan"
    with pytest.raises(ValueError, match="under the 'zero' missing-value rule"):
        SensorData(nan.values, nan.timestamps, nan.sensor_ids, 5, "x")


def test_wide_csv_of_counts_trains_with_one_flag(tmp_path, capsys) -> None:
    from himnet.cli import main

    path, _ = _counts_csv(tmp_path)
    out = tmp_path / "run"
    code = main(["train", "--data", str(path), "--missing", "nan", "--hidden", "4", "--embedding-dims", "2,2,2,2",
                 "--max-steps", "2", "--epochs", "1", "--no-progress", "--threads", "1", "--output", str(out)])
    assert code == 0
    log = (out / "train.log").read_text()
    summary = json.loads(log.split(" INFO data ", 1)[1].splitlines()[0])
    assert summary["missing_rule"] == "nan"
    assert summary["missing_fraction"] == pytest.approx(1 / (288 * 4 * 4))  # the one empty cell, no zero
    assert "missing readings (rule nan): 0.02 %" in log
    ckpt = Checkpoint.load(out / "checkpoint.pt")
    assert ckpt.missing_rule == "nan" and ckpt.rule == NAN
    assert ckpt.metrics["test"]["missing_rule"] == "nan"
    counts = [r["count"] for r in ckpt.metrics["test"]["model"]["horizon"]]
    windows = ckpt.metrics["test"]["num_windows"]
    assert min(counts) >= windows * 4 - 1  # every target counted, zeros too (at most the one gap left out)

    from training.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(out / "checkpoint.pt")  # re-reads the CSV under the checkpoint's rule
    assert report["missing_rule"] == "nan" and report["dataset"]["missing_rule"] == "nan"
    assert report["model"]["all"] == pytest.approx(ckpt.metrics["test"]["model"]["all"])
    masked = evaluate_checkpoint(out / "checkpoint.pt", str(path), data_options={"missing": "zero"})
    assert masked["model"]["all"]["count"] < report["model"]["all"]["count"]  # an explicit rule wins

    m = build_manifest(ckpt, contraction="auto", files={}, parity={}, export={"weights_sha256": "0" * 64})
    assert m.missing_rule == "nan" and m.missing_value == pytest.approx(ckpt.scaler_mean)
    back = Manifest.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back.missing_rule == "nan" and back.missing_value == m.missing_value


def test_conflicting_rules_are_refused(tmp_path) -> None:
    from training.train import train_model

    with pytest.raises(ValueError, match="disagrees"):
        train_model("synthetic", missing="nan", data_options={"missing": "zero"}, output=tmp_path)
    with pytest.raises(ValueError, match="read it with missing=nan"):
        train_model(generate_synthetic(num_sensors=4, days=2), missing="nan", output=tmp_path)


def test_old_checkpoints_and_bundles_read_as_zero(tiny_checkpoint, tmp_path) -> None:
    payload = dataclasses.asdict(tiny_checkpoint)
    payload["config"] = tiny_checkpoint.config.to_dict()
    del payload["missing_rule"]  # written before the rule existed
    torch.save(payload, tmp_path / "old.pt")
    assert Checkpoint.load(tmp_path / "old.pt").missing_rule == "zero"
    m = build_manifest(tiny_checkpoint, contraction="auto", files={}, parity={},
                       export={"weights_sha256": "0" * 64})
    body = m.to_dict()
    assert body["missing_rule"] == "zero" and body["missing_value"] == 0.0
    del body["missing_rule"]
    assert Manifest.from_dict(body).missing_rule == "zero"
    for change, message in ((dict(missing_rule="sometimes"), "use zero, nan"),
                            (dict(missing_rule="value:-1"), "is not the sentinel"),
                            (dict(missing_rule="nan", missing_value=float("nan")), "finite number")):
        with pytest.raises(BundleError, match=message):
            Manifest.from_dict({**body, **change})
