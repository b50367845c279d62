"""Per-sensor scaling and the log1p transform (``model/scaling.py``, ``training.windows.Scaler``),
and how they travel in the checkpoint."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from model.missing import NAN, ZERO, parse_rule
from model.scaling import gap_readings, parse_scaling, parse_transform
from training.checkpoint import Checkpoint, CheckpointError
from training.datasets import generate_synthetic
from training.train import train_model
from training.windows import Scaler, model_inputs, prepare


def _levels(seed: int = 0, steps: int = 400) -> np.ndarray:
    """T × 4 readings at very different levels and spreads (a freeway beside a side street)."""
    rng = np.random.default_rng(seed)
    level = np.array([5.0, 30.0, 65.0, 300.0])
    return (level + rng.gamma(2.0, level / 10, (steps, 4))).astype(np.float64)


def test_default_fit_is_the_global_z_score_with_zeros_included() -> None:
    values = _levels()
    values[::7, 1] = 0.0  # gaps under the zero rule
    s = Scaler.fit(values)
    assert not s.per_sensor and not s.log1p and s.scaling == "global" and s.transform_name == "none"
    assert s.mean == float(np.mean(values)) and s.std == float(np.std(values))  # zeros counted


@pytest.mark.parametrize("log1p", [False, True])
def test_per_sensor_round_trip_and_unit_spread(log1p: bool) -> None:
    values = _levels()
    s = Scaler.fit(values, scaling="per_sensor", transform="log1p" if log1p else "none", rule=NAN)
    assert s.per_sensor and s.mean.shape == (4,) and s.log1p is log1p
    z = s.transform(values)  # T × N
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-9)
    np.testing.assert_allclose(s.inverse(z), values, rtol=1e-9)
    # torch, and the B × T × N × 1 layout of model outputs, broadcast per sensor too
    zt = s.transform(torch.from_numpy(values).float())
    np.testing.assert_allclose(zt.numpy(), z, atol=1e-4)
    out = torch.from_numpy(z).float().reshape(1, -1, 4, 1)
    np.testing.assert_allclose(s.inverse(out)[0, ..., 0].numpy(), values, rtol=1e-4)


def test_per_sensor_fit_leaves_out_what_the_rule_masks() -> None:
    values = _levels()
    values[:200, 2] = 0.0  # half of sensor 2 missing under zero
    s = Scaler.fit(values, scaling="per_sensor", rule=ZERO)
    kept = values[200:, 2]
    assert s.mean[2] == pytest.approx(kept.mean()) and s.std[2] == pytest.approx(kept.std())
    with_nan = values.copy()
    with_nan[:200, 2] = np.nan
    s_nan = Scaler.fit(with_nan, scaling="per_sensor", rule=NAN)
    np.testing.assert_allclose(s_nan.mean, s.mean)
    # under nan a 0 is a reading: it enters the fit
    assert Scaler.fit(values, scaling="per_sensor", rule=NAN).mean[2] == pytest.approx(values[:, 2].mean())
    sentinel = values.copy()
    sentinel[:200, 2] = -1.0
    assert Scaler.fit(sentinel, scaling="per_sensor", rule=parse_rule("value:-1")).mean[2] == pytest.approx(kept.mean())


def test_all_missing_and_constant_sensors_get_the_global_figures(caplog) -> None:
    values = _levels()
    values[:, 0] = np.nan  # never reported
    values[:, 3] = 42.0  # constant
    with caplog.at_level(logging.WARNING, logger="himnet.train"):
        s = Scaler.fit(values, scaling="per_sensor", rule=NAN)
    observed = values[~np.isnan(values)]
    assert s.global_mean == pytest.approx(observed.mean()) and s.global_std == pytest.approx(observed.std())
    assert s.mean[0] == pytest.approx(s.global_mean) and s.std[0] == pytest.approx(s.global_std)
    assert s.mean[3] == 42.0 and s.std[3] == pytest.approx(s.global_std)
    assert np.isfinite(s.mean).all() and (s.std > 0).all()
    assert "[0] have no observed training value" in caplog.text and "[3] are constant" in caplog.text
    scaled = model_inputs(torch.from_numpy(values).float(), s)  # T × N
    assert torch.isfinite(scaled).all() and (scaled[:, 0] == 0).all()  # a gap reads as the mean
    with pytest.raises(ValueError, match="every training value is missing"):
        Scaler.fit(np.full((3, 2), np.nan), scaling="per_sensor", rule=NAN)
    with pytest.raises(ValueError, match=r"per-sensor scaling fits T × N readings, got shape \(5,\)"):
        Scaler.fit(np.ones(5), scaling="per_sensor")


def test_log1p_refuses_negative_readings_and_negative_sentinels() -> None:
    values = _levels()
    values[5, 1] = -2.5
    with pytest.raises(ValueError, match=r"log1p needs non-negative readings: 1 are negative \(first -2.5 at row, sensor \(5, 1\)\)"):
        Scaler.fit(values, transform="log1p")
    with pytest.raises(ValueError, match="log1p needs non-negative readings: 1 are negative"):
        Scaler.fit(values, scaling="per_sensor", transform="log1p", rule=NAN)
    gaps = _levels()
    gaps[::9, 0] = -1.0
    Scaler.fit(gaps, scaling="per_sensor", rule=parse_rule("value:-1"))  # fine without log1p
    with pytest.raises(ValueError, match="marks gaps with -1; use --missing nan"):
        Scaler.fit(gaps, transform="log1p", rule=parse_rule("value:-1"))


def test_gap_readings_map_to_zero_after_scaling() -> None:
    values = _levels()
    s = Scaler.fit(values, scaling="per_sensor", transform="log1p", rule=NAN)
    gap = gap_readings(NAN, s.mean, True)  # N raw readings
    assert gap.shape == (4,) and gap.dtype == np.float32
    np.testing.assert_allclose(s.transform(gap.astype(np.float64)[None]), 0.0, atol=1e-5)
    assert (gap_readings(ZERO, s.mean, True) == 0.0).all()  # a sentinel stays the sentinel
    assert gap_readings(NAN, 54.0, False) == 54.0 and gap_readings(ZERO, 54.0, False) == 0.0


def test_option_spellings() -> None:
    assert parse_scaling("per-sensor") == "per_sensor" and parse_scaling(None) == "global"
    assert parse_transform("LOG1P") == "log1p" and parse_transform(None) == "none"
    with pytest.raises(ValueError, match="scaling 'sensor': use global or per_sensor"):
        parse_scaling("sensor")
    with pytest.raises(ValueError, match="transform 'log': use none or log1p"):
        parse_transform("log")


def test_prepare_fits_per_sensor_on_training_inputs_only() -> None:
    data = generate_synthetic(num_sensors=3, days=4, kind="counts", missing="nan")
    p = prepare(data, "7:1:2", scaling="per_sensor", transform="log1p")
    rows = np.arange(p.splits["train"].starts.max() + 12)  # rows under training inputs
    want = Scaler.fit(data.values[rows], scaling="per_sensor", transform="log1p", rule=data.missing)
    np.testing.assert_allclose(p.scaler.mean, want.mean)
    assert not np.allclose(p.scaler.mean, Scaler.fit(data.values, scaling="per_sensor", transform="log1p",
                                                     rule=data.missing).mean, rtol=0, atol=1e-9)


def test_checkpoint_carries_the_scaler_and_old_checkpoints_load_as_global(tmp_path) -> None:
    ckpt = train_model("synthetic", data_options={"num_sensors": 4, "days": 2, "kind": "counts"}, missing="nan",
                       scaling="per_sensor", transform="log1p", hidden=4, embedding_dims=(2, 2, 2, 2),
                       max_steps=2, epochs=1, batch_size=8, output=tmp_path / "run", device="cpu",
                       progress=False, threads=1)
    loaded = Checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    assert (loaded.scaling, loaded.transform) == ("per_sensor", "log1p") and len(loaded.sensor_means) == 4
    s = loaded.scaler()
    assert s.per_sensor and s.log1p and s.scalar_mean == loaded.scaler_mean
    assert loaded.train_settings["scaling"] == "per_sensor"
    payload = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    for key in ("scaling", "transform", "sensor_means", "sensor_stds"):
        del payload[key]  # as written before these fields existed
    torch.save(payload, tmp_path / "old.pt")
    old = Checkpoint.load(tmp_path / "old.pt")
    assert (old.scaling, old.transform, old.sensor_means) == ("global", "none", None)
    assert not old.scaler().per_sensor and old.scaler().mean == old.scaler_mean
    payload["scaling"] = "per_sensor"  # without its figures
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt: per_sensor scaling needs 4 finite sensor_means"):
        Checkpoint.load(tmp_path / "bad.pt")


def test_train_refuses_an_unknown_scaling(tmp_path) -> None:
    with pytest.raises(ValueError, match="scaling 'local': use global or per_sensor"):
        train_model("synthetic", scaling="local", output=tmp_path)


def test_cli_reports_log1p_on_a_negative_sentinel_as_a_user_error(tmp_path, capsys) -> None:
    from himnet.cli import main as cli_main

    rc = cli_main(["train", "--data-option", "num_sensors=3", "--data-option", "days=2", "--missing", "value:-1",
                   "--transform", "log1p", "--max-steps", "1", "--hidden", "4", "--output", str(tmp_path),
                   "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "himnet train: transform log1p needs non-negative readings" in err
    assert "Traceback" not in err


def test_scalers_compare_by_their_figures() -> None:
    values = _levels()
    a = Scaler.fit(values, scaling="per_sensor", rule=NAN)
    assert a == Scaler.fit(values.copy(), scaling="per_sensor", rule=NAN)
    assert a != Scaler.fit(values, scaling="per_sensor", transform="log1p", rule=NAN)
    assert a != Scaler.fit(values) and Scaler.fit(values) == Scaler.fit(values.copy())
