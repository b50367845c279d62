"""The mixed mae_mse loss: its value by hand, the data's missing rule, and the option's checks."""

from __future__ import annotations

import pytest
import torch

from model.missing import NAN, ZERO
from training.datasets import generate_synthetic
from training.metrics import DEFAULT_MSE_WEIGHT, LOSSES, compute_loss, loss_terms
from training.train import TrainSettings, resolve


def test_value_is_mae_plus_weighted_mse_over_present_targets() -> None:
    pred = torch.tensor([1.0, 2.0, 3.0, 100.0])
    target = torch.tensor([2.0, 2.0, 5.0, 0.0])  # zero rule: the last target is missing
    # errors 1, 0, 2 -> |e| sum 3, e² sum 5, 3 targets
    total, count = loss_terms("mae_mse", pred, target, ZERO, mse_weight=0.5)
    assert (total.item(), count.item()) == pytest.approx((3 + 0.5 * 5, 3))
    assert compute_loss("mae_mse", pred, target, ZERO, 0.5).item() == pytest.approx((3 + 2.5) / 3)
    assert compute_loss("mae_mse", pred, target).item() == pytest.approx((3 + DEFAULT_MSE_WEIGHT * 5) / 3)
    # w = 0 is masked MAE; the two parts share one count, so it is MAE + w·MSE exactly
    assert compute_loss("mae_mse", pred, target, ZERO, 0.0).item() == pytest.approx(
        compute_loss("masked_mae", pred, target).item())
    w = 2.0
    assert compute_loss("mae_mse", pred, target, ZERO, w).item() == pytest.approx(
        compute_loss("masked_mae", pred, target).item() + w * compute_loss("masked_mse", pred, target).item())
    assert "mae_mse" in LOSSES


def test_batch_sums_add_up_to_the_whole() -> None:
    """The (sum, count) pairs of two halves add up to the whole: what DDP's all-reduce relies on."""
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(8, 12, 5, generator=gen), torch.randn(8, 12, 5, generator=gen)
    target[target < -1.0] = 0.0
    whole = loss_terms("mae_mse", pred, target, ZERO, 0.3)
    parts = [loss_terms("mae_mse", pred[s], target[s], ZERO, 0.3) for s in (slice(0, 3), slice(3, 8))]
    assert sum(p[0] for p in parts).item() == pytest.approx(whole[0].item(), rel=1e-6)
    assert sum(p[1] for p in parts).item() == whole[1].item()


def test_nan_rule_counts_zeros_and_never_leaks_nan() -> None:
    pred = torch.tensor([1.0, 9.0, 3.0, 100.0], requires_grad=True)
    target = torch.tensor([2.0, float("nan"), 0.0, 5.0])  # nan rule: 0 is a reading, NaN a gap
    loss = compute_loss("mae_mse", pred, target, NAN, 0.5)
    # errors 1, 3, 95 over 3 targets
    assert loss.item() == pytest.approx((1 + 3 + 95 + 0.5 * (1 + 9 + 95 ** 2)) / 3)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[1].item() == 0.0
    all_gaps = torch.full((3,), float("nan"))
    assert compute_loss("mae_mse", torch.ones(3), all_gaps, NAN).item() == 0.0


def test_mse_weight_option_is_checked() -> None:
    data = generate_synthetic(num_sensors=3, days=1, seed=0)
    _, loop, _ = resolve(TrainSettings(loss="mae_mse", mse_weight=0.25), data)
    assert (loop.loss, loop.mse_weight) == ("mae_mse", 0.25)
    assert resolve(TrainSettings(loss="mae_mse"), data)[1].mse_weight == DEFAULT_MSE_WEIGHT
    with pytest.raises(ValueError, match="applies to --loss mae_mse only, not masked_mae"):
        resolve(TrainSettings(loss="masked_mae", mse_weight=0.5), data)
    with pytest.raises(ValueError, match="finite number >= 0, got -1.0"):
        resolve(TrainSettings(loss="mae_mse", mse_weight=-1.0), data)


def test_cli_trains_with_mae_mse_and_refuses_a_stray_weight(tmp_path, capsys) -> None:
    from himnet.cli import main as cli_main
    from training.checkpoint import Checkpoint

    base = ["train", "--data", "synthetic", "--data-option", "num_sensors=4", "--data-option", "days=3",
            "--hidden", "8", "--embedding-dims", "4,4,4,4", "--max-steps", "3", "--epochs", "1",
            "--device", "cpu", "--no-progress", "--output", str(tmp_path / "run")]
    assert cli_main([*base, "--loss", "mae_mse", "--mse-weight", "0.5"]) == 0
    ckpt = Checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    assert ckpt.train_settings["loop"]["loss"] == "mae_mse" and ckpt.train_settings["loop"]["mse_weight"] == 0.5
    capsys.readouterr()
    assert cli_main([*base, "--loss", "huber", "--mse-weight", "0.5"]) == 2
    assert "applies to --loss mae_mse only" in capsys.readouterr().err
