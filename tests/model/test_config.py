from __future__ import annotations

import pytest
import torch

from model import ABLATIONS, HimNet, HimNetConfig, get_preset


def n_params(cfg: HimNetConfig) -> int:
    return sum(p.numel() for p in HimNet(cfg).parameters())


@pytest.mark.parametrize("preset, expected", [("metr-la", 1_250_937), ("pems08", 2_069_573)])
def test_parameter_counts_match_official(preset, expected):
    assert n_params(get_preset(preset).model) == expected


def test_all_six_presets_build_with_their_node_counts():
    for name, n in {"metr-la": 207, "pems-bay": 325, "pems03": 358, "pems04": 307, "pems07": 883,
                    "pems08": 170}.items():
        assert get_preset(name).model.num_nodes == n
        assert get_preset(name.upper()).name == name


def test_preset_training_settings():
    p = get_preset("pems04")
    assert (p.loss, p.weight_decay, p.lr_milestones, p.model.tf_decay_steps) == ("huber", 1e-4, (30, 50), 4000)
    assert p.model.tod_embedding_dim == 12 and p.model.dow_embedding_dim == 4
    assert get_preset("metr-la").split == (0.7, 0.1, 0.2)


def test_bad_configs_are_refused_clearly():
    with pytest.raises(ValueError, match="cheb_k"):
        HimNetConfig(cheb_k=1)
    with pytest.raises(ValueError, match="ablation"):
        HimNetConfig(ablation="no_everything")
    with pytest.raises(ValueError, match="unknown HimNet config keys"):
        HimNetConfig.from_dict({"num_nodes": 3, "hiden_dim": 4})
    with pytest.raises(KeyError, match="metr-la"):
        get_preset("metr-xx")


def test_ablations_drop_what_they_do_not_use():
    base = HimNetConfig(num_nodes=5, hidden_dim=4)
    keys = {ab: set(HimNet(base.replace(ablation=ab)).state_dict()) for ab in ABLATIONS}
    assert "node_embedding" not in keys["no_e_s"]
    assert "tod_embedding.weight" not in keys["no_e_t"] and "tod_embedding.weight" not in keys["no_tmp"]
    assert "st_proj.weight" not in keys["no_e_st"]
    assert "encoder_t.cells.0.gate.weights" in keys["no_tmp"]
    assert "encoder_s.cells.0.gate.weights" in keys["no_smp"]
    assert "decoder.cells.0.gate.weights" in keys["no_stmp"]
    assert "decoder.cells.0.gate.weights_pool" in keys["none"]


@pytest.mark.parametrize("dims", [(4, 0), (0, 3)])
def test_width_zero_time_table_is_kept_but_never_indexed(dims):
    """LOS-LOOP trains with d_dow = 0. The (7, 0) table stays in the state dict (official layout)
    but is skipped in the forward pass: CUDA's embedding backward on a width-0 table crashed
    training with an illegal memory access on the H200; on the CPU it left a 0-size gradient."""
    torch.manual_seed(0)
    d_tod, d_dow = dims
    model = HimNet(HimNetConfig(num_nodes=5, hidden_dim=4, tod_embedding_dim=d_tod, dow_embedding_dim=d_dow))
    assert model.state_dict()["dow_embedding.weight"].shape == (7, d_dow)
    assert model.state_dict()["tod_embedding.weight"].shape == (288, d_tod)
    x = torch.rand(2, 12, 5, 3)
    x[..., 2] = torch.randint(0, 7, (2, 12, 5)).float()
    y_cov = torch.rand(2, 12, 5, 2)
    model(x, y_cov).sum().backward()
    empty, used = ((model.dow_embedding, model.tod_embedding) if d_dow == 0
                   else (model.tod_embedding, model.dow_embedding))
    assert empty.weight.grad is None
    assert used.weight.grad is not None and used.weight.grad.abs().sum() > 0
