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


def _sensor_matrix(rows: dict[str, list[float]], sensors: list[str]) -> np.ndarray:
    """sensor → per-horizon list -> T_out × N in model order."""
    return np.array([rows[s] for s in sensors]).T


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


def test_spread_is_the_members_standard_deviation_and_survives_the_cache(
        make_settings, tiny_ensemble_bundle, tiny_members) -> None:
    """``include: ["spread"]`` answers the members' population standard deviation (Redis cache
    miss and hit alike); a subset of sensors and horizons gets the matching subset."""
    sensors = list(tiny_members[0].sensor_ids)
    last = current_slot() - 1
    values = _window_values(len(sensors), seed=5)
    with serve(make_settings(bundle_dir=tiny_ensemble_bundle)) as client:
        _ingest(client, sensors, values, last)
        miss = client.post("/forecast", json={"include": ["spread"]})
        hit = client.post("/forecast", json={"include": ["spread"]})
        part = client.post("/forecast", json={"include": ["spread"], "sensors": sensors[2:4],
                                              "horizons": [1, 12]})
        plain = client.post("/forecast")
    assert [r.status_code for r in (miss, hit, part, plain)] == [200] * 4, miss.text
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    each = _members_forecast(tiny_members, values, last, tiny_members[0].timezone)
    want = each.std(axis=0)  # population form, divisor K
    assert want.max() > 1e-3  # the members disagree: a zero spread would prove nothing
    for r in (miss, hit):
        np.testing.assert_allclose(_sensor_matrix(r.json()["spread"], sensors), want, rtol=1e-4, atol=1e-3)
    got = part.json()["spread"]
    assert list(got) == sensors[2:4]
    np.testing.assert_allclose(_sensor_matrix(got, sensors[2:4]), want[[0, 11]][:, 2:4], rtol=1e-4, atol=1e-3)
    assert "spread" not in plain.json() or plain.json()["spread"] is None


def test_a_single_model_refuses_to_invent_a_spread(make_settings) -> None:
    with serve(make_settings()) as client:
        r = client.post("/forecast", json={"include": ["spread"]})
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("no-spread")
    assert "not a seed ensemble" in r.json()["detail"]
