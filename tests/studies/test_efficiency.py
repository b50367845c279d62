"""``himnet efficiency``: the HimNet-Θ′ size formula (≈ 10.9 billion for METR-LA) and the
measurements of HimNet against its naive per-step form."""

from __future__ import annotations

import pytest

from model import HimNet, get_preset
from model.himnet import HimGCRU
from studies import speed
from himnet.cli import main
from studies.efficiency import (
    cell_parameters,
    format_efficiency,
    measure,
    stack_parameters,
    theta_prime_parameters,
)


def test_theta_prime_metr_la_is_10_9_billion():
    cfg = get_preset("metr-la").model
    tp = theta_prime_parameters(cfg)
    p = 25_920  # K(C+H)·2H + 2H + K(C+H)·H + H with K = 2, C = 3, H = 64
    contexts = 288 * 7
    assert tp["spatial_encoder"] == 207 * p
    assert tp["temporal_encoder"] == contexts * p
    assert tp["spatiotemporal_decoder"] == 207 * contexts * p
    assert tp["total"] == 10_874_347_265
    assert round(tp["total"] / 1e9, 1) == 10.9
    assert tp["total"] / sum(q.numel() for q in HimNet(cfg).parameters()) > 5000


@pytest.mark.parametrize("in_dim, hidden, k", [(3, 64, 2), (3, 8, 3), (8, 8, 2)])
def test_cell_count_matches_a_plain_model_cell(in_dim, hidden, k):
    """The per-context count is exactly what one plain (axis none) cell of the model holds."""
    cell = HimGCRU(in_dim, hidden, k, embed_dim=4, axis="none")
    assert cell_parameters(in_dim, hidden, k) == sum(q.numel() for q in cell.parameters())


def test_layers_and_other_presets():
    assert stack_parameters(3, 8, 2, 2) == cell_parameters(3, 8, 2) + cell_parameters(8, 8, 2)
    cfg = get_preset("pems08").model  # H = 96: contexts × P(96)
    tp = theta_prime_parameters(cfg)
    assert tp["total"] == (170 + 2016 + 170 * 2016) * cell_parameters(3, 96, 2) + 97


def test_measure_compares_with_the_naive_form():
    cfg = get_preset("metr-la").model.replace(num_nodes=6, hidden_dim=4, in_steps=3, out_steps=3)
    res = measure(cfg, batch_size=2, repeats=1, naive_repeats=1, steps_in_epoch=10, dataset="x", threads=1,
                  memory=False)
    rows = res.rows
    assert rows["parameters"]["himnet"] == rows["parameters"]["naive"] > 0
    for name in ("training step, batch 2 (ms)", "inference latency, batch 1 (ms)", "inference latency, batch 2 (ms)"):
        assert rows[name]["himnet"] is not None and rows[name]["naive"] is not None, name
        assert rows[name]["himnet"] >= 0 and rows[name]["naive"] >= 0
    assert rows["epoch (s, estimated)"]["himnet"] == pytest.approx(rows["training step, batch 2 (ms)"]["himnet"] / 100)
    text = format_efficiency(res)
    assert "HimNet-Θ′" in text and "naive" in text and "epoch = 10 steps" in text


def test_peak_memory_of_the_naive_form_is_above_himnets():
    """Each in a fresh child process. The naive form keeps every step's regenerated parameters for
    the backward pass, so its training step needs clearly more memory (measured on this size:
    ~50 MiB against ~30 MiB)."""
    cfg = get_preset("metr-la").model.replace(num_nodes=30, hidden_dim=32, in_steps=12, out_steps=12)
    fast = speed.peak_memory("fast", cfg, 2, threads=1)
    naive = speed.peak_memory("naive", cfg, 2, threads=1)
    assert isinstance(fast, float) and 0.0 < fast < 1024 and 0.0 < naive < 1024
    assert naive > 1.3 * fast, (naive, fast)


def test_cli(capsys):
    code = main(["efficiency", "--data", "synthetic", "--data-option", "num_sensors=5", "--data-option", "days=2",
                 "--hidden", "4", "--repeats", "1", "--naive-repeats", "1", "--no-memory", "--threads", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "HimNet N=5 H=4" in out and "training step, batch 16 (ms)" in out and "steps of batch 16" in out
