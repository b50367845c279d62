"""The stacked ensemble module: each member computes what its own ServingHimNet computes."""

from __future__ import annotations

import pytest
import torch

from model.config import HimNetConfig
from model.ensemble import EnsembleHimNet
from model.himnet import HimNet
from model.serving import ServingConfigError, ServingHimNet
from tests.tiny_model import tiny_eval_windows

TINY = dict(num_nodes=8, hidden_dim=8, tod_embedding_dim=4, dow_embedding_dim=3, node_embedding_dim=4,
            st_embedding_dim=5)


def _members(k: int, **config) -> list[ServingHimNet]:
    """K randomly initialised members (seeds 0..K-1) in serving form."""
    from model.config import HimNetConfig

    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(ServingHimNet(HimNet(HimNetConfig(**{**TINY, **config})).eval(), 60.0, 12.0))
    return out


@pytest.mark.parametrize("config", [{"contraction": "generate"}, {"contraction": "pool"}, {"contraction": "pool_all"},
                                    {"contraction": "auto", "num_layers": 2}, {"ablation": "no_smp"},
                                    {"ablation": "no_tmp"}, {"ablation": "no_e_st"},
                                    {"ablation": "no_stmp"}, {"ablation": "no_e_s"},
                                    {"dow_embedding_dim": 0}])
def test_every_member_matches_its_own_serving_module(config):
    members = _members(3, **config)
    ensemble = EnsembleHimNet(members).eval()
    inputs = tuple(torch.from_numpy(a) for a in tiny_eval_windows(5))
    with torch.no_grad():
        mean, st, spread, each = ensemble(*inputs)
        alone = [m(*inputs) for m in members]
    assert each.shape == (5, 3, 12, 8) and mean.shape == spread.shape == (5, 12, 8)
    for k, (forecast, _) in enumerate(alone):
        torch.testing.assert_close(each[:, k], forecast, rtol=1e-6, atol=1e-5)
    stacked = torch.stack([f for f, _ in alone])  # K, B, T, N
    torch.testing.assert_close(mean, stacked.mean(0), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(spread, stacked.std(0, correction=0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(st, alone[0][1], rtol=1e-6, atol=1e-6)
    assert float(spread.mean()) > 1e-3  # different seeds: the members disagree


def test_members_must_share_config_and_scaler():
    a, b = _members(2)
    with pytest.raises(ServingConfigError, match="at least 2 members"):
        EnsembleHimNet([a])
    other = ServingHimNet(b.model, 61.0, 12.0)
    with pytest.raises(ServingConfigError, match="member 1 has another scaler"):
        EnsembleHimNet([a, other])
    (c,) = _members(1, hidden_dim=6)
    with pytest.raises(ServingConfigError, match="member 1 has another model config"):
        EnsembleHimNet([a, c])


def test_members_scaled_per_sensor_with_log1p():
    """Per-sensor scaling and log1p (model.scaling) travel into the stacked graph unchanged."""
    means, stds = [1.0 + 0.1 * i for i in range(8)], [0.5 + 0.05 * i for i in range(8)]
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(ServingHimNet(HimNet(HimNetConfig(**TINY)).eval(), means, stds, log1p=True))
    ensemble = EnsembleHimNet(members).eval()
    readings, t_in, t_out = (torch.from_numpy(a) for a in tiny_eval_windows(4))
    counts = readings.abs().round()  # log1p needs readings >= 0
    with torch.no_grad():
        mean, _, _, each = ensemble(counts, t_in, t_out)
        alone = [m(counts, t_in, t_out)[0] for m in members]
    for k, forecast in enumerate(alone):
        torch.testing.assert_close(each[:, k], forecast, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(mean, torch.stack(alone).mean(0), rtol=1e-5, atol=1e-4)
    plain = ServingHimNet(members[1].model, means, stds, log1p=False)
    with pytest.raises(ServingConfigError, match="member 1 has another scaler"):
        EnsembleHimNet([members[0], plain])
    shifted = ServingHimNet(members[1].model, [m + 1 for m in means], stds, log1p=True)
    with pytest.raises(ServingConfigError, match="member 1 has another scaler"):
        EnsembleHimNet([members[0], shifted])
