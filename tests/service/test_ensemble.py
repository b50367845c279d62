"""A seed-ensemble bundle in the service: real ONNX Runtime, real Redis, the members' mean served."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.bundle import verify_bundle
from service.runtime import load_runtime
from tests.service.conftest import AUTH, current_slot, features, serve
from tests.service.test_forecast import T_IN, T_OUT, _as_matrix, _ingest, _window_values
from training.export import build_serving


def _members_forecast(members, window: np.ndarray, last: int, tz) -> np.ndarray:
    """Each member alone (its own serving module, eager torch): B=1 -> K, T_out, N."""
    inputs = (torch.from_numpy(window[None].astype(np.float32)),
              torch.from_numpy(features(last - T_IN + 1, T_IN, tz)[None]),
              torch.from_numpy(features(last + 1, T_OUT, tz)[None]))
    with torch.no_grad():
        return np.stack([build_serving(c, "pool")(*inputs)[0][0].numpy() for c in members])


def test_forecast_is_the_mean_of_the_members(make_settings, tiny_ensemble_bundle, tiny_members) -> None:
    sensors = list(tiny_members[0].sensor_ids)
    last = current_slot() - 1
    values = _window_values(len(sensors), seed=4)
    with serve(make_settings(bundle_dir=tiny_ensemble_bundle)) as client:
        _ingest(client, sensors, values, last)
        r = client.post("/forecast")
        assert r.status_code == 200, r.text
        body = r.json()
        model = client.get("/model", headers=AUTH)
    each = _members_forecast(tiny_members, values, last, tiny_members[0].timezone)
    np.testing.assert_allclose(_as_matrix(body, sensors), each.mean(axis=0), rtol=1e-5, atol=1e-4)
    assert np.abs(_as_matrix(body, sensors) - each[0]).max() > 1e-3  # not just member 0
    assert model.status_code == 200, model.text
    info = model.json()
    assert info["model_version"] == verify_bundle(tiny_ensemble_bundle).model_version
    assert len(info["metrics"]["members"]) == 3


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_both_backends_load_an_ensemble_bundle(tiny_ensemble_bundle, backend) -> None:
    runtime = load_runtime(tiny_ensemble_bundle, backend=backend)
    forecast, st = runtime.predict(*runtime.example_inputs(2))
    assert forecast.shape == (2, 12, 8) and st.shape == (2, 8, 5)
