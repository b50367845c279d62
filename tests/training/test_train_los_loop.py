"""A tiny HimNet on a slice of the real LOS-LOOP data: loss goes down, checkpoint round-trips,
evaluation reproduces the recorded metrics, resume continues, and mismatched data is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import HimNet
from training.checkpoint import Checkpoint, CheckpointError
from himnet.cli import main as cli_main
from training.datasets import generate_synthetic, load_dataset
from training.evaluate import evaluate_checkpoint
from training.loop import LoopSettings, seed_everything, validation_loss
from training.distributed import DistInfo
from training.train import TrainSettings, resolve, train_model
from training.windows import prepare

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
LOS = SHARED / "data" / "los-loop" / "los_speed.csv"
needs_los = pytest.mark.skipif(not LOS.is_file(), reason=f"real LOS-LOOP data not found at {LOS} "
                                                         "(../shared is absent on a fresh clone)")
TINY = dict(hidden=8, embedding_dims=(4, 4, 4, 4), batch_size=16, device="cpu", progress=False, seed=0,
            split="los-loop", patience=100)


@pytest.fixture(scope="module")
def los_slice():
    return load_dataset("los-loop").subset(nodes=12, steps=slice(0, 864))  # 3 days, 12 sensors


@needs_los
def test_tiny_model_learns_and_checkpoint_round_trips(los_slice, tmp_path: Path) -> None:
    settings = TrainSettings(**TINY, epochs=2, max_steps=60)
    config, loop, split = resolve(settings, los_slice)
    prepared = prepare(los_slice, split, 12, 12)
    seed_everything(0)
    before = validation_loss(HimNet(config), prepared.splits["val"], prepared, loop, DistInfo(), torch.device("cpu"))

    ckpt = train_model(los_slice, **TINY, epochs=2, max_steps=60, output=tmp_path / "run")
    after = validation_loss(ckpt.build_model(), prepared.splits["val"], prepared, loop, DistInfo(),
                            torch.device("cpu"))
    assert after < 0.8 * before, (before, after)  # starts near the mean speed error, must learn
    hist = ckpt.train_settings["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]

    run = tmp_path / "run"
    assert {"checkpoint.pt", "train.log", "metrics.json", "resume.pt"} <= {p.name for p in run.iterdir()}
    loaded = Checkpoint.load(run / "checkpoint.pt")
    assert loaded.sensor_ids == los_slice.sensor_ids and loaded.timezone == "America/Los_Angeles"
    assert loaded.interval_minutes == 5 and loaded.coords is not None and len(loaded.coords) == 12
    assert loaded.scaler_mean == pytest.approx(prepared.scaler.mean)
    for k, v in ckpt.state_dict.items():
        torch.testing.assert_close(loaded.state_dict[k], v)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["model"]["all"]["mae"] == pytest.approx(loaded.metrics["test"]["model"]["all"]["mae"])

    report = evaluate_checkpoint(run / "checkpoint.pt")  # re-reads the same LOS-LOOP slice
    assert loaded.train_settings["selection"] == {"nodes": list(range(12)), "rows": [0, 864]}
    for name in ("model", "last_value", "historical_average"):
        assert report[name]["all"]["mae"] == pytest.approx(loaded.metrics["test"][name]["all"]["mae"], rel=1e-5)
    assert report["num_windows"] == len(prepared.splits["test"])

    other = los_slice.subset(nodes=[1, 0] + list(range(2, 12)))  # same sensors, other order
    with pytest.raises(CheckpointError, match="another order"):
        evaluate_checkpoint(loaded, other)
    with pytest.raises(CheckpointError, match="12 sensors"):
        evaluate_checkpoint(loaded, load_dataset("los-loop").subset(nodes=10, steps=slice(0, 864)))


@pytest.fixture(params=["synthetic", pytest.param("los-loop", marks=needs_los)])
def resume_data(request):
    """Six sensors, 300 steps: of the synthetic network everywhere, of LOS-LOOP where ../shared is."""
    if request.param == "synthetic":
        return generate_synthetic(num_sensors=6, days=2, seed=0).subset(steps=slice(0, 300))
    return request.getfixturevalue("los_slice").subset(nodes=6, steps=slice(0, 300))


def test_resume_continues_where_it_stopped(resume_data, tmp_path: Path) -> None:
    small = resume_data
    first = train_model(small, **TINY, epochs=1, output=tmp_path)
    seen = first.train_settings["history"][-1]["batches_seen"]
    second = train_model(small, **TINY, epochs=2, output=tmp_path, resume=True)
    hist = second.train_settings["history"]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert hist[0] == first.train_settings["history"][0]  # epoch 1 was not redone
    assert hist[1]["batches_seen"] == 2 * seen
    log = (tmp_path / "train.log").read_text()
    assert "resumed from" in log and "after epoch 1" in log


def test_cli_train_and_evaluate_on_synthetic(tmp_path: Path, capsys) -> None:
    out = tmp_path / "syn"
    rc = cli_main(["train", "--data", "synthetic", "--data-option", "num_sensors=6", "--data-option", "days=5",
                   "--hidden", "8", "--embedding-dims", "4,4,4,4", "--max-steps", "6", "--epochs", "1",
                   "--device", "cpu", "--no-progress", "--output", str(out)])
    assert rc == 0
    ckpt = Checkpoint.load(out / "checkpoint.pt")
    assert ckpt.config.num_nodes == 6 and ckpt.config.hidden_dim == 8
    assert ckpt.train_settings["data"] == "synthetic"
    assert ckpt.train_settings["data_options"]["num_sensors"] == 6 and ckpt.train_settings["data_options"]["days"] == 5
    assert ckpt.metrics["batches_seen"] == 6 and ckpt.metrics["stopped_because"] == "max steps"
    capsys.readouterr()
    rc = cli_main(["evaluate", str(out / "checkpoint.pt"), "--json", str(tmp_path / "eval.json")])
    printed = capsys.readouterr().out
    assert rc == 0 and "Last value" in printed and "Hist. average" in printed
    report = json.loads((tmp_path / "eval.json").read_text())
    assert len(report["model"]["horizon"]) == 12 and np.isfinite(report["model"]["all"]["rmse"])
    # a checkpoint for other sensors is refused with a clear message, not a shape error
    rc = cli_main(["evaluate", str(out / "checkpoint.pt"), "--data", "synthetic", "--data-option",
                   "num_sensors=7", "--data-option", "days=5"])
    assert rc == 2 and "trained on 6 sensors" in capsys.readouterr().err
    (tmp_path / "broken.pt").write_bytes(b"nope")
    assert cli_main(["evaluate", str(tmp_path / "broken.pt")]) == 2
    assert "broken.pt" in capsys.readouterr().err


def test_cli_help_lists_the_options(capsys) -> None:
    with pytest.raises(SystemExit, match="^0$"):  # --help exits 0
        cli_main(["train", "--help"])
    text = capsys.readouterr().out
    for opt in ("--preset", "--data", "--split", "--epochs", "--batch-size", "--hidden", "--device", "--seed",
                "--output", "--resume", "--max-time", "--max-steps", "--loss", "--mse-weight", "--average",
                "--ema-decay", "--swa-epochs", "--swa-start"):
        assert opt in text
