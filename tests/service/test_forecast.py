"""Ingest → forecast against the bundle's runtime, partial/late readings, policies, caching."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import redis

from service.forecasting import impute
from tests.service.conftest import AUTH, current_slot, features, iso, serve, snapshot

T_IN = T_OUT = 12


def _sensors(reference: Any) -> list[str]:
    return list(reference.manifest.sensor_ids)


def _window_values(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(20, 70, size=(T_IN, n)).round(3).astype(np.float32)


def _ingest(client: Any, sensors: list[str], values: np.ndarray, last: int) -> None:
    body = {"readings": [snapshot(last - T_IN + 1 + t, {s: float(values[t, j])
                                                       for j, s in enumerate(sensors)
                                                       if not np.isnan(values[t, j])})
                         for t in range(T_IN)]}
    r = client.post("/readings", json=body, headers=AUTH)
    assert r.status_code == 200, r.text


def _expected(reference: Any, window: np.ndarray, last: int) -> tuple[np.ndarray, np.ndarray]:
    tz = reference.manifest.timezone
    f, st = reference.predict(window[None].astype(np.float32),
                              features(last - T_IN + 1, T_IN, tz)[None],
                              features(last + 1, T_OUT, tz)[None])
    return f[0], st[0]


def _as_matrix(body: dict[str, Any], sensors: list[str]) -> np.ndarray:
    return np.array([body["forecasts"][s] for s in sensors]).T  # T_out × N


def test_ingest_then_forecast_matches_runtime(make_settings, reference) -> None:
    sensors = _sensors(reference)
    last = current_slot() - 1
    values = _window_values(len(sensors), seed=1)
    with serve(make_settings()) as client:
        _ingest(client, sensors, values, last)
        r = client.post("/forecast")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        body = r.json()
    want, _ = _expected(reference, values, last)
    np.testing.assert_allclose(_as_matrix(body, sensors), want, rtol=1e-6, atol=1e-5)
    assert body["as_of"] == iso(last)
    assert body["source"] == "buffer"
    assert [h["step"] for h in body["horizons"]] == list(range(1, T_OUT + 1))
    assert [h["timestamp"] for h in body["horizons"]] == [iso(last + h) for h in range(1, 13)]
    assert body["horizons"][2]["minutes"] == 15.0
    assert body["quality"] == {"observed_fraction": 1.0, "missing_policy": "missing_value",
                               "sensors_missing": [], "sensors_missing_total": 0,
                               "slot_coverage": [1.0] * T_IN, "last_slot_coverage": 1.0,
                               "sensors_imputed": [], "sensors_imputed_total": 0,
                               "sensors_imputed_last_slot": [],
                               "sensors_imputed_last_slot_total": 0}
    assert body["window_end_reason"] == "newest slot with coverage >= 0.99"  # measured default
    assert body["newest_reading"] == iso(last)
    assert 0 < body["newest_reading_age_s"] < 2 * 300 + 60


def test_sensor_and_horizon_selection(make_settings, reference) -> None:
    sensors = _sensors(reference)
    last = current_slot() - 2
    values = _window_values(len(sensors), seed=2)
    want, _ = _expected(reference, values, last)
    with serve(make_settings(response_decimals=2)) as client:
        _ingest(client, sensors, values, last)
        by_steps = client.post("/forecast", json={"sensors": [sensors[3], sensors[0]],
                                                  "horizons": [12, 1], "as_of": iso(last)}).json()
        by_minutes = client.post("/forecast", json={"sensors": [sensors[3], sensors[0]],
                                                    "horizon_minutes": [60, 5]}).json()
    assert list(by_steps["forecasts"]) == [sensors[3], sensors[0]]
    assert [h["step"] for h in by_steps["horizons"]] == [12, 1]
    assert by_minutes["forecasts"] == by_steps["forecasts"]
    got = np.array(by_steps["forecasts"][sensors[3]])
    np.testing.assert_allclose(got, [want[11, 3], want[0, 3]], atol=0.0051)
    assert got.tolist() == np.round(got, 2).tolist()  # response_decimals applied


def test_partial_and_late_readings(make_settings, reference) -> None:
    sensors = _sensors(reference)
    n = len(sensors)
    last = current_slot() - 1
    values = _window_values(n, seed=3)
    with serve(make_settings(min_slot_coverage=0.5)) as client:  # half a slot suffices
        # the newest slot arrives in two halves, and slot last-5 only later (late readings)
        for t in range(T_IN):
            slot = last - T_IN + 1 + t
            if slot == last - 5:
                continue
            cols = range(n // 2) if slot == last else range(n)
            r = client.post("/readings", json={"readings": [
                snapshot(slot, {sensors[j]: float(values[t, j]) for j in cols})]}, headers=AUTH)
            assert r.status_code == 200, r.text
        partial = client.post("/forecast").json()
        expect_frac = (T_IN * n - n - (n - n // 2)) / (T_IN * n)
        assert partial["quality"]["observed_fraction"] == pytest.approx(expect_frac, abs=1e-6)
        assert partial["quality"]["sensors_missing"] == []
        assert partial["as_of"] == iso(last)
        assert partial["window_end_reason"] == "newest slot with coverage >= 0.5"
        assert partial["quality"]["sensors_imputed_last_slot"] == sensors[n // 2:]
        assert partial["quality"]["sensors_imputed"] == sensors  # slot last-5 is missing
        assert partial["quality"]["last_slot_coverage"] == pytest.approx((n // 2) / n)
        window = values.copy()
        window[T_IN - 1 - 5, :] = np.nan
        window[T_IN - 1, n // 2:] = np.nan
        want, _ = _expected(reference, impute(window, "missing_value", 0.0), last)
        np.testing.assert_allclose(_as_matrix(partial, sensors), want, rtol=1e-6, atol=1e-5)

        # the rest of the newest slot and the late slot arrive
        r = client.post("/readings", json={"readings": [
            snapshot(last, {sensors[j]: float(values[T_IN - 1, j]) for j in range(n // 2, n)}),
            snapshot(last - 5, {s: float(values[T_IN - 1 - 5, j]) for j, s in enumerate(sensors)}),
        ]}, headers=AUTH)
        assert r.status_code == 200 and r.json()["accepted"] == (n - n // 2) + n
        full = client.post("/forecast").json()
    assert full["quality"]["observed_fraction"] == 1.0
    want, _ = _expected(reference, values, last)
    np.testing.assert_allclose(_as_matrix(full, sensors), want, rtol=1e-6, atol=1e-5)


def test_sensor_without_readings_is_reported(make_settings, reference) -> None:
    sensors = _sensors(reference)
    last = current_slot() - 1
    values = _window_values(len(sensors), seed=4)
    values[:, 2] = np.nan
    with serve(make_settings()) as client:
        _ingest(client, sensors, values, last)
        body = client.post("/forecast", json={"sensors": [sensors[2], sensors[4]]}).json()
        every = client.post("/forecast", json={"sensors": [sensors[4]]}).json()
    assert body["quality"]["sensors_missing"] == [sensors[2]]
    assert body["quality"]["sensors_missing_total"] == 1
    assert every["quality"]["sensors_missing"] == []
    assert every["quality"]["sensors_missing_total"] == 1


@pytest.mark.parametrize("policy", ["missing_value", "locf"])
def test_missing_data_policy(make_settings, reference, policy: str) -> None:
    sensors = _sensors(reference)
    n = len(sensors)
    last = current_slot() - 1
    values = _window_values(n, seed=5)
    gappy = values.copy()
    gappy[3:7, 1] = np.nan  # a gap in the middle
    gappy[:4, 5] = np.nan  # a gap at the start (no earlier observation to carry)
    gappy[-2:, 6] = np.nan  # a gap at the end
    if policy == "locf":
        filled = values.copy()
        filled[3:7, 1] = values[2, 1]
        filled[:4, 5] = 0.0
        filled[-2:, 6] = values[-3, 6]
    else:
        filled = np.nan_to_num(gappy, nan=0.0)
    np.testing.assert_array_equal(impute(gappy, policy, 0.0), filled)
    want, _ = _expected(reference, filled, last)
    # the last slot lacks a sensor: a threshold of 0 keeps it as the window end
    with serve(make_settings(missing_policy=policy, min_slot_coverage=0.0)) as client:
        _ingest(client, sensors, gappy, last)
        buffered = client.post("/forecast").json()
        stateless = client.post("/forecast", json={"window": {
            "timestamps": [iso(s) for s in range(last - T_IN + 1, last + 1)],
            "values": [[None if np.isnan(v) else float(v) for v in row] for row in gappy]}}).json()
    assert buffered["quality"]["missing_policy"] == policy
    np.testing.assert_allclose(_as_matrix(buffered, sensors), want, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(_as_matrix(stateless, sensors), want, rtol=1e-6, atol=1e-5)
    other = impute(gappy, "missing_value" if policy == "locf" else "locf", 0.0)
    assert not np.allclose(_expected(reference, other, last)[0], want)  # the policy matters


def test_cache_hit_and_invalidation_by_late_reading(make_settings, reference, prefix,
                                                   redis_url) -> None:
    sensors = _sensors(reference)
    last = current_slot() - 1
    values = _window_values(len(sensors), seed=6)
    history = np.vstack([_window_values(len(sensors), seed=7)[:4], values])  # 16 slots
    with serve(make_settings()) as client:
        r = client.post("/readings", json={"readings": [
            snapshot(last - 15 + t, {s: float(history[t, j]) for j, s in enumerate(sensors)})
            for t in range(16)]}, headers=AUTH)
        assert r.status_code == 200
        first = client.post("/forecast", json={"as_of": iso(last)})
        again = client.post("/forecast", json={"as_of": iso(last)})
        older = client.post("/forecast", json={"as_of": iso(last - 4)})
        assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
        first_body, again_body = first.json(), again.json()
        # the age of the newest reading is measured per answer (it grows between the two)
        age_first = first_body.pop("newest_reading_age_s")
        age_again = again_body.pop("newest_reading_age_s")
        assert 0 <= age_again - age_first < 30
        assert again_body == first_body
        assert older.headers["x-cache"] == "miss"
        assert _cache_keys_soon(redis_url, prefix, 2) == 2  # written after the answers

        # a late reading for slot last-3 belongs to the window ending at `last` but not to
        # the one ending at last-4: only the first must be recomputed
        late = history[12].copy()
        late[0] = 5.0
        r = client.post("/readings", json={"readings": [snapshot(last - 3, {sensors[0]: 5.0})]},
                        headers=AUTH)
        assert r.status_code == 200
        assert len(list(redis.Redis.from_url(redis_url).scan_iter(f"{prefix}:*:fc:*"))) == 1
        after = client.post("/forecast", json={"as_of": iso(last)})
        older_again = client.post("/forecast", json={"as_of": iso(last - 4)})
        metrics = client.get("/metrics").text
    assert after.headers["x-cache"] == "miss"
    assert older_again.headers["x-cache"] == "hit"
    changed = values.copy()
    changed[T_IN - 1 - 3] = late
    want, _ = _expected(reference, changed, last)
    np.testing.assert_allclose(_as_matrix(after.json(), sensors), want, rtol=1e-6, atol=1e-5)
    assert not np.allclose(_as_matrix(after.json(), sensors), _as_matrix(first.json(), sensors))
    assert 'himnet_forecast_cache_hits_total{source="buffer"} 2.0' in metrics
    assert 'himnet_forecast_cache_misses_total{source="buffer"} 3.0' in metrics


def _cache_keys_soon(redis_url: str, prefix: str, want: int, within_s: float = 5.0) -> int:
    """The number of cache entries once ``want`` are there (or the deadline passes): a cache
    write lands just after its forecast's answer."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + within_s
    while True:
        found = len(list(client.scan_iter(f"{prefix}:*:fc:*")))
        if found >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def test_stateless_forecast_with_empty_buffer(make_settings, reference) -> None:
    sensors = _sensors(reference)
    last = current_slot() - 30  # older than anything buffered: stateless has no retention
    values = _window_values(len(sensors), seed=8)
    want, _ = _expected(reference, values, last)
    timestamps = [iso(s) for s in range(last - T_IN + 1, last + 1)]
    with serve(make_settings()) as client:
        assert client.post("/forecast").status_code == 404  # nothing buffered
        by_series = client.post("/forecast", json={"window": {
            "timestamps": timestamps,
            "series": {s: values[:, j].tolist() for j, s in enumerate(sensors)}}})
        by_values = client.post("/forecast", json={"window": {
            "timestamps": timestamps, "values": values.tolist()}})
    assert by_series.status_code == 200, by_series.text
    assert by_series.json()["source"] == "request"
    assert by_series.json()["as_of"] == iso(last)
    np.testing.assert_allclose(_as_matrix(by_series.json(), sensors), want, rtol=1e-6, atol=1e-5)
    assert by_values.headers["x-cache"] == "hit"  # same window, other layout
    assert by_values.json()["forecasts"] == by_series.json()["forecasts"]


