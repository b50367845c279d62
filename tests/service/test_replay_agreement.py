"""The replay client's online accuracy and the service's ``GET /accuracy`` agree on the same
replay: a real service (uvicorn, Redis, ONNX Runtime) in replay mode, fed past days whose time
of day is kept, at speedup inf."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from replay import ServiceClient, replay
from tests.service.conftest import API_KEY, serve
from training.datasets import load_dataset


@pytest.mark.parametrize("grace", [0, 2])
def test_replay_and_service_score_the_same_targets(make_settings, reference, grace) -> None:
    data = load_dataset("synthetic", num_sensors=8, days=3)  # the tiny model's data
    settings = make_settings(replay_mode=True, accuracy_grace_slots=grace)
    with serve(settings) as http:
        http.headers["X-API-Key"] = API_KEY
        result = replay(ServiceClient(http), data, slots=60, speedup=float("inf"), start=300,
                        log=lambda _: None, api_key=API_KEY)
        live = http.get("/accuracy").json()
        info = http.get("/model").json()
    assert result.readings_refused == {} and result.forecast_errors == {}
    # the data's clock is kept: row 300's local time of day and weekday
    zone = ZoneInfo(info["timezone"])
    first = datetime.fromisoformat(result.first_timestamp.replace("Z", "+00:00")).astimezone(zone)
    row = data.timestamps[300].astype(datetime)
    assert (first.hour, first.minute, first.weekday()) == (row.hour, row.minute, row.weekday())
    day = live["windows"]["day"]["horizons"]
    for mine, theirs in zip(result.accuracy, day):
        assert mine["n"] == theirs["scored_targets"] > 0
        assert theirs["mae"] == pytest.approx(mine["mae"], rel=1e-4, abs=1e-4)
        assert theirs["rmse"] == pytest.approx(mine["rmse"], rel=1e-4, abs=1e-4)
    assert np.isfinite(day[0]["skill"])
