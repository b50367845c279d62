"""Replicas share one Redis; when Redis goes away writes are refused and come back by themselves."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.ports import free_port
from tests.service.conftest import AUTH, current_slot, iso, serve, snapshot


def _client(port: int) -> redis.Redis:
    """A client that gives up at once (the default one retries with backoff for seconds)."""
    return redis.Redis(port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


def _snapshots(sensors: list[str], last: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"readings": [snapshot(s, {x: float(rng.uniform(20, 70)) for x in sensors})
                         for s in range(last - 11, last + 1)]}


def test_two_instances_share_buffer_and_cache(make_settings, reference) -> None:
    sensors = list(reference.manifest.sensor_ids)
    last = current_slot() - 1
    settings = make_settings()
    with serve(settings) as a, serve(settings) as b:
        assert a.post("/readings", json=_snapshots(sensors, last, 1), headers=AUTH).status_code == 200
        from_b = b.post("/forecast")
        assert from_b.status_code == 200, from_b.text
        assert from_b.headers["x-cache"] == "miss"
        from_a = a.post("/forecast")
        assert from_a.headers["x-cache"] == "hit"  # B's result, through the shared cache
        body_a, body_b = from_a.json(), from_b.json()
        assert 0 <= body_a.pop("newest_reading_age_s") - body_b.pop("newest_reading_age_s") < 30
        assert body_a == body_b  # measured per answer: the age of the newest reading
        # a late reading written through B invalidates the window for A as well
        r = b.post("/readings", json={"readings": [snapshot(last - 2, {sensors[0]: 1.5})]},
                   headers=AUTH)
        assert r.status_code == 200
        again = a.post("/forecast")
        assert again.headers["x-cache"] == "miss"
        assert again.json()["forecasts"] != from_a.json()["forecasts"]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[int, Callable[[], None]]]:
    """A private redis-server on a free port, with a function to (re)start it."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (scripts/ensure-redis.sh installs it)")
    port = free_port()

    def start() -> None:
        subprocess.run([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--daemonize", "yes", "--dir", str(tmp_path),
                        "--logfile", str(tmp_path / "redis.log")], check=True)
        client = _client(port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"private redis on port {port} did not start")

    start()
    yield port, start
    try:
        _client(port).shutdown(nosave=True)
    except redis.exceptions.ConnectionError:
        pass


def _stop(port: int) -> None:
    try:
        _client(port).shutdown(nosave=True)
    except redis.exceptions.ConnectionError:
        pass  # SHUTDOWN closes the connection it came on
    for _ in range(100):
        try:
            _client(port).ping()
        except redis.exceptions.ConnectionError:
            return
        time.sleep(0.05)
    raise RuntimeError("redis did not stop")


def _gauge(client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exported")


def test_redis_down_and_back(make_settings, reference, own_redis) -> None:
    """A real redis-server stopped and restarted on the same port: the replica stays ready and
    serves what needs no Redis; buffer routes answer 503 + Retry-After, then recover alone."""
    port, start = own_redis
    sensors = list(reference.manifest.sensor_ids)
    last = current_slot() - 1
    window = {"timestamps": [iso(s) for s in range(last - 11, last + 1)],
              "values": [[50.0] * len(sensors)] * 12}
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_s=0.5)
    with serve(settings) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/readings", json=_snapshots(sensors, last, 2),
                           headers=AUTH).status_code == 200
        assert client.post("/forecast").status_code == 200

        _stop(port)
        started = time.monotonic()
        r = client.post("/readings", json=_snapshots(sensors, last, 3), headers=AUTH)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["retry-after"] == "1"
        assert "nothing was stored" in r.json()["detail"]
        assert time.monotonic() - started < 5  # refused promptly, not after long retries
        buffered = client.post("/forecast")
        assert buffered.status_code == 503 and "window" in buffered.json()["detail"]
        stateless = client.post("/forecast", json={"window": window})
        assert stateless.status_code == 200, stateless.text
        assert client.get("/model").status_code == 200
        assert client.get("/embeddings").status_code == 200
        assert client.get(f"/embeddings/{sensors[0]}").status_code == 200
        st = client.get(f"/embeddings/{sensors[0]}", params={"include": "st"})
        assert st.status_code == 503 and st.headers["retry-after"] == "1"  # needs the buffer
        ready = client.get("/readyz")  # Redis is reported, it does not make the replica unready
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"] == {"model": "ok", "inference": "ok",
                                          "buffer": "unreachable"}
        assert client.get("/livez").status_code == 200
        metrics = client.get("/metrics").text
        assert 'himnet_redis_errors_total{operation="write"}' in metrics
        assert 'himnet_readings_rejected_total{reason="store_unavailable"} 96.0' in metrics
        assert _gauge(client, "himnet_ready") == 1.0
        assert _gauge(client, "himnet_redis_up") == 0.0

        start()  # an empty Redis comes back on the same port: no service restart
        deadline = time.monotonic() + 10
        while (r := client.post("/readings", json=_snapshots(sensors, last, 4),
                                headers=AUTH)).status_code != 200:
            assert r.status_code == 503, r.text
            assert time.monotonic() < deadline, "the write path did not recover"
            time.sleep(0.1)
        assert client.post("/forecast").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert _gauge(client, "himnet_redis_up") == 1.0
