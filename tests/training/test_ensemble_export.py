"""``himnet ensemble``: K checkpoints -> one bundle, checked member by member (real ONNX Runtime)."""

from __future__ import annotations

import collections
import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from himnet.cli import main as cli_main
from model.bundle import read_manifest, verify_bundle
from model.ensemble import ENSEMBLE_OUTPUTS
from tests.tiny_model import tiny_eval_windows
from training.ensemble_export import export_ensemble
from training.export import build_serving
from training.parity import ExportError, ort_session


def test_manifest_declares_the_ensemble_and_its_parity(tiny_ensemble_bundle):
    m = verify_bundle(tiny_ensemble_bundle)
    assert m.ensemble["members"] == 3 and m.ensemble["seeds"] == [0, 1, 2]
    assert (m.ensemble["spread_output"], m.ensemble["member_output"]) == ("spread", "member_forecasts")
    assert len(set(m.ensemble["member_weights_sha256"])) == 3
    assert set(m.parity) == {"onnx", "torchscript"}
    for backend in m.parity.values():
        assert set(backend) == {"1", "16"} and all(0 <= d <= 1e-4 for d in backend.values())
    assert set(m.ensemble["parity_per_output"]["onnx"]) == set(ENSEMBLE_OUTPUTS)
    assert len(m.metrics["members"]) == 3
    assert m.intervals is None and "intervals.npz" not in m.files


def test_single_model_manifest_has_no_ensemble_key(tiny_bundle):
    body = json.loads((tiny_bundle / "manifest.json").read_text())
    assert "ensemble" not in body and read_manifest(tiny_bundle).ensemble is None


def test_one_graph_runs_the_members_together(tiny_ensemble_bundle):
    graph = onnx.load(str(tiny_ensemble_bundle / "model.onnx")).graph
    ops = collections.Counter(node.op_type for node in graph.node)
    # as in a single model's graph: one Softmax/Relu (the dynamic A_st), batched over members
    assert ops["Softmax"] == 1 and ops["Relu"] == 1 and ops["Einsum"] == 0
    dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert dims == {"forecast": ["batch", 12, 8], "st_embedding": ["batch", 8, 5],
                    "spread": ["batch", 12, 8], "member_forecasts": ["batch", 3, 12, 8]}


@pytest.mark.parametrize("batch", [1, 16])
def test_onnx_outputs_are_the_members_own_forecasts(tiny_ensemble_bundle, tiny_members, batch):
    session = ort_session(tiny_ensemble_bundle / "model.onnx")
    inputs = tiny_eval_windows(batch, seed=3)
    mean, st, spread, each = session.run(None, dict(zip(("readings", "input_time", "target_time"), inputs)))
    with torch.no_grad():
        alone = [build_serving(c, "pool")(*(torch.from_numpy(a) for a in inputs)) for c in tiny_members]
    forecasts = np.stack([f.numpy() for f, _ in alone], axis=1)  # B, K, T, N
    np.testing.assert_allclose(each, forecasts, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(mean, forecasts.mean(axis=1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(spread, forecasts.std(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(st, alone[0][1].numpy(), atol=1e-5)
    assert spread.mean() > 1e-3


def test_members_that_do_not_fit_together_are_refused(tiny_members, tmp_path):
    a, b, _ = tiny_members
    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match="at least 2 checkpoints"):
        export_ensemble([a], out)
    with pytest.raises(ExportError, match="member 1: scaler_mean differs from member 0's"):
        export_ensemble([a, dataclasses.replace(b, scaler_mean=b.scaler_mean + 1)], out)
    with pytest.raises(ExportError, match=r"member 1: sensor_ids differs"):
        export_ensemble([a, dataclasses.replace(b, sensor_ids=[f"x{i}" for i in range(8)])], out)
    with pytest.raises(ExportError, match=r"model config differs from member 0's in \['tf_decay_steps'\]"):
        export_ensemble([a, dataclasses.replace(b, config=b.config.replace(tf_decay_steps=1.0))], out)
    with pytest.raises(ExportError, match="same weights as member 0"):
        export_ensemble([a, a], out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_writes_a_bundle_and_reports_bad_input(tiny_members, tmp_path, capsys):
    paths = []
    for i, c in enumerate(tiny_members[:2]):
        paths.append(str(c.save(tmp_path / f"seed{i}.pt")))
    out = tmp_path / "ens"
    assert cli_main(["ensemble", *paths, "--out", str(out), "--contraction", "pool"]) == 0
    assert verify_bundle(out).ensemble["members"] == 2
    assert "ensemble of 2 himnet" in capsys.readouterr().out
    assert cli_main(["ensemble", paths[0], paths[0], "--out", str(tmp_path / "x")]) == 1
    assert "same weights as" in capsys.readouterr().err
