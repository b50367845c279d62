"""An uncached forecast answers before its cache and live-accuracy writes land; identical
requests meanwhile are served from the landing output (no second model run); shutdown and
clear_cache wait for the writes; the ``Server-Timing`` header tells service time from model time.

The app runs in the test's own event loop (httpx's ASGI transport) against the real Redis and
the tiny bundle's real ONNX Runtime, so the test can hold a cache write while it asks again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from service.app import create_app
from service.background import BackgroundWrites
from tests.service.conftest import AUTH, current_slot, iso, snapshot


def _timing(header: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"(\w+);dur=([\d.]+)", header)}


def test_background_writes_drain_and_report_failures(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> list[str]:
        writes = BackgroundWrites()
        done: list[str] = []

        async def ok() -> None:
            await asyncio.sleep(0.05)
            done.append("ok")

        async def broken() -> None:
            raise RuntimeError("redis went away")

        async def stuck() -> None:
            await asyncio.sleep(30)
            done.append("stuck")

        writes.spawn(ok(), "ok")
        writes.spawn(broken(), "broken")
        await writes.drain()
        assert len(writes) == 0
        writes.spawn(stuck(), "stuck")
        await writes.drain(timeout_s=0.05)  # cancelled, not waited for
        assert len(writes) == 0
        return done

    with caplog.at_level(logging.WARNING, logger="service.background"):
        assert asyncio.run(run()) == ["ok"]
    assert "background himnet-broken failed: RuntimeError('redis went away')" in caplog.text
    assert "1 background write(s) cancelled" in caplog.text


def test_answer_does_not_wait_for_the_cache_write(make_settings: Any, reference: Any,
                                                  prefix: str, redis_url: str) -> None:
    sensors = list(reference.manifest.sensor_ids)
    last = current_slot() - 1
    rng = np.random.default_rng(3)

    async def run() -> tuple[list[httpx.Response], int, int, float]:
        app = create_app(make_settings())
        async with app.router.lifespan_context(app):
            parts = app.state.components
            cache = parts.models.active.cache
            release = asyncio.Event()
            real_put = cache.put

            async def held_put(*args: Any) -> None:  # the write is slow: Redis far away
                await release.wait()
                await real_put(*args)

            cache.put = held_put
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.post("/readings", headers=AUTH, json={"readings": [
                    snapshot(last - 11 + t, dict(zip(sensors, rng.uniform(20, 60, len(sensors))
                                                     .round(2).tolist()))) for t in range(12)]})
                assert r.status_code == 200, r.text
                runs_before = parts.engine.metrics.registry.get_sample_value(
                    "himnet_inference_duration_seconds_count") or 0.0
                first = await asyncio.wait_for(
                    client.post("/forecast", json={"as_of": iso(last)}), 30)
                again = await client.post("/forecast", json={"as_of": iso(last)})
                runs = parts.engine.metrics.registry.get_sample_value(
                    "himnet_inference_duration_seconds_count") - runs_before
                pending = len(parts.forecaster.background)
                release.set()
                await parts.forecaster.clear_cache()  # waits for the held write first
                stored_after_clear = len(list(redis.Redis.from_url(redis_url).scan_iter(
                    f"{prefix}:*:fc:*")))
                third = await client.post("/forecast", json={"as_of": iso(last)})
                await parts.forecaster.background.drain()
        return [first, again, third], int(runs), pending, stored_after_clear

    (first, again, third), runs, pending, stored_after_clear = asyncio.run(run())
    assert [r.status_code for r in (first, again, third)] == [200, 200, 200]
    assert [r.headers["x-cache"] for r in (first, again, third)] == ["miss", "hit", "miss"]
    assert runs == 1, "the second request ran the model again"
    assert pending == 1  # the held write was still in flight when both had their answers
    assert stored_after_clear == 0  # the write landed before the clear, not after it
    assert again.json()["forecasts"] == first.json()["forecasts"]
    assert len(list(redis.Redis.from_url(redis_url).scan_iter(f"{prefix}:*:fc:*"))) == 1


def test_server_timing_separates_model_from_service(make_settings: Any, reference: Any) -> None:
    sensors = list(reference.manifest.sensor_ids)
    last = current_slot() - 1
    rng = np.random.default_rng(4)

    async def run() -> list[httpx.Response]:
        app = create_app(make_settings())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.post("/readings", headers=AUTH, json={"readings": [
                    snapshot(last - 11 + t, dict(zip(sensors, rng.uniform(20, 60, len(sensors))
                                                     .round(2).tolist()))) for t in range(12)]})
                miss = await client.post("/forecast", json={"as_of": iso(last)})
                hit = await client.post("/forecast", json={"as_of": iso(last)})
                live = await client.get("/livez")
            await app.state.components.forecaster.background.drain()
        return [r, miss, hit, live]

    readings, miss, hit, live = asyncio.run(run())
    assert miss.headers["x-cache"] == "miss" and hit.headers["x-cache"] == "hit"
    computed = _timing(miss.headers["server-timing"])
    assert set(computed) == {"app", "queue", "model"}
    assert 0 < computed["model"] <= computed["app"]
    assert 'desc="batch 1"' in miss.headers["server-timing"]
    for r in (readings, hit, live):  # no model run behind these answers: no leak from `miss`
        assert set(_timing(r.headers["server-timing"])) == {"app"}
