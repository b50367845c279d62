"""Weight averaging: EMA and SWA against hand formulas, and through the loop (validated weights
are the ones returned, resume continues exactly, a resume under another --average is refused)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from training.averaging import EmaAverager, SwaAverager, check_average, make_averager
from training.datasets import generate_synthetic
from training.distributed import DistInfo
from training.loop import validation_loss
from training.train import TrainSettings, resolve, train_model
from training.windows import prepare

TINY = dict(hidden=8, embedding_dims=(4, 4, 4, 4), batch_size=16, device="cpu", progress=False, seed=0,
            split="7:1:2", patience=100)


def _set(model: nn.Linear, value: float) -> torch.Tensor:
    """Give every weight ``value`` (as an optimiser step would move them); the new flat weights."""
    with torch.no_grad():
        model.weight.fill_(value)
        model.bias.fill_(-value)
    return _flat(model).clone()


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_ema_after_k_steps_is_the_hand_formula() -> None:
    model = nn.Linear(3, 1)
    ema = EmaAverager(model, decay=0.9)
    assert ema.averaged() is None  # nothing averaged before the first step
    weights = []
    for value in (1.0, 2.0, 4.0):
        weights.append(_set(model, value))
        ema.after_step(model)
    # e1 = w1; e2 = 0.9 e1 + 0.1 w2; e3 = 0.9 e2 + 0.1 w3
    e = weights[0]
    for w in weights[1:]:
        e = 0.9 * e + 0.1 * w
    torch.testing.assert_close(_flat(ema.averaged()), e)
    assert float(e[0]) == pytest.approx(0.9 * (0.9 * 1 + 0.1 * 2) + 0.1 * 4)
    again = EmaAverager(nn.Linear(3, 1), decay=0.9)
    again.load_state_dict(ema.state_dict())
    torch.testing.assert_close(_flat(again.averaged()), e)


def test_swa_is_the_mean_of_the_last_epoch_snapshots() -> None:
    model = nn.Linear(3, 1)
    swa = SwaAverager(model, window=2, start=2)
    swa.after_epoch(model, 1)  # before swa_start: not counted
    assert swa.averaged() is None
    snaps = {}
    for epoch in (2, 3, 4):
        snaps[epoch] = _set(model, float(epoch ** 2))
        swa.after_epoch(model, epoch)
        if epoch == 2:
            torch.testing.assert_close(_flat(swa.averaged()), snaps[2])
    torch.testing.assert_close(_flat(swa.averaged()), (snaps[3] + snaps[4]) / 2)  # window of 2
    swa.after_step(model)  # per-step calls leave SWA alone
    again = SwaAverager(nn.Linear(3, 1), window=2, start=2)
    again.load_state_dict(swa.state_dict())
    torch.testing.assert_close(_flat(again.averaged()), (snaps[3] + snaps[4]) / 2)


def test_options_are_checked() -> None:
    assert check_average("none", None, None, None) == (0.999, 5, 1)
    assert check_average("swa", None, 3, 10) == (0.999, 3, 10)
    assert make_averager("none", nn.Linear(1, 1), 0.9, 5, 1) is None
    with pytest.raises(ValueError, match="unknown --average 'mean'"):
        check_average("mean", None, None, None)
    with pytest.raises(ValueError, match="--ema-decay applies to --average ema only, not swa"):
        check_average("swa", 0.9, None, None)
    with pytest.raises(ValueError, match="apply to --average swa only, not none"):
        check_average("none", None, 3, None)
    with pytest.raises(ValueError, match="between 0 and 1"):
        check_average("ema", 1.0, None, None)
    with pytest.raises(ValueError, match="must be >= 1, got 0 and 1"):
        check_average("swa", None, 0, None)


@pytest.fixture(scope="module")
def small():
    return generate_synthetic(num_sensors=5, days=2, seed=0).subset(steps=slice(0, 400))


@pytest.mark.parametrize("options", [dict(average="ema", ema_decay=0.9), dict(average="swa", swa_epochs=2)])
def test_the_run_returns_the_validated_averaged_weights(small, tmp_path: Path, options) -> None:
    ckpt = train_model(small, **TINY, **options, epochs=3, output=tmp_path)
    hist = ckpt.train_settings["history"]
    assert [h["validated"] for h in hist] == [options["average"]] * 3
    assert ckpt.train_settings["loop"]["average"] == options["average"]
    config, loop, split = resolve(TrainSettings(**TINY, **options), small)
    prepared = prepare(small, split, config.in_steps, config.out_steps)
    val = lambda m: validation_loss(m, prepared.splits["val"], prepared, loop, DistInfo(), torch.device("cpu"))  # noqa: E731
    assert val(ckpt.build_model()) == pytest.approx(ckpt.metrics["best_val_loss"], rel=1e-6)
    raw = torch.load(tmp_path / "resume.pt", weights_only=False)["model"]  # the last raw weights
    assert any(not torch.equal(raw[k], v) for k, v in ckpt.state_dict.items())


@pytest.mark.parametrize("options", [dict(average="ema", ema_decay=0.9), dict(average="swa", swa_epochs=2)])
def test_resume_with_averaging_matches_an_uninterrupted_run(small, tmp_path: Path, options) -> None:
    whole = train_model(small, **TINY, **options, epochs=3, output=tmp_path / "whole")
    train_model(small, **TINY, **options, epochs=2, output=tmp_path / "cut")
    resumed = train_model(small, **TINY, **options, epochs=3, output=tmp_path / "cut", resume=True)
    assert [h["val_loss"] for h in resumed.train_settings["history"]] == \
        [h["val_loss"] for h in whole.train_settings["history"]]
    assert resumed.metrics["best_epoch"] == whole.metrics["best_epoch"]
    for k, v in whole.state_dict.items():
        assert torch.equal(resumed.state_dict[k], v), k
    with pytest.raises(ValueError, match=f"written with --average {options['average']}; resume with the same"):
        train_model(small, **TINY, epochs=4, output=tmp_path / "cut", resume=True)
