"""The training options travel into the bundle manifest's ``training`` block."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from model.bundle import read_manifest
from training.export import export_bundle
from training.manifest import training_options
from training.train import train_model


def test_default_bundle_records_the_papers_training(tiny_bundle) -> None:
    assert read_manifest(tiny_bundle).training == {"loss": "masked_mae", "average": "none"}


def test_only_the_settings_that_apply_are_recorded(tiny_checkpoint) -> None:
    loop = {**tiny_checkpoint.train_settings["loop"], "loss": "mae_mse", "mse_weight": 0.25,
            "average": "swa", "swa_epochs": 3, "swa_start": 10}
    ckpt = dataclasses.replace(tiny_checkpoint, train_settings={**tiny_checkpoint.train_settings, "loop": loop})
    assert training_options(ckpt) == {"loss": "mae_mse", "mse_weight": 0.25, "average": "swa",
                                      "swa_epochs": 3, "swa_start": 10}
    assert training_options(dataclasses.replace(tiny_checkpoint, train_settings={})) is None


def test_an_ema_run_exports_a_bundle_that_says_so(tmp_path: Path) -> None:
    ckpt = train_model("synthetic", data_options={"num_sensors": 4, "days": 3}, hidden=8,
                       embedding_dims=(4, 4, 4, 4), max_steps=4, epochs=1, batch_size=8, device="cpu",
                       progress=False, loss="mae_mse", mse_weight=0.5, average="ema", ema_decay=0.9,
                       output=tmp_path / "run")
    export_bundle(ckpt, tmp_path / "bundle")
    assert read_manifest(tmp_path / "bundle").training == {"loss": "mae_mse", "mse_weight": 0.5,
                                                           "average": "ema", "ema_decay": 0.9}
