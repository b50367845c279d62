"""Live accuracy: unit rules (scored once after the grace, late readings ignored, baseline,
coverage, bounded state) and the real service (uvicorn, Redis, ONNX Runtime) end to end."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from model.intervals import IntervalTable
from model.missing import ZERO
from service.accuracy import LiveAccuracy, ScoringRules, last_observed
from service.accuracy_store import MemoryAccuracyStore
from service.buffer import MemoryBuffer, SlotUpdate
from service.live_metrics import LiveMetrics
from service.metrics import Metrics
from service.refclock import ReferenceClock
from tests.service.conftest import AUTH, current_slot, serve, serve_app, snapshot

T, N, G = 2, 3, 1


def _scorer(replay: bool = True) -> tuple[LiveAccuracy, MemoryBuffer, Metrics]:
    clock = ReferenceClock(300, replay=replay)
    buffer = MemoryBuffer(N, 300, 100, clock)
    table = IntervalTable(np.array([0.5, 0.9]), np.stack([np.full((T, N), 1.0),
                                                          np.full((T, N), 3.0)]).astype(np.float32),
                          np.ones((T, N), dtype=bool))
    metrics = Metrics()
    live = LiveAccuracy(MemoryAccuracyStore(buffer, T + G + 1, 288), clock,
                        LiveMetrics(metrics.live, "v1", T, [0.5, 0.9], [1.0, 2.0], 1.5),
                        ScoringRules(T, N, G, 288, 300, fallback=40.0), ZERO, table)
    return live, buffer, metrics


async def _write(buffer: MemoryBuffer, live: LiveAccuracy, slot: int, values: list[float]) -> None:
    idx = np.array([i for i, v in enumerate(values) if v == v], dtype=np.int64)
    vals = np.array([v for v in values if v == v], dtype=np.float32)
    await buffer.write([SlotUpdate(slot, idx, vals)])
    live.readings_stored()
    await live.flush()


def test_last_observed_baseline_skips_missing_and_falls_back() -> None:
    window = np.array([[1.0, np.nan, np.nan], [2.0, 0.0, np.nan], [np.nan, 5.0, np.nan]])
    assert last_observed(window, ZERO, 40.0).tolist() == [2.0, 5.0, 40.0]


def test_scored_once_after_the_grace_against_the_readings_then() -> None:
    async def run() -> dict:
        live, buffer, metrics = _scorer()
        await _write(buffer, live, 10, [50.0, 60.0, 70.0])
        window = np.array([[50.0, 60.0, 70.0]])
        await live.remember(10, window, np.array([[52.0, 58.0, 70.5], [55.0, 60.0, 80.0]]))
        await _write(buffer, live, 11, [51.0, 0.0, np.nan])  # sensor 2 missing, 3 not reported
        assert (await live.window(60))["scored_targets"] == 0  # slot 11 waits for the grace
        await _write(buffer, live, 12, [50.0, 61.0, 72.0])  # slot 11 is due now
        await _write(buffer, live, 11, [51.0, 62.0, 71.0])  # late: stored, never scored
        await _write(buffer, live, 13, [50.0, 60.0, 70.0])  # slot 12 due
        return await live.window(60)

    out = asyncio.run(run())
    h1, h2 = out["horizons"]
    # step 1 -> slot 11: only sensor 1 reported (52 vs 51); the late readings did not count
    assert h1["scored_targets"] == 1 and h1["mae"] == pytest.approx(1.0)
    assert h1["baseline_mae"] == pytest.approx(1.0) and h1["skill"] == pytest.approx(0.0)
    # step 2 -> slot 12: |55-50|, |60-61|, |80-72|; baseline 50, 60, 70
    assert h2["scored_targets"] == 3 and h2["mae"] == pytest.approx(14 / 3)
    assert h2["rmse"] == pytest.approx(np.sqrt((25 + 1 + 64) / 3))
    assert h2["baseline_mae"] == pytest.approx(3 / 3) and h2["skill"] == pytest.approx(1 - 14 / 3)
    assert h2["coverage"] == {"0.5": pytest.approx(1 / 3), "0.9": pytest.approx(1 / 3)}
    assert out["slots_scored"] == 2


def test_state_is_bounded_and_the_first_forecast_is_kept() -> None:
    async def run() -> MemoryAccuracyStore:
        live, buffer, _ = _scorer()
        for slot in range(100):
            await _write(buffer, live, slot, [50.0, 50.0, 50.0])
            await live.remember(slot, np.full((1, N), 50.0), np.full((T, N), 51.0))
            await live.remember(slot, np.full((1, N), 50.0), np.full((T, N), 99.0))  # ignored
        return live.store  # type: ignore[return-value]

    store = asyncio.run(run())
    assert len(store._forecasts) <= T + G + 1
    assert all(np.frombuffer(b, "<f4")[0] == 51.0 for b in store._forecasts.values())


def test_service_scores_what_it_served_and_exports_it(make_settings, reference) -> None:
    ids = list(reference.manifest.sensor_ids)
    rng = np.random.default_rng(0)
    start = current_slot() - 40
    served: dict[int, np.ndarray] = {}
    with serve(make_settings(accuracy_grace_slots=1, retention_minutes=300)) as client:
        truth = {}
        for slot in range(start, start + 30):
            truth[slot] = rng.uniform(20, 70, len(ids))
            truth[slot][rng.random(len(ids)) < 0.2] = np.nan  # some sensors do not report
            values = {s: float(v) for s, v in zip(ids, truth[slot]) if v == v}
            assert client.post("/readings", json={"readings": [snapshot(slot, values)]},
                               headers=AUTH).status_code == 200
            if slot >= start + 11:
                body = client.post("/forecast", json={"as_of": _iso(slot), "interval": 0.9}).json()
                served[slot] = np.array([body["forecasts"][s] for s in ids]).T  # T_out × N
                lower = np.array([body["intervals"]["lower"][s] for s in ids]).T
                assert np.all(lower <= served[slot] + 1e-6)
        acc = client.get("/accuracy").json()
        metrics = client.get("/metrics").text
        bad = client.post("/forecast", json={"interval": 0.42})
    assert bad.status_code == 422 and "not calibrated" in bad.json()["detail"]
    last_scored = start + 29 - 1  # grace 1: the newest slot waits
    for h in (1, 6, 12):
        errors = [abs(served[e][h - 1][j] - truth[e + h][j]) for e in served
                  if e + h <= last_scored for j in range(len(ids)) if truth[e + h][j] == truth[e + h][j]]
        row = acc["windows"]["day"]["horizons"][h - 1]
        assert row["scored_targets"] == len(errors)
        assert row["mae"] == pytest.approx(float(np.mean(errors)), rel=1e-5)
    assert acc["test"]["mae"][0] is not None and acc["rules"]["grace_slots"] == 1
    version = reference.manifest.model_version
    n12 = acc["windows"]["day"]["horizons"][11]["scored_targets"]
    assert (f'himnet_live_scored_targets_total{{horizon="12",model_version="{version}"}} '
            f'{float(n12)}') in metrics
    assert 'himnet_live_covered_targets_total{horizon="12",level="0.9"' in metrics


def _background_done(app, within_s: float = 10.0) -> None:
    """Wait until the app's after-the-answer writes (cache entry, accuracy record) have landed."""
    deadline = time.monotonic() + within_s
    while len(app.state.components.forecaster.background):
        assert time.monotonic() < deadline, "background writes did not finish"
        time.sleep(0.005)


