"""``himnet replay`` against a simulated service (httpx.MockTransport, a fake clock): timestamps
re-based onto the wall clock and never in the future, pacing, forecasts and online accuracy."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pytest

from model.missing import NAN, ZERO
from training.datasets import generate_synthetic, parse_rule
from replay import (
    HorizonStats,
    OnlineAccuracy,
    ReplayError,
    ServiceClient,
    choose_start,
    column_mapping,
    projected_end_slot,
    rebase,
    replay,
)

INTERVAL = 300
IN_STEPS, OUT_STEPS = 12, 12
ZONE = "America/Los_Angeles"
CONSTANT_FORECAST = 50.0


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeService:
    """The HTTP surface the replay uses, checking what a real service would refuse."""

    def __init__(self, sensors: list[str], clock: FakeClock, api_key: str = "k", missing_rule: str = "zero") -> None:
        self.sensors = sensors
        self.missing_rule = missing_rule
        self.clock = clock
        self.api_key = api_key
        self.posts: list[tuple[float, list[dict]]] = []  # (clock at post, snapshots)
        self.forecast_as_of: list[str] = []
        self.buffered: set[int] = set()

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/readyz":
            return httpx.Response(200, json={"status": "ready"})
        if path == "/model":
            return httpx.Response(200, json={"interval_minutes": INTERVAL / 60, "in_steps": IN_STEPS,
                                             "out_steps": OUT_STEPS, "missing_value": 0.0,
                                             "timezone": ZONE, "missing_rule": self.missing_rule})
        if path == "/embeddings":
            return httpx.Response(200, json={"count": len(self.sensors), "clusters": 1, "sensors": [
                {"id": s, "index": i, "cluster": 0} for i, s in enumerate(self.sensors)]})
        body = json.loads(request.content)
        if path == "/readings":
            if request.headers.get("x-api-key") != self.api_key:
                return httpx.Response(401, json={"detail": "bad key"})
            for snap in body["readings"]:
                epoch = datetime.fromisoformat(snap["timestamp"]).timestamp()
                assert epoch <= self.clock.now, "a reading from the future"
                assert epoch % INTERVAL == 0, "a misaligned timestamp"
                assert set(snap["values"]) <= set(self.sensors)
                assert not any(parse_rule(self.missing_rule).mask(np.array(list(snap["values"].values())))), \
                    "missing readings are not sent"
                assert all(np.isfinite(v) for v in snap["values"].values())
                self.buffered.add(int(epoch // INTERVAL))
            self.posts.append((self.clock.now, body["readings"]))
            n = sum(len(s["values"]) for s in body["readings"])
            return httpx.Response(200, json={"accepted": n, "slots": len(body["readings"]), "latest": ""})
        if path == "/forecast":
            as_of = datetime.fromisoformat(body["as_of"]).timestamp()
            assert int(as_of // INTERVAL) in self.buffered, "forecast asked before its slot was sent"
            self.forecast_as_of.append(body["as_of"])
            return httpx.Response(200, json={
                "horizons": [{"step": h, "minutes": h * 5, "timestamp": ""} for h in range(1, OUT_STEPS + 1)],
                "forecasts": {s: [CONSTANT_FORECAST] * OUT_STEPS for s in body["sensors"]}})
        return httpx.Response(404)


@pytest.fixture
def data():
    return generate_synthetic(num_sensors=4, days=8, seed=3)


def run_replay(data, clock: FakeClock, service: FakeService, **kwargs):
    http = httpx.Client(base_url="http://service.test", transport=httpx.MockTransport(service.handle))
    client = ServiceClient(http, sleep=clock.sleep)
    return replay(client, data, clock=clock, sleep=clock.sleep, log=lambda _: None, api_key="k", **kwargs)


def test_projected_end_and_rebase() -> None:
    now = 1_000_000.0 * INTERVAL + 17  # 17 s into a slot
    assert projected_end_slot(now, 1, INTERVAL, 1.0) == 1_000_000 * INTERVAL
    # 10 rows at 1x: the last is sent 9 intervals later, into slot +9
    assert projected_end_slot(now, 10, INTERVAL, 1.0) == 1_000_009 * INTERVAL
    assert projected_end_slot(now, 10, INTERVAL, float("inf")) == 1_000_000 * INTERVAL
    stamps = np.array(["2024-01-01T00:00", "2024-01-01T00:05", "2024-01-01T00:15"], dtype="datetime64[s]")
    assert rebase(stamps, 0, 3, 9000).tolist() == [9000 - 900, 9000 - 600, 9000]


def test_choose_start_keeps_day_of_week_and_time_of_day(data) -> None:
    end = int(datetime(2026, 11, 25, 14, 35, tzinfo=ZoneInfo(ZONE)).timestamp())  # a Wednesday
    start = choose_start(data.timestamps, 30, end, ZONE, INTERVAL)
    last = data.timestamps[start + 29].astype(datetime)
    assert (last.weekday(), last.hour, last.minute) == (2, 14, 35)
    with pytest.raises(ReplayError, match="but the dataset has only"):
        choose_start(data.timestamps, len(data.timestamps) + 1, end, ZONE, INTERVAL)


def test_column_mapping(data) -> None:
    cols, ids = column_mapping(data.sensor_ids, ["syn-002", "nope", "syn-000"], by_position=False)
    assert cols.tolist() == [2, 0] and ids == ["syn-002", "syn-000"]
    cols, ids = column_mapping(data.sensor_ids, ["a", "b"], by_position=True)
    assert cols.tolist() == [0, 1] and ids == ["a", "b"]
    with pytest.raises(ReplayError, match="--by-position"):
        column_mapping(data.sensor_ids, ["a", "b"], by_position=False)


def test_online_accuracy_scores_each_horizon_when_its_truth_arrives() -> None:
    acc = OnlineAccuracy(out_steps=2, rule=ZERO)
    acc.add_forecast(0, np.array([[10.0, 20.0], [30.0, 40.0]]))  # rows 1 and 2, two sensors
    acc.truth_arrived(1, np.array([12.0, 0.0]))  # sensor 2 missing: not scored
    acc.truth_arrived(2, np.array([30.0, 50.0]))
    h1, h2 = acc.horizons[1].summary(), acc.horizons[2].summary()
    assert h1 == {"n": 1, "mae": 2.0, "rmse": 2.0, "mape": pytest.approx(2 / 12)}
    assert h2["n"] == 2 and h2["mae"] == 5.0 and h2["rmse"] == pytest.approx(np.sqrt(50.0))
    assert acc.unscored() == 0
    assert HorizonStats().summary()["mae"] is None


def test_replay_streams_rebased_readings_and_scores_forecasts(data) -> None:
    start_time = 1_764_000_000.0 + 123.4
    clock = FakeClock(start_time)
    service = FakeService(list(data.sensor_ids), clock)
    slots, speedup = 40, 100.0
    result = run_replay(data, clock, service, slots=slots, speedup=speedup)

    sent = [(at, s) for at, snaps in service.posts for s in snaps]
    epochs = [datetime.fromisoformat(s["timestamp"]).timestamp() for _, s in sent]
    assert np.all(np.diff(epochs) > 0) and len(epochs) <= slots
    # the last replayed row lands in the slot in which it is sent
    assert int(epochs[-1] // INTERVAL) == int(service.posts[-1][0] // INTERVAL)
    # accelerated: 40 rows of 5 minutes in ~2 minutes of (fake) wall time
    assert clock.now - start_time == pytest.approx((slots - 1) * INTERVAL / speedup, abs=1.0)
    assert result.slots_sent == slots
    # a forecast for every slot once the input window is full
    assert result.forecasts == slots - (IN_STEPS - 1) == len(service.forecast_as_of)

    # accuracy: independently recomputed for the constant forecast the fake service gives
    first, last = result.dataset_rows
    values = data.values[first:last + 1]
    for h in (1, 5, OUT_STEPS):
        errors = [abs(CONSTANT_FORECAST - values[k + h][j])
                  for k in range(IN_STEPS - 1, slots - h) for j in range(values.shape[1])
                  if values[k + h][j] != 0]
        row = result.accuracy[h - 1]
        assert row["horizon"] == h and row["n"] == len(errors)
        assert row["mae"] == pytest.approx(np.mean(errors))
    assert result.unscored_forecasts == OUT_STEPS
    # the replayed rows keep their local time of day in the model's zone
    last_local = datetime.fromtimestamp(epochs[-1], ZoneInfo(ZONE))
    row_time = data.timestamps[last].astype(datetime)
    assert (row_time.hour, row_time.minute, row_time.weekday()) == (
        last_local.hour, last_local.minute, last_local.weekday())
    assert datetime.fromtimestamp(epochs[-1], timezone.utc) <= datetime.fromtimestamp(clock.now, timezone.utc)


def test_replay_refuses_without_the_api_key(data) -> None:
    clock = FakeClock(1_764_000_000.0)
    service = FakeService(list(data.sensor_ids), clock, api_key="other")
    with pytest.raises(ReplayError, match="--api-key"):
        run_replay(data, clock, service, slots=5, speedup=1000.0)


def test_replay_checks_the_interval(data) -> None:
    clock = FakeClock(1_764_000_000.0)
    service = FakeService(list(data.sensor_ids), clock)
    coarse = generate_synthetic(num_sensors=4, days=2, interval_minutes=15)
    with pytest.raises(ReplayError, match="interval"):
        run_replay(coarse, clock, service, slots=5, speedup=10.0)


def test_replay_follows_the_models_missing_rule() -> None:
    """Under the nan rule a 0 is a reading: posted and scored; the data must be read that way."""
    counts = generate_synthetic(kind="counts", num_sensors=4, days=8, seed=3, missing="nan")
    clock = FakeClock(1_764_000_000.0)
    service = FakeService(list(counts.sensor_ids), clock, missing_rule="nan")
    result = run_replay(counts, clock, service, slots=40, speedup=float("inf"))
    posted = [v for _, snaps in service.posts for s in snaps for v in s["values"].values()]
    first, last = result.dataset_rows
    assert 0.0 in posted and len(posted) == int(np.isfinite(counts.values[first:last + 1]).sum())
    assert result.readings_sent == len(posted)
    assert sum(h["n"] for h in result.accuracy) > 0
    zero_read = generate_synthetic(kind="counts", num_sensors=4, days=8, seed=3)
    with pytest.raises(ReplayError, match="pass --data-option missing=nan"):
        run_replay(zero_read, FakeClock(1_764_000_000.0), FakeService(list(counts.sensor_ids), clock,
                                                                      missing_rule="nan"), slots=40,
                   speedup=float("inf"))
    acc = OnlineAccuracy(out_steps=1, rule=NAN)
    acc.add_forecast(0, np.array([[1.0, 2.0]]))
    acc.truth_arrived(1, np.array([0.0, np.nan]))  # the real 0 is scored, the gap is not
    assert acc.horizons[1].summary() == {"n": 1, "mae": 1.0, "rmse": 1.0, "mape": None}
