"""The served graph (model/serving.py) computes what training computes: same inputs, same decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import CONTRACTIONS
from model.himnet import HimNet
from model.serving import ServingConfigError, ServingHimNet, assemble_inputs
from tests.tiny_model import IN_STEPS, OUT_STEPS, START, synthetic_week
from training.datasets import SensorData, regular_timestamps
from training.windows import Scaler, WindowDataset


def _serving(checkpoint, contraction: str = "generate") -> ServingHimNet:
    model = HimNet(checkpoint.config.replace(contraction=contraction))
    model.load_state_dict(checkpoint.state_dict)
    return ServingHimNet(model.eval(), checkpoint.scaler_mean, checkpoint.scaler_std)


def test_assemble_inputs_places_value_then_time_on_every_node():
    g = torch.Generator().manual_seed(0)
    scaled = torch.randn(2, 3, 4, generator=g)  # B, T_in, N
    t_in, t_out = torch.rand(2, 3, 2, generator=g), torch.rand(2, 5, 2, generator=g)
    x, y_cov = assemble_inputs(scaled, t_in, t_out)
    assert x.shape == (2, 3, 4, 3) and y_cov.shape == (2, 5, 4, 2)
    assert torch.equal(x[..., 0], scaled)
    assert torch.equal(x[..., 1:], t_in[:, :, None].expand(-1, -1, 4, -1))
    assert torch.equal(y_cov, t_out[:, :, None].expand(-1, -1, 4, -1))
    x2, y2 = assemble_inputs(scaled, t_in, t_out, torch.zeros(1, 1, 4, 1))  # the served graph's buffer
    assert torch.equal(x2, x) and torch.equal(y2, y_cov)


def test_training_windows_are_assembled_by_the_same_helper(tiny_checkpoint):
    readings, feats = synthetic_week(8, days=2)
    data = SensorData(readings, regular_timestamps(str(START), len(readings), 5),
                      [f"s{i}" for i in range(8)], 5, "toy")
    scaler = Scaler(tiny_checkpoint.scaler_mean, tiny_checkpoint.scaler_std)
    batch = WindowDataset(data, np.array([0, 7, 300]), scaler, IN_STEPS, OUT_STEPS)[[0, 1, 2]]
    rows_in = torch.tensor([0, 7, 300])[:, None] + torch.arange(IN_STEPS)
    rows_out = rows_in[:, -1:] + 1 + torch.arange(OUT_STEPS)
    scaled = scaler.transform(torch.from_numpy(readings)).float()
    time = torch.from_numpy(feats)
    x, y_cov = assemble_inputs(scaled[rows_in], time[rows_in], time[rows_out])
    assert torch.equal(batch.x, x) and torch.equal(batch.y_cov, y_cov)


@pytest.mark.parametrize("contraction", CONTRACTIONS)
def test_served_forward_equals_eager_forward_on_training_windows(tiny_checkpoint, contraction):
    """Raw windows through the served module = HimNet.forward on the training batch of them."""
    c = tiny_checkpoint
    readings, _ = synthetic_week(8, days=2)
    data = SensorData(readings, regular_timestamps(str(START), len(readings), 5),
                      [f"s{i}" for i in range(8)], 5, "toy")
    scaler = Scaler(c.scaler_mean, c.scaler_std)
    ds = WindowDataset(data, np.array([3, 100, 250, 400]), scaler, IN_STEPS, OUT_STEPS)
    batch = ds[[0, 1, 2, 3]]
    serving = _serving(c, contraction)
    rows_in = torch.from_numpy(ds.starts)[:, None] + torch.arange(IN_STEPS)
    rows_out = rows_in[:, -1:] + 1 + torch.arange(OUT_STEPS)
    with torch.no_grad():
        forecast, e_st = serving(ds.raw[rows_in], ds.time[rows_in], ds.time[rows_out])
        want = scaler.inverse(serving.model(batch.x, batch.y_cov)[..., 0])  # B, T_out, N
        want_e = serving.model.st_embedding(serving.model.encode(batch.x))
    # Same inputs, same encode and decode: equal to the bit, not merely close.
    torch.testing.assert_close(forecast, want, rtol=0, atol=0)
    torch.testing.assert_close(e_st, want_e, rtol=0, atol=0)
    assert forecast.shape == (4, OUT_STEPS, 8) and e_st.shape == (4, 8, 5)


def test_served_graph_and_training_run_the_same_decode(tiny_checkpoint, monkeypatch):
    """Both paths go through HimNet.decode: the loop exists once."""
    calls: list[tuple[str, bool]] = []
    decode = HimNet.decode

    def spy(self, h, y_cov, labels=None, p_teacher=0.0):
        calls.append(("decode", labels is not None))
        return decode(self, h, y_cov, labels, p_teacher)

    monkeypatch.setattr(HimNet, "decode", spy)
    serving = _serving(tiny_checkpoint)
    r = torch.full((2, IN_STEPS, 8), 60.0)
    t_in, t_out = torch.zeros(2, IN_STEPS, 2), torch.zeros(2, OUT_STEPS, 2)
    with torch.no_grad():
        serving(r, t_in, t_out)
    x, y_cov = assemble_inputs((r - serving.mean) / serving.std, t_in, t_out)
    model = serving.model.train()  # training forward with labels: teacher forcing reaches decode
    model(x, y_cov, labels=torch.zeros(2, OUT_STEPS, 8, 1), batches_seen=0)
    assert calls == [("decode", False), ("decode", True)]


def test_teacher_forcing_feeds_labels_only_in_training(tiny_checkpoint):
    model = HimNet(tiny_checkpoint.config)
    model.load_state_dict(tiny_checkpoint.state_dict)
    g = torch.Generator().manual_seed(1)
    x, y_cov = torch.rand(2, IN_STEPS, 8, 3, generator=g), torch.rand(2, OUT_STEPS, 8, 2, generator=g)
    labels = torch.full((2, OUT_STEPS, 8, 1), 50.0)  # far from any forecast: visible when fed
    with torch.no_grad():
        plain, _ = model.eval().decode(model.encode(x), y_cov)
        assert torch.equal(model(x, y_cov, labels), plain)  # eval: labels ignored
        forced, _ = model.decode(model.encode(x), y_cov, labels, p_teacher=1.0)
    assert torch.equal(forced[:, 0], plain[:, 0]) and not torch.allclose(forced[:, 1:], plain[:, 1:])


def test_serving_refuses_a_model_it_cannot_serve(tiny_checkpoint):
    model = HimNet(tiny_checkpoint.config)
    with pytest.raises(ServingConfigError, match="export a model in eval mode"):
        ServingHimNet(model.train(), 0.0, 1.0)
    wide = HimNet(tiny_checkpoint.config.replace(output_dim=2))
    with pytest.raises(ServingConfigError, match=r"needs output_dim = 1, .*\(got 2, 3, 2\)"):
        ServingHimNet(wide.eval(), 0.0, 1.0)
