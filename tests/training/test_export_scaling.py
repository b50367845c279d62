"""Export of a per-sensor-scaled, log1p-transformed model: the graph scales inside, parity holds,
the manifest records it; a default export stays as it was."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from model.config import CONTRACTIONS
from model.bundle import BundleError, Manifest, read_manifest
from model.missing import NAN
from model.scaling import gap_readings
from tests.tiny_model import NUM_NODES, count_windows
from training import export as export_mod
from training.parity import eager_reference, ort_session, run_ort, synthetic_parity_data


def test_scaled_checkpoint_is_per_sensor_log1p(scaled_checkpoint) -> None:
    c = scaled_checkpoint
    assert (c.scaling, c.transform, c.missing_rule) == ("per_sensor", "log1p", "nan")
    assert len(c.sensor_means) == NUM_NODES and len(set(c.sensor_means)) == NUM_NODES
    # metrics on raw counts (inverse-transformed), the baselines' units, not log1p space (~10x smaller)
    model, average = (c.metrics["test"][k]["all"]["mae"] for k in ("model", "historical_average"))
    assert 0.5 * average < model < 2 * average


@pytest.mark.parametrize("contraction", CONTRACTIONS)
def test_serving_module_matches_eager_with_per_sensor_log1p(scaled_checkpoint, contraction) -> None:
    c = scaled_checkpoint
    serving = export_mod.build_serving(c, contraction)
    assert tuple(serving.mean.shape) == (1, 1, NUM_NODES) and serving.log1p
    r, ti, tt = count_windows(4)
    r[:, 3, 2] = gap_readings(NAN, np.asarray(c.sensor_means), True)[2]  # a filled gap
    with torch.no_grad():
        got = serving(*(torch.from_numpy(a) for a in (r, ti, tt)))
    s = c.scaler()
    want = eager_reference(c.build_model(), s.mean, s.std, r, ti, tt, log1p=True)
    np.testing.assert_allclose(got[0].numpy(), want[0], atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(got[1].numpy(), want[1], atol=1e-5, rtol=0)
    assert (want[0] > -1).all()  # expm1 of a log-space forecast
    # the scaling matters: the global figures would give another forecast
    other = eager_reference(c.build_model(), c.scaler_mean, c.scaler_std, r, ti, tt, log1p=True)
    assert not np.allclose(other[0], want[0], atol=1e-3)


def test_scaled_bundle_records_scaling_and_runs_in_onnx_runtime(scaled_bundle, scaled_checkpoint) -> None:
    m = read_manifest(scaled_bundle)
    c = scaled_checkpoint
    assert (m.scaling, m.transform) == ("per_sensor", "log1p")
    assert m.sensor_means == pytest.approx(c.sensor_means) and m.sensor_stds == pytest.approx(c.sensor_stds)
    assert m.scaler_mean == pytest.approx(c.scaler_mean)  # the global figures, log1p space
    assert m.missing_value == pytest.approx(np.expm1(c.scaler_mean))
    assert all(d <= 1e-4 + 1e-5 * 50 for b in m.parity.values() for d in b.values())
    np.testing.assert_allclose(m.gap_readings(), np.expm1(c.sensor_means), rtol=1e-6)
    body = json.loads((scaled_bundle / "manifest.json").read_text())
    assert body["scaling"] == "per_sensor" and len(body["sensor_stds"]) == NUM_NODES
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(scaled_bundle / "model.onnx")).graph.initializer}
    assert inits["mean"].shape == (1, 1, NUM_NODES)
    np.testing.assert_allclose(inits["std"].ravel(), c.sensor_stds, rtol=1e-6)
    # a gap filled with the manifest's per-sensor reading is what training fed: 0 after scaling
    r, ti, tt = count_windows(2)
    filled = r.copy()
    filled[:, :, 5] = m.gap_readings()[5]
    s = c.scaler()
    np.testing.assert_allclose(s.transform(filled.astype(np.float64))[:, :, 5], 0.0, atol=1e-6)
    got = run_ort(ort_session(scaled_bundle / "model.onnx"), (filled, ti, tt))
    want = eager_reference(c.build_model(), s.mean, s.std, filled, ti, tt, log1p=True)
    np.testing.assert_allclose(got[0], want[0], atol=1e-4, rtol=1e-5)


def test_synthetic_parity_windows_follow_each_sensor(scaled_checkpoint) -> None:
    data = synthetic_parity_data(scaled_checkpoint)
    assert (data.readings >= 0).all() and np.isfinite(data.readings).all()
    medians = np.median(data.readings, axis=(0, 1))  # N
    np.testing.assert_allclose(np.log1p(medians), scaled_checkpoint.sensor_means, atol=0.6)


def test_default_bundle_keeps_the_global_form(tiny_bundle, tiny_checkpoint) -> None:
    body = json.loads((tiny_bundle / "manifest.json").read_text())
    assert not {"scaling", "transform", "sensor_means", "sensor_stds"} & set(body)  # as before
    m = read_manifest(tiny_bundle)
    assert (m.scaling, m.transform, m.sensor_means) == ("global", "none", None)
    assert m.gap_readings() == m.missing_value == 0.0 and m.typical_reading() == m.scaler_mean
    serving = export_mod.build_serving(tiny_checkpoint, "generate")
    assert isinstance(serving.mean, float) and not serving.log1p  # constants, as before
    names = {i.name for i in onnx.load(str(tiny_bundle / "model.onnx")).graph.initializer}
    assert not {"mean", "std"} & names


def test_manifest_refuses_inconsistent_scaling(scaled_bundle) -> None:
    m = read_manifest(scaled_bundle)
    body = m.to_dict()
    with pytest.raises(BundleError, match="per_sensor scaling needs sensor_stds: 8 finite numbers"):
        Manifest.from_dict({**body, "sensor_stds": body["sensor_stds"][:3]})
    with pytest.raises(BundleError, match="sensor_stds must all be positive"):
        Manifest.from_dict({**body, "sensor_stds": [0.0] * NUM_NODES})
    with pytest.raises(BundleError, match="only for per_sensor scaling"):
        Manifest.from_dict({**body, "scaling": "global"})
    with pytest.raises(BundleError, match="transform 'sqrt'"):
        Manifest.from_dict({**body, "transform": "sqrt"})
