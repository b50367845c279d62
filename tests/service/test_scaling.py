"""A per-sensor-scaled, log1p bundle in the service: raw counts in, each sensor's gap reading
imputed, forecasts as the bundle's runtime computes them; default bundles report global/none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.forecasting import impute
from service.runtime import load_runtime
from tests.service.conftest import AUTH, current_slot, iso, serve
from tests.service.test_forecast import T_IN, _as_matrix, _expected, _ingest, _sensors


@pytest.fixture(scope="module")
def scaled_runtime(scaled_bundle: Path):
    return load_runtime(scaled_bundle)


def test_impute_takes_one_gap_reading_per_sensor() -> None:
    window = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, 0.0]], np.float32)  # T × N
    gaps = np.array([10.0, 20.0, 30.0], np.float32)
    np.testing.assert_array_equal(impute(window, "missing_value", gaps), [[1, 20, 3], [10, 20, 0]])
    np.testing.assert_array_equal(impute(window, "locf", gaps), [[1, 20, 3], [1, 20, 0]])
    np.testing.assert_array_equal(impute(window, "missing_value", 5.0), [[1, 5, 3], [5, 5, 0]])


def test_scaled_bundle_serves_counts_with_per_sensor_gaps(make_settings, scaled_bundle, scaled_runtime) -> None:
    ref = scaled_runtime
    m = ref.manifest
    gaps = m.gap_readings()
    assert gaps.shape == (m.num_nodes,) and len(set(gaps.tolist())) == m.num_nodes
    sensors = _sensors(ref)
    last = current_slot() - 1
    rng = np.random.default_rng(5)
    values = rng.poisson(rng.gamma(0.6, 8.0, (T_IN, len(sensors)))).astype(np.float32)
    values[:, 1] = 0.0  # real zeros: readings under nan
    values[3:6, 4] = np.nan  # a gap
    values[:, 6] = np.nan  # a sensor that never reported
    filled = np.where(np.isnan(values), gaps[None, :], values)
    with serve(make_settings(bundle_dir=scaled_bundle)) as client:
        _ingest(client, sensors, values, last)
        buffered = client.post("/forecast")
        stateless = client.post("/forecast", json={"window": {
            "timestamps": [iso(s) for s in range(last - T_IN + 1, last + 1)],
            "values": [[None if np.isnan(v) else float(v) for v in row] for row in values]}})
        info = client.get("/model", headers=AUTH).json()
    assert buffered.status_code == 200 and stateless.status_code == 200, (buffered.text, stateless.text)
    assert (info["scaling"], info["transform"], info["missing_rule"]) == ("per_sensor", "log1p", "nan")
    np.testing.assert_allclose(info["missing_values"], gaps, rtol=1e-6)
    want, _ = _expected(ref, filled, last)
    assert np.isfinite(want).all() and (want > -1).all()
    for body in (buffered.json(), stateless.json()):
        assert body["quality"]["sensors_missing"] == [sensors[6]]
        np.testing.assert_allclose(_as_matrix(body, sensors), want, rtol=1e-6, atol=1e-5)
    scalar_filled = np.where(np.isnan(values), np.float32(m.missing_value), values)  # one global gap
    assert not np.allclose(_expected(ref, scalar_filled, last)[0], want, atol=1e-4)


def test_default_bundle_reports_global_scaling(make_settings) -> None:
    with serve(make_settings()) as client:
        info = client.get("/model", headers=AUTH).json()
    assert (info["scaling"], info["transform"], info["missing_values"]) == ("global", "none", None)
