"""A table of bad requests (issue 13, §3): each gets its 4xx problem, never a 5xx, and stores
nothing. Run against a real Redis and against the in-memory buffer.

Each row is (id, path, body, status, problem type, headers); a body is JSON (built from the
test's context: the current slot and the sensors) or raw bytes for what JSON cannot say (NaN,
Infinity, 1e309), which Python's JSON reader would otherwise turn into floats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from tests.service.conftest import AUTH, current_slot, iso, serve_app, snapshot

T_IN = 12
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Ctx:
    now: int  # current slot
    sensors: list[str]

    @property
    def last(self) -> int:
        return self.now - 1

    def ok(self) -> dict[str, float]:
        return {self.sensors[0]: 50.0}

    def stamps(self, last: int | None = None) -> list[str]:
        end = self.last if last is None else last
        return [iso(s) for s in range(end - T_IN + 1, end + 1)]

    def rows(self, value: Any = 50.0) -> list[list[Any]]:
        return [[value] * len(self.sensors) for _ in range(T_IN)]


Body = Callable[[Ctx], Any]


def _readings(*snaps: Callable[[Ctx], dict[str, Any]]) -> Body:
    return lambda c: {"readings": [s(c) for s in snaps]}


def _snap(stamp: Any, values: Callable[[Ctx], Any] | None = None) -> Callable[[Ctx], dict]:
    def make(c: Ctx) -> dict[str, Any]:
        ts = stamp(c) if callable(stamp) else stamp
        return {"timestamp": ts, "values": values(c) if values else c.ok()}
    return make


def _raw_reading(token: str) -> Body:
    return lambda c: ('{"readings":[{"timestamp":"%s","values":{"%s":%s}}]}'
                      % (iso(c.last), c.sensors[0], token)).encode()


def _raw_minutes(token: str) -> Body:
    return lambda c: b'{"horizon_minutes":[%s]}' % token.encode()


def _window(stamps: Callable[[Ctx], Any] | None = None, values: Any = 50.0) -> Body:
    return lambda c: {"window": {"timestamps": stamps(c) if stamps else c.stamps(),
                                 "values": c.rows(values)}}


def _year(year: int) -> Callable[[Ctx], list[str]]:
    return lambda c: [f"{year:04d}-01-01T{h:02d}:{m:02d}:00Z"
                      for h, m in [(0, 5 * k) for k in range(T_IN)]]


def _ghosts(count: int) -> Body:
    return lambda c: {"readings": [{"timestamp": iso(c.last),
                                    "values": {f"g{i}": 1.0 for i in range(count)}}]}


R, F = "/readings", "/forecast"
BAD: list[tuple[str, str, Body, int, str, dict[str, str]]] = [
    # --- readings: timestamps at the edges of datetime (were 500) ---------------------------
    ("misaligned-9999", R, _readings(_snap("9999-12-31T23:59:59Z")), 422, "invalid-readings", AUTH),
    ("misaligned-year1+14", R, _readings(_snap("0001-01-01T00:00:01+14:00")), 422,
     "invalid-readings", AUTH),
    ("aligned-9999", R, _readings(_snap("9999-12-31T23:55:00Z")), 422, "invalid-readings", AUTH),
    ("aligned-year1", R, _readings(_snap("0001-01-01T00:00:00Z")), 422, "invalid-readings", AUTH),
    ("misaligned-now", R, _readings(_snap(lambda c: iso(c.last)[:-3] + "30Z")), 422,
     "invalid-readings", AUTH),
    ("in-future", R, _readings(_snap(lambda c: iso(c.now + 2))), 422, "invalid-readings", AUTH),
    ("too-old", R, _readings(_snap(lambda c: iso(c.now - 30))), 422, "invalid-readings", AUTH),
    ("duplicate", R, _readings(_snap(lambda c: iso(c.last)), _snap(lambda c: iso(c.last))), 422,
     "invalid-readings", AUTH),
    # --- readings: strict types -------------------------------------------------------------
    ("value-string", R, _readings(_snap(lambda c: iso(c.last), lambda c: {c.sensors[0]: "61.5"})),
     422, "invalid-request", AUTH),
    ("value-true", R, _readings(_snap(lambda c: iso(c.last), lambda c: {c.sensors[0]: True})),
     422, "invalid-request", AUTH),
    ("value-false", R, _readings(_snap(lambda c: iso(c.last), lambda c: {c.sensors[0]: False})),
     422, "invalid-request", AUTH),
    ("value-list", R, _readings(_snap(lambda c: iso(c.last), lambda c: {c.sensors[0]: [1.0]})),
     422, "invalid-request", AUTH),
    ("timestamp-int", R, _readings(_snap(lambda c: c.last * 300)), 422, "invalid-request", AUTH),
    ("timestamp-float", R, _readings(_snap(lambda c: c.last * 300.0)), 422, "invalid-request",
     AUTH),
    ("timestamp-digits", R, _readings(_snap(lambda c: str(c.last * 300))), 422,
     "invalid-request", AUTH),
    ("timestamp-null", R, _readings(_snap(None)), 422, "invalid-request", AUTH),
    ("value-nan", R, _raw_reading("NaN"), 422, "invalid-readings", AUTH),
    ("value-infinity", R, _raw_reading("Infinity"), 422, "invalid-readings", AUTH),
    ("value-minus-infinity", R, _raw_reading("-Infinity"), 422, "invalid-readings", AUTH),
    ("value-1e309", R, _raw_reading("1e309"), 422, "invalid-readings", AUTH),
    ("value-huge-int", R, _raw_reading("1" + "0" * 400), 422, "invalid-request", AUTH),
    # --- readings: values and sensors -------------------------------------------------------
    ("out-of-range", R, _readings(_snap(lambda c: iso(c.last), lambda c: {c.sensors[0]: -1.0})),
     422, "invalid-readings", AUTH),
    ("unknown-sensor", R, _readings(_snap(lambda c: iso(c.last),
                                          lambda c: {"ghost": 1.0, c.sensors[1]: 2.0})),
     422, "unknown-sensors", AUTH),
    ("unknown-and-out-of-range", R, _readings(_snap(lambda c: iso(c.last), lambda c: {
        "ghost": 1.0, c.sensors[1]: 1e9})), 422, "invalid-readings", AUTH),
    ("50000-unknown", R, _ghosts(50_000), 422, "unknown-sensors", AUTH),
    ("one-bad-snapshot", R, _readings(_snap(lambda c: iso(c.last)),
                                      _snap(lambda c: iso(c.last - 1),
                                            lambda c: {c.sensors[0]: 1e9})),
     422, "invalid-readings", AUTH),
    ("too-many-timestamps", R, lambda c: {"readings": [snapshot(c.last - k, c.ok())
                                                       for k in range(21)]},
     422, "too-many-timestamps", AUTH),
    # --- readings: shape and access ---------------------------------------------------------
    ("readings-empty", R, lambda c: {"readings": []}, 422, "invalid-request", AUTH),
    ("values-empty", R, _readings(_snap(lambda c: iso(c.last), lambda c: {})), 422,
     "invalid-request", AUTH),
    ("extra-member", R, lambda c: {"readings": [{**snapshot(c.last, c.ok()), "unit": "mph"}]},
     422, "invalid-request", AUTH),
    ("readings-not-list", R, lambda c: {"readings": snapshot(c.last, c.ok())}, 422,
     "invalid-request", AUTH),
    ("no-key", R, _readings(_snap(lambda c: iso(c.last))), 401, "unauthorized", {}),
    ("wrong-key", R, _readings(_snap(lambda c: iso(c.last))), 401, "unauthorized",
     {"X-API-Key": "wrong"}),
    # --- forecast: non-finite horizons (were 500) -------------------------------------------
    ("minutes-1e309", F, _raw_minutes("1e309"), 422, "invalid-horizon", {}),
    ("minutes-nan", F, _raw_minutes("NaN"), 422, "invalid-horizon", {}),
    ("minutes-minus-infinity", F, _raw_minutes("-Infinity"), 422, "invalid-horizon", {}),
    ("minutes-1e308", F, _raw_minutes("1e308"), 422, "invalid-horizon", {}),
    ("minutes-7", F, lambda c: {"horizon_minutes": [7]}, 422, "invalid-horizon", {}),
    ("minutes-string", F, lambda c: {"horizon_minutes": ["15"]}, 422, "invalid-request", {}),
    ("horizons-true", F, lambda c: {"horizons": [True]}, 422, "invalid-request", {}),
    ("horizons-string", F, lambda c: {"horizons": ["3"]}, 422, "invalid-request", {}),
    ("horizons-float", F, lambda c: {"horizons": [3.0]}, 422, "invalid-request", {}),
    ("horizons-0", F, lambda c: {"horizons": [0]}, 422, "invalid-horizon", {}),
    ("horizons-huge", F, lambda c: {"horizons": [10 ** 30]}, 422, "invalid-horizon", {}),
    ("both-horizon-kinds", F, lambda c: {"horizons": [1], "horizon_minutes": [5]}, 422,
     "invalid-request", {}),
    ("unknown-forecast-sensor", F, lambda c: {"sensors": ["ghost"]}, 422, "unknown-sensors", {}),
    # --- forecast: as_of --------------------------------------------------------------------
    ("as-of-year1+14", F, lambda c: {"as_of": "0001-01-01T00:00:01+14:00"}, 422,
     "invalid-as-of", {}),
    ("as-of-9999", F, lambda c: {"as_of": "9999-12-31T23:59:59Z"}, 422, "invalid-as-of", {}),
    ("as-of-int", F, lambda c: {"as_of": c.last * 300}, 422, "invalid-request", {}),
    ("as-of-misaligned", F, lambda c: {"as_of": iso(c.last)[:-3] + "10Z"}, 422, "invalid-as-of",
     {}),
    ("as-of-future", F, lambda c: {"as_of": iso(c.now + 3)}, 422, "invalid-as-of", {}),
    # --- forecast: stateless windows --------------------------------------------------------
    ("window-year1", F, _window(_year(1)), 422, "invalid-window", {}),
    ("window-year9999", F, _window(_year(9999)), 422, "invalid-window", {}),
    ("window-timestamps-int", F, _window(lambda c: [s * 300 for s in range(c.last - 11,
                                                                            c.last + 1)]),
     422, "invalid-request", {}),
    ("window-value-string", F, _window(values="50"), 422, "invalid-request", {}),
    ("window-value-true", F, _window(values=True), 422, "invalid-request", {}),
    ("window-value-nan", F, lambda c: b'{"window":{"timestamps":%s,"values":%s}}' % (
        str(c.stamps()).replace("'", '"').encode(),
        str(c.rows()).replace("50.0", "NaN").encode()), 422, "invalid-window", {}),
    ("window-out-of-range", F, _window(values=1e9), 422, "invalid-window", {}),
    ("window-all-null", F, _window(values=None), 422, "invalid-window", {}),
    ("window-and-as-of", F, lambda c: {**_window()(c), "as_of": iso(c.last)}, 422,
     "invalid-request", {}),
    # --- routes -----------------------------------------------------------------------------
    ("unknown-path", "/nowhere", lambda c: {}, 404, "not-found", {}),
]  # 413 (body too large) is in test_errors.py: a refused large upload may reset the socket


def _stored(app: Any, redis_url: str | None) -> dict[Any, Any]:
    """Everything the buffer holds (Redis keys of the prefix, or the memory rows)."""
    buffer = app.state.components.buffer
    if redis_url is None:
        return {k: v.tobytes() for k, v in buffer._rows.items()}
    client = redis.Redis.from_url(redis_url)
    try:
        out: dict[Any, Any] = {}
        for key in client.scan_iter(match=f"{buffer.prefix}:slot*", count=1000):
            kind = client.type(key)
            out[key] = (client.zrange(key, 0, -1, withscores=True) if kind == b"zset"
                        else client.get(key))
        return out
    finally:
        client.close()


def _send(client: httpx.Client, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    if isinstance(body, bytes):
        return client.post(path, content=body, headers={**JSON, **headers})
    return client.post(path, json=body, headers=headers)


def test_the_table_is_large_enough() -> None:
    assert len(BAD) >= 40 and len({row[0] for row in BAD}) == len(BAD)


@pytest.mark.parametrize("store", ["redis", "memory"])
def test_bad_requests(make_settings, reference, redis_url: str, store: str) -> None:
    url = redis_url if store == "redis" else None
    settings = make_settings(redis_url=url, max_batch_timestamps=20, value_max=200.0)
    ctx = Ctx(current_slot(), list(reference.manifest.sensor_ids))
    failures: list[str] = []
    with serve_app(settings) as (client, app):
        seed = {"readings": [snapshot(s, {x: 40.0 + i for i, x in enumerate(ctx.sensors)})
                             for s in range(ctx.last - T_IN, ctx.last)]}  # up to last-1
        assert client.post("/readings", json=seed, headers=AUTH).status_code == 200
        before = _stored(app, url)
        assert before
        for name, path, body, status, slug, headers in BAD:
            r = _send(client, path, body(ctx), headers)
            problem = r.json() if r.headers.get("content-type") == "application/problem+json" \
                else {}
            if (r.status_code, problem.get("type")) != (status, f"urn:himnet:problem:{slug}"):
                failures.append(f"{name}: {r.status_code} {r.text[:200]}")
            elif _stored(app, url) != before:
                failures.append(f"{name}: the buffer changed")
            elif name == "50000-unknown":
                if len(r.content) > 20_000 or problem["unknown_sensors_total"] != 50_000:
                    failures.append(f"{name}: {len(r.content)} bytes")
        # the service still works after all of it
        ok = client.post("/forecast", json={"as_of": iso(ctx.last - 1)})
        assert ok.status_code == 200, ok.text
    assert not failures, "\n".join(failures)
    assert np.isfinite(ok.json()["forecasts"][ctx.sensors[0]]).all()