def test_aware_timestamps_in_other_zones_are_the_same_slot(make_settings, reference) -> None:
    sensors = _sensors(reference)
    last = current_slot() - 1
    values = _window_values(len(sensors), seed=9)
    from datetime import datetime, timedelta, timezone

    zone = timezone(timedelta(hours=5, minutes=30))
    stamps = [datetime.fromtimestamp(s * 300, tz=zone).isoformat()
              for s in range(last - T_IN + 1, last + 1)]
    with serve(make_settings()) as client:
        body = client.post("/forecast", json={"window": {"timestamps": stamps,
                                                         "values": values.tolist()}}).json()
    want, _ = _expected(reference, values, last)
    assert body["as_of"] == iso(last)
    np.testing.assert_allclose(_as_matrix(body, sensors), want, rtol=1e-6, atol=1e-5)


def test_memory_buffer_when_no_redis(make_settings, reference) -> None:
    sensors = _sensors(reference)
    last = current_slot() - 1
    values = _window_values(len(sensors), seed=10)
    with serve(make_settings(redis_url=None)) as client:
        _ingest(client, sensors, values, last)
        first = client.post("/forecast")
        second = client.post("/forecast")
        ready = client.get("/readyz")
    want, _ = _expected(reference, values, last)
    np.testing.assert_allclose(_as_matrix(first.json(), sensors), want, rtol=1e-6, atol=1e-5)
    assert second.headers["x-cache"] == "hit"
    assert ready.status_code == 200
