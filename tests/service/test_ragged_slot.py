"""A ragged newest slot: the default window waits for coverage, and says so (issue 13, §1)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.settings import MEASURED_MIN_SLOT_COVERAGE
from tests.service.conftest import AUTH, current_slot, iso, serve, snapshot

T_IN = 12


def _post(client: Any, slot: int, values: dict[str, float]) -> None:
    r = client.post("/readings", json={"readings": [snapshot(slot, values)]}, headers=AUTH)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("store", ["redis", "memory"])
def test_three_of_n_in_the_newest_slot(make_settings, reference, store: str) -> None:
    sensors = list(reference.manifest.sensor_ids)
    n = len(sensors)
    t = current_slot() - 2
    rng = np.random.default_rng(13)
    redis = {} if store == "redis" else {"redis_url": None}
    for threshold, waits in [(0.9, True), (0.3, False)]:  # 3/n = 0.375 with the tiny bundle
        with serve(make_settings(min_slot_coverage=threshold, **redis)) as client:
            for slot in range(t - T_IN + 1, t + 1):  # complete slots up to t
                _post(client, slot, {s: float(v) for s, v in
                                     zip(sensors, rng.uniform(20, 70, n).round(2))})
            at_t = client.post("/forecast", json={"as_of": iso(t)}).json()
            _post(client, t + 1, {s: 50.0 for s in sensors[:3]})
            r = client.post("/forecast")
            assert r.status_code == 200, r.text
            body = r.json()
            gauge = client.get("/metrics").text
        assert body["newest_reading"] == iso(t + 1)
        assert body["source"] == "buffer"
        q = body["quality"]
        if waits:
            assert body["as_of"] == iso(t)
            assert body["window_end_reason"] == "newest slot with coverage >= 0.9"
            assert body["forecasts"] == at_t["forecasts"]
            assert q["last_slot_coverage"] == 1.0 and q["sensors_imputed"] == []
            assert "himnet_window_coverage_ratio 1.0" in gauge
        else:
            assert body["as_of"] == iso(t + 1)
            assert body["window_end_reason"] == "newest slot with coverage >= 0.3"
            assert body["forecasts"] != at_t["forecasts"]
            assert q["sensors_imputed_last_slot"] == sensors[3:]
            assert q["sensors_imputed_last_slot_total"] == n - 3
            assert q["sensors_imputed"] == sensors[3:]  # never missing from the report
            assert q["slot_coverage"] == [1.0] * (T_IN - 1) + [pytest.approx(3 / n, abs=1e-6)]
            assert q["last_slot_coverage"] == pytest.approx(3 / n, abs=1e-6)
        assert at_t["window_end_reason"] == "as_of" and at_t["as_of"] == iso(t)


def test_no_slot_reaches_the_threshold(make_settings, reference) -> None:
    """Within the lookback no slot is covered enough: the best-covered (the newest of equals)."""
    sensors = list(reference.manifest.sensor_ids)
    t = current_slot() - 1
    with serve(make_settings(min_slot_coverage=0.9, coverage_lookback_slots=1)) as client:
        for slot in range(t - 3, t + 1):
            _post(client, slot, {s: 40.0 for s in sensors[:2]})
        body = client.post("/forecast", json={"sensors": [sensors[0], sensors[5]]}).json()
    assert body["as_of"] == iso(t)
    assert body["window_end_reason"] == (
        "best-covered of the newest 2 slot(s) (none reached coverage 0.9)")
    assert body["quality"]["sensors_missing"] == [sensors[5]]
    assert body["quality"]["sensors_imputed"] == [sensors[0], sensors[5]]  # slots before t-3


def test_rendered_body_memo_keeps_the_source(make_settings, reference) -> None:
    """The same window from the buffer and from the request: each answer names its source."""
    sensors = list(reference.manifest.sensor_ids)
    last = current_slot() - 1
    rows = [[40.5 + j for j in range(len(sensors))] for _ in range(T_IN)]  # exact in float32
    with serve(make_settings(redis_url=None)) as client:
        for k, row in enumerate(rows):
            _post(client, last - T_IN + 1 + k, dict(zip(sensors, row)))
        answers = [client.post("/forecast", json=body).json() for body in (
            {}, {"window": {"timestamps": [iso(s) for s in range(last - T_IN + 1, last + 1)],
                            "values": rows}}, {})]
    assert [a["source"] for a in answers] == ["buffer", "request", "buffer"]
    assert [a["window_end_reason"] for a in answers] == [
        "newest slot with coverage >= 0.99", "window", "newest slot with coverage >= 0.99"]
    assert answers[0]["forecasts"] == answers[1]["forecasts"] == answers[2]["forecasts"]


def test_default_threshold_is_the_measured_one_per_policy(make_settings) -> None:
    for policy, measured in MEASURED_MIN_SLOT_COVERAGE.items():
        assert make_settings(missing_policy=policy).slot_coverage() == measured
    assert make_settings(missing_policy="locf", min_slot_coverage=0.5).slot_coverage() == 0.5
