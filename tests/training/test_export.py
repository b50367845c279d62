"""``himnet export``: checkpoint -> bundle, checked against eager PyTorch (real ONNX Runtime)."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import pytest
import torch

from model.config import CONTRACTIONS
from model import HimNet
from model.bundle import load_embeddings, read_manifest, verify_bundle
from model.serving import ServingHimNet
from studies.naive_himnet import NaiveHimNet
from tests.tiny_model import tiny_eval_windows
from training import export as export_mod
from himnet.cli import main as cli_main
from training.export import DEFAULT_RTOL, DEFAULT_TOLERANCE, ExportError, export_bundle
from training.parity import eager_reference, max_diff


def test_parity_recorded_for_both_backends_and_batches(tiny_bundle):
    parity = read_manifest(tiny_bundle).parity
    assert set(parity) == {"onnx", "torchscript"}
    for backend in parity.values():
        assert set(backend) == {"1", "16"}
        assert all(0.0 <= diff <= 1e-4 for diff in backend.values())


def test_weights_are_the_official_layout(tiny_bundle, tiny_checkpoint):
    state = torch.load(tiny_bundle / "weights.pt", weights_only=True)
    assert isinstance(state, dict)
    assert set(state) == set(tiny_checkpoint.state_dict)
    for key, value in tiny_checkpoint.state_dict.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    NaiveHimNet(tiny_checkpoint.config).load_state_dict(state)  # the spec's independent model takes them as is
    assert "decoder.cells.0.gate.weights_pool" in state and "node_embedding" in state


def test_onnx_graph_is_matmul_based_with_static_parts_folded(tiny_bundle):
    graph = onnx.load(str(tiny_bundle / "model.onnx")).graph
    ops = collections.Counter(node.op_type for node in graph.node)
    assert ops["Einsum"] == 0
    assert ops["MatMul"] > 0
    # Graph A = softmax(relu(E Eᵀ)) is a constant: the only Softmax/Relu left build the dynamic A_st.
    assert ops["Softmax"] == 1 and ops["Relu"] == 1
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in (*graph.input, *graph.output)}
    assert dims == {"readings": ["batch", 12, 8], "input_time": ["batch", 12, 2],
                    "target_time": ["batch", 12, 2], "forecast": ["batch", 12, 8],
                    "st_embedding": ["batch", 8, 5]}


@pytest.mark.parametrize("contraction", CONTRACTIONS)
def test_serving_module_matches_eager_forward(tiny_checkpoint, contraction):
    """The wrapper (scaling and broadcasting inside) computes HimNet.forward in raw units."""
    c = tiny_checkpoint
    serving = export_mod.build_serving(c, contraction)
    r, ti, tt = tiny_eval_windows(4)
    with torch.no_grad():
        got = serving(*(torch.from_numpy(a) for a in (r, ti, tt)))
    want = eager_reference(c.build_model(), c.scaler_mean, c.scaler_std, r, ti, tt)
    np.testing.assert_allclose(got[0].numpy(), want[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got[1].numpy(), want[1], atol=1e-5, rtol=0)
    assert want[0].shape == (4, 12, 8) and want[1].shape == (4, 8, 5)


def test_failed_parity_leaves_no_bundle(tiny_checkpoint, tmp_path, monkeypatch):
    forward = ServingHimNet.forward

    def off_by_a_little(self, readings, input_time, target_time):  # an export that drifts
        forecast, st = forward(self, readings, input_time, target_time)
        return forecast + 1e-3, st

    monkeypatch.setattr(ServingHimNet, "forward", off_by_a_little)
    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match="differs from eager PyTorch"):
        export_bundle(tiny_checkpoint, out, contraction="pool")
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor its temporary directory


def test_existing_directory_is_not_overwritten_without_asking(tiny_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(tiny_checkpoint, out)
    assert (out / "keep.txt").read_text() == "mine"


def test_parity_data_with_wrong_shape_is_refused(tiny_checkpoint, tmp_path):
    r, ti, tt = tiny_eval_windows(2)
    with pytest.raises(ExportError, match="readings has shape"):
        export_bundle(tiny_checkpoint, tmp_path / "b", parity_data=(r[:, :, :5], ti, tt))
    assert not (tmp_path / "b").exists()


def test_cli_export_with_version_and_real_parity_windows(tiny_checkpoint, tmp_path, capsys):
    ckpt = tiny_checkpoint.save(tmp_path / "tiny.ckpt")
    r, ti, tt = tiny_eval_windows(5)
    np.savez(tmp_path / "windows.npz", readings=r, input_time=ti, target_time=tt)
    out = tmp_path / "bundle"
    rc = cli_main(["export", str(ckpt), "--out", str(out), "--version", "2024.03-a",
                   "--contraction", "pool", "--parity-data", str(tmp_path / "windows.npz")])
    assert rc == 0
    m = verify_bundle(out)
    assert m.model_version == "2024.03-a"
    assert m.config["contraction"] == "pool" and m.export["contraction_latency_ms"] == {}
    assert m.export["parity_data"].endswith("windows.npz")
    assert "parity" in capsys.readouterr().out
    # A second export to the same place is refused, and says so on stderr with exit code 1.
    assert cli_main(["export", str(ckpt), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    json.loads((out / "manifest.json").read_text())  # untouched and still valid


def test_ablation_without_time_tables_exports(tiny_checkpoint, tmp_path):
    """An ablated model (no time tables, plain temporal encoder) exports and keeps parity."""
    base = tiny_checkpoint
    torch.manual_seed(3)
    cfg = base.config.replace(ablation="no_tmp")
    model = HimNet(cfg)
    ckpt = type(base)(config=cfg, state_dict=model.state_dict(), scaler_mean=base.scaler_mean,
                      scaler_std=base.scaler_std, sensor_ids=base.sensor_ids, interval_minutes=5,
                      dataset="tiny-ablation")
    m = export_bundle(ckpt, tmp_path / "b", contraction="generate")
    assert set(load_embeddings(tmp_path / "b")) == {"node_embedding", "adjacency"}
    assert max(max(v.values()) for v in m.parity.values()) <= 1e-4
    assert m.timezone is None and m.coords is None


def test_static_parts_dropped_while_tracing_are_refused(tiny_checkpoint, tmp_path):
    """If HimNet's cache is gone (eval()/to() after build_serving), graph A would be traced again
    as a constant per use; write_onnx refuses the file instead of shipping it."""
    serving = export_mod.build_serving(tiny_checkpoint, "pool")
    serving.model.eval()  # drops HimNet's cache of A and the spatial weights
    example = tuple(torch.from_numpy(a) for a in tiny_eval_windows(2))
    with pytest.raises(ExportError, match="static_0"):
        export_mod.write_onnx(serving, tmp_path / "m.onnx", example, 17)


def test_parity_rule_allows_float32_rounding_at_speed_scale_but_not_drift():
    """|exported - eager| <= 1e-4 + 1e-5·|eager|: a 70 mph forecast may move by float32 rounding
    through 24 recurrent steps (3e-4, as measured on real LOS-LOOP models), not by an export bug."""
    st = np.zeros((1, 2, 3), np.float32)
    want = (np.full((1, 12, 2), 70.0, np.float32), st)

    def excess(delta: float, base: tuple = want) -> float:
        return max_diff((base[0] + np.float32(delta), st), base, "onnx", 1, DEFAULT_RTOL)[1]

    assert excess(3e-4) <= DEFAULT_TOLERANCE  # 3e-4 <= 1e-4 + 7e-4
    assert excess(1e-3) > DEFAULT_TOLERANCE
    small = (np.full((1, 12, 2), 1.0, np.float32), st)  # near-zero outputs keep the absolute limit
    assert excess(2e-4, small) > DEFAULT_TOLERANCE
    assert max_diff((want[0] + np.float32(3e-4), st), want, "onnx", 1)[0] == pytest.approx(3e-4, rel=0.01)