def _iso(slot: int) -> str:
    from tests.service.conftest import iso

    return iso(slot)


def test_replicas_share_forecasts_and_scores_through_redis(make_settings, reference) -> None:
    """Readings go to one replica, forecasts to another: the scores are the same on both and
    each target slot is counted once."""
    ids = list(reference.manifest.sensor_ids)
    start = current_slot() - 30
    settings = make_settings(accuracy_grace_slots=0, retention_minutes=300)
    with serve(settings) as a, serve_app(settings) as (b, b_app):
        for slot in range(start, start + 20):
            values = {s: 40.0 + (slot - start) + i for i, s in enumerate(ids)}
            assert a.post("/readings", json={"readings": [snapshot(slot, values)]},
                          headers=AUTH).status_code == 200
            if slot >= start + 11:
                assert b.post("/forecast", json={"as_of": _iso(slot)}).status_code == 200
                # the record is written after the answer; with no grace the next slot's readings
                # (milliseconds later here, minutes in a real feed) must find it stored
                _background_done(b_app)
        seen_a = a.get("/accuracy").json()["windows"]["day"]
        seen_b = b.get("/accuracy").json()["windows"]["day"]
    assert seen_a == seen_b
    # forecasts end at start+11 … start+19; step 1 targets start+12 … start+19: 8 slots × N
    assert seen_a["horizons"][0]["scored_targets"] == 8 * len(ids)
    assert seen_a["slots_scored"] == 8
