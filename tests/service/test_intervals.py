"""Prediction intervals in the service: bounds beside each forecast, clipped to the plausible
range; a format-1 bundle (no intervals) still loads and refuses an interval request clearly."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from model.bundle import read_manifest, write_manifest
from model.intervals import INTERVALS_FILE, bundle_intervals, read_intervals
from tests.service.conftest import AUTH, current_slot, serve, snapshot


def _format_1(tiny_bundle: Path, tmp_path: Path) -> Path:
    """The tiny bundle as format 1 wrote it: no intervals file, no intervals record."""
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    (old / INTERVALS_FILE).unlink()
    m = read_manifest(old)
    files = {k: v for k, v in m.files.items() if k != INTERVALS_FILE}
    write_manifest(old, dataclasses.replace(m, format_version=1, intervals=None, files=files))
    return old


def test_bounds_come_with_the_forecast_clipped_to_the_range(make_settings, tiny_bundle) -> None:
    table = read_intervals(tiny_bundle / INTERVALS_FILE)
    ids = list(read_manifest(tiny_bundle).sensor_ids)
    slot = current_slot() - 1
    with serve(make_settings(value_min=0.0, value_max=61.0)) as client:
        client.post("/readings", json={"readings": [snapshot(slot, {s: 60.0 for s in ids})]},
                    headers=AUTH)
        body = client.post("/forecast", json={"interval": 0.8, "horizons": [1, 12]}).json()
    assert body["intervals"]["level"] == 0.8
    q = table.half_width[table.index(0.8)]
    for j, s in enumerate(ids):
        f = np.array(body["forecasts"][s])
        lower, upper = np.array(body["intervals"]["lower"][s]), np.array(body["intervals"]["upper"][s])
        assert np.allclose(lower, np.clip(f - q[[0, 11], j], 0.0, 61.0), atol=1e-4)
        assert np.allclose(upper, np.clip(f + q[[0, 11], j], 0.0, 61.0), atol=1e-4)
        assert upper.max() <= 61.0


def test_a_format_1_bundle_loads_without_intervals(make_settings, tiny_bundle, tmp_path) -> None:
    old = _format_1(tiny_bundle, tmp_path)
    assert read_manifest(old).format_version == 1
    assert bundle_intervals(old, read_manifest(old)) is None
    ids = list(read_manifest(old).sensor_ids)
    with serve(make_settings(bundle_dir=old)) as client:
        client.post("/readings", json={"readings": [snapshot(current_slot() - 1, {ids[0]: 50.0})]},
                    headers=AUTH)
        plain = client.post("/forecast", json={})
        asked = client.post("/forecast", json={"interval": 0.9})
        accuracy = client.get("/accuracy").json()
    assert plain.status_code == 200 and "intervals" not in plain.json()
    assert asked.status_code == 422 and asked.json()["type"].endswith("no-intervals")
    assert accuracy["rules"]["interval_levels"] == []
