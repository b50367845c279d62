"""The optimised model against the naive one written straight from the spec (studies/naive_himnet.py)."""

from __future__ import annotations

import itertools

import pytest
import torch

from model.config import CONTRACTIONS
from model import ABLATIONS, HimNet, HimNetConfig
from studies.naive_himnet import NaiveHimNet

N, T_IN, T_OUT = 7, 4, 3


def make_pair(cfg: HimNetConfig, seed: int) -> tuple[HimNet, NaiveHimNet]:
    torch.manual_seed(seed)
    fast = HimNet(cfg)
    with torch.no_grad():  # non-trivial weights everywhere (biases start at zero otherwise)
        for p in fast.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    naive = NaiveHimNet(cfg)
    naive.load_state_dict(fast.state_dict())  # same keys and shapes: the official layout
    # float64 takes rounding out of the comparison, so any real difference shows.
    return fast.double(), naive.double()


def inputs(cfg: HimNetConfig, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T_IN, N, 3, generator=g)
    slots = torch.randint(0, cfg.steps_per_day, (batch, 1, 1), generator=g).float()
    x[..., 1] = slots / cfg.steps_per_day
    x[..., 2] = torch.randint(0, 7, (batch, 1, 1), generator=g).float()
    y_cov = torch.rand(batch, T_OUT, N, 2, generator=g)
    labels = torch.randn(batch, T_OUT, N, 1, generator=g)
    return x.double(), y_cov.double(), labels.double()


CASES = [
    (layers, k, ablation, contraction)
    for (layers, k), ablation, contraction in itertools.product(
        [(1, 2), (2, 3)], ABLATIONS, CONTRACTIONS)
] + [(2, 2, "none", "auto"), (1, 3, "none", "auto")]


@pytest.mark.parametrize("layers, cheb_k, ablation, contraction", CASES)
def test_matches_naive_in_eval_and_training(layers, cheb_k, ablation, contraction):
    cfg = HimNetConfig(num_nodes=N, in_steps=T_IN, out_steps=T_OUT, hidden_dim=6, num_layers=layers,
                       cheb_k=cheb_k, tod_embedding_dim=3, dow_embedding_dim=2, node_embedding_dim=4,
                       st_embedding_dim=3, steps_per_day=24, tf_decay_steps=2.0, ablation=ablation,
                       contraction=contraction)
    fast, naive = make_pair(cfg, seed=layers * 10 + cheb_k)
    for batch in (1, 5):
        x, y_cov, labels = inputs(cfg, batch, seed=batch)
        fast.eval(), naive.eval()
        with torch.no_grad():
            torch.testing.assert_close(fast(x, y_cov), naive(x, y_cov), rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(fast(x, y_cov), naive(x, y_cov), rtol=1e-10, atol=1e-10)  # cached path

        # Training mode with teacher forcing live: same seed, same draws, same outputs and gradients.
        fast.train(), naive.train()
        fast.zero_grad(), naive.zero_grad()
        torch.manual_seed(123)
        out_fast = fast(x, y_cov, labels, batches_seen=3)
        torch.manual_seed(123)
        out_naive = naive(x, y_cov, labels, batches_seen=3)
        torch.testing.assert_close(out_fast, out_naive, rtol=1e-10, atol=1e-10)
        (out_fast - labels).abs().mean().backward()
        (out_naive - labels).abs().mean().backward()
        naive_grads = dict(naive.named_parameters())
        for name, p in fast.named_parameters():
            ref = naive_grads[name].grad
            scale = ref.abs().max().clamp_min(1e-12)
            assert ((p.grad - ref).abs().max() / scale) <= 1e-10, name


def test_teacher_forcing_only_in_training_and_changes_output():
    cfg = HimNetConfig(num_nodes=N, in_steps=T_IN, out_steps=T_OUT, hidden_dim=6, steps_per_day=24,
                       tf_decay_steps=1e6)  # p ≈ 1: labels are fed back at every step
    fast, _ = make_pair(cfg, seed=0)
    x, y_cov, labels = inputs(cfg, 2, seed=0)
    fast.train()
    with torch.no_grad():
        forced = fast(x, y_cov, labels)
        free = fast(x, y_cov)
    assert not torch.allclose(forced[:, 1:], free[:, 1:])
    torch.testing.assert_close(forced[:, 0], free[:, 0])  # step 0 never sees a label
    fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x, y_cov, labels), free)


def test_eval_cache_refreshes_after_weights_change():
    cfg = HimNetConfig(num_nodes=N, in_steps=T_IN, out_steps=T_OUT, hidden_dim=6, steps_per_day=24)
    fast, naive = make_pair(cfg, seed=1)
    x, y_cov, _ = inputs(cfg, 2, seed=1)
    fast.eval()
    with torch.no_grad():
        before = fast(x, y_cov)
        other, _ = make_pair(cfg, seed=2)
        fast.load_state_dict(other.state_dict())
        naive.load_state_dict(other.state_dict())
        after = fast(x, y_cov)
    assert not torch.allclose(before, after)
    with torch.no_grad():
        torch.testing.assert_close(after, naive.eval()(x, y_cov), rtol=1e-10, atol=1e-10)
