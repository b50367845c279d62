"""The bundle's missing-value rule in the service: what a posted 0 means, what a gap gets."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.bundle import read_manifest, write_manifest
from service.forecasting import impute
from service.runtime import load_runtime
from tests.service.conftest import AUTH, current_slot, iso, serve
from tests.service.test_forecast import T_IN, _as_matrix, _expected, _ingest, _sensors, _window_values


@pytest.fixture(scope="module")
def nan_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle re-declared as trained under the ``nan`` rule (gaps got the scaler mean)."""
    out = Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("nan-rule") / "bundle"))
    m = read_manifest(out)
    write_manifest(out, dataclasses.replace(m, missing_rule="nan", missing_value=float(m.scaler_mean)))
    return out


def _stateless(client: Any, window: np.ndarray, last: int) -> dict[str, Any]:
    r = client.post("/forecast", json={"window": {
        "timestamps": [iso(s) for s in range(last - T_IN + 1, last + 1)],
        "values": [[None if np.isnan(v) else float(v) for v in row] for row in window]}})
    assert r.status_code == 200, r.text
    return r.json()


def test_under_zero_a_posted_zero_is_missing(make_settings, reference) -> None:
    """Old bundles (no missing_rule) read as zero: a posted 0 is a gap, reported and imputed."""
    assert reference.manifest.missing_rule == "zero"
    sensors = _sensors(reference)
    last = current_slot() - 1
    values = _window_values(len(sensors), seed=11)
    values[:, 3] = 0.0  # sensor 3 posts zeros all window long
    values[-1, 5] = 0.0  # sensor 5 posts one zero in the newest slot
    with serve(make_settings()) as client:
        _ingest(client, sensors, values, last)
        buffered = client.post("/forecast").json()
        stateless = _stateless(client, values, last)
        info = client.get("/model", headers=AUTH).json()
    assert info["missing_rule"] == "zero" and info["missing_value"] == 0.0
    for body in (buffered, stateless):
        assert body["quality"]["sensors_missing"] == [sensors[3]]
        assert body["quality"]["observed_fraction"] == pytest.approx(1 - (T_IN + 1) / (T_IN * len(sensors)),
                                                                     abs=1e-6)
    want, _ = _expected(reference, values, last)  # zeros in, as the model saw gaps in training
    np.testing.assert_allclose(_as_matrix(buffered, sensors), want, rtol=1e-6, atol=1e-5)


def test_under_nan_a_zero_is_a_reading_and_a_gap_gets_the_mean(make_settings, nan_bundle) -> None:
    ref = load_runtime(nan_bundle)
    mean = float(ref.manifest.scaler_mean)
    sensors = _sensors(ref)
    last = current_slot() - 1
    values = _window_values(len(sensors), seed=12)
    values[:, 3] = 0.0  # real zeros: a reading under nan
    values[4:8, 6] = np.nan  # a gap
    values[:, 7] = np.nan  # a sensor that never reported
    filled = np.where(np.isnan(values), np.float32(mean), values)
    np.testing.assert_array_equal(impute(values, "missing_value", mean), filled)
    with serve(make_settings(bundle_dir=nan_bundle)) as client:
        _ingest(client, sensors, values, last)
        buffered = client.post("/forecast").json()
        stateless = _stateless(client, values, last)
        info = client.get("/model", headers=AUTH).json()
    assert info["missing_rule"] == "nan" and info["missing_value"] == pytest.approx(mean)
    want, _ = _expected(ref, filled, last)
    for body in (buffered, stateless):
        assert body["quality"]["sensors_missing"] == [sensors[7]]
        np.testing.assert_allclose(_as_matrix(body, sensors), want, rtol=1e-6, atol=1e-5)
    zero_filled = np.nan_to_num(values, nan=0.0)  # what the zero rule would have fed: differs
    assert not np.allclose(_expected(ref, zero_filled, last)[0], want)
