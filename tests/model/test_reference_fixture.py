"""The official implementation's outputs, loss and gradients, reproduced from its own weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.config import CONTRACTIONS
from model import HimNet
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def fixture():
    return np.load(shared_path("fixtures", "himnet_reference_metr_la.npz"))


def official_model(fx, **overrides) -> HimNet:
    args = json.loads(str(fx["model_args_json"]))
    state = {k.removeprefix("param/"): torch.from_numpy(fx[k]) for k in fx.files if k.startswith("param/")}
    return HimNet.from_official(state, args, **overrides)


@pytest.mark.parametrize("contraction", CONTRACTIONS)
def test_eval_outputs_match_official(fixture, contraction):
    model = official_model(fixture, contraction=contraction).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(fixture["x"]), torch.from_numpy(fixture["y_cov"]))
    assert out.shape == fixture["out_eval"].shape
    np.testing.assert_allclose(out.numpy(), fixture["out_eval"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("contraction", CONTRACTIONS)
def test_training_loss_and_gradients_match_official(fixture, contraction):
    model = official_model(fixture, contraction=contraction, use_teacher_forcing=False).train()
    out = model(torch.from_numpy(fixture["x"]), torch.from_numpy(fixture["y_cov"]),
                torch.from_numpy(fixture["labels"]), batches_seen=0)
    loss = (out - torch.from_numpy(fixture["labels"])).abs().mean()
    loss.backward()
    assert abs(loss.item() - float(fixture["loss_train_mae"])) <= 1e-6
    grads = {k.removeprefix("grad/") for k in fixture.files if k.startswith("grad/")}
    assert grads == {k for k, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        ref = fixture[f"grad/{name}"]
        err = np.abs(p.grad.numpy() - ref).max() / np.abs(ref).max()
        assert err <= 1e-5, f"{name}: gradient off by {err:.2e} of its largest entry"


def test_state_dict_round_trips_in_official_layout(fixture):
    model = official_model(fixture)
    state = model.state_dict()
    official = {k.removeprefix("param/"): fixture[k] for k in fixture.files if k.startswith("param/")}
    assert set(state) == set(official)
    for key, value in official.items():
        assert tuple(state[key].shape) == value.shape
        np.testing.assert_array_equal(state[key].numpy(), value)
