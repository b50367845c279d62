"""Where the time of a batch-1 uncached forecast from the buffer goes, stage by stage.

The real app (``create_app``, Redis buffer, METR-LA preset with random weights) runs in this
process under its lifespan; readings go in through ``POST /readings``. Each stage of the
forecast path is then timed on its own with the app's own components (median of ``--repeats``,
a different window every time): request parsing, as_of validation, the Redis round trip (window
+ cache probe), digest, imputation, time features, the runtime alone on the inference thread,
the same call through the engine (thread hop, micro-batching bookkeeping), the cache write,
rendering, metrics. Then whole requests through the ASGI stack in process (httpx's ASGI
transport: routing, middleware, FastAPI; no sockets), against ``GET /livez`` for what the test
client and the framework cost by themselves. HTTP over sockets (uvicorn) is what
``benchmarks/load_service.py`` measures, paired::

    python benchmarks/overhead.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.load_service import API_KEY, REPO, _drop_keys, ensure_bundle, iso  # noqa: E402


async def _median_ms(fn: Callable[[int], Awaitable[Any]], repeats: int) -> float:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        await fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


async def _stages(parts: Any, slots: list[int], repeats: int) -> dict[str, float]:
    from service.forecasting import impute
    from service.schemas import ForecastRequest

    fc, buf, eng, clock = parts.forecaster, parts.buffer, parts.engine, parts.clock
    model = parts.models.active  # the served model: its engine, cache and version
    bodies = [json.dumps({"as_of": iso(s)}).encode() for s in slots]
    windows = {s: (await buf.read_window_with(s, 12, []))[0] for s in slots}
    inputs = [(impute(windows[s], "missing_value", 0.0), clock.features(s - 11, 12),
               clock.features(s + 1, 12)) for s in slots]
    loop = asyncio.get_running_loop()

    def bare(i: int) -> Any:
        r, ti, tt = inputs[i]
        return loop.run_in_executor(eng._executor, eng.runtime.predict, r[None], ti[None], tt[None])

    async def sync(f: Callable[[int], Any]) -> Callable[[int], Awaitable[Any]]:
        async def run(i: int) -> Any:
            return f(i)
        return run

    out = await eng.predict(*inputs[0])
    from service.cache import ModelOutput
    from service.forecasting import Forecast
    output = ModelOutput(*out)
    steps = list(range(1, 13))
    stage = {
        "parse body (pydantic)": await sync(lambda i: ForecastRequest.model_validate_json(bodies[i])),
        "as_of -> slot (rules)": await sync(lambda i: parts.inputs.as_of_slot(
            ForecastRequest.model_validate_json(bodies[i]).as_of)),
        "Redis: window + cache probe": lambda i: buf.read_window_with(
            slots[i], 12, [model.cache.prefetch_key(slots[i])]),
        "digest (blake2b)": await sync(lambda i: fc.digest(windows[slots[i]], slots[i],
                                                             model.version)),
        "impute": await sync(lambda i: impute(windows[slots[i]], "missing_value", 0.0)),
        "time features (in + out)": await sync(lambda i: (clock.features(slots[i] - 11, 12),
                                                          clock.features(slots[i] + 1, 12))),
        "runtime via run_in_executor": bare,
        "runtime via engine.predict": lambda i: eng.predict(*inputs[i]),
        "Redis: cache put": lambda i: model.cache.put(slots[i], bytes(16), output, 60.0),
        "render (fresh)": await sync(lambda i: parts.renderer.render(Forecast(
            model.version, slots[i], windows[slots[i]], output, i.to_bytes(16, "big") + b"r",
            "buffer", False, "as_of", slots[i]),
            None, steps, False)),
        "metrics (counter + histogram)": await sync(lambda i: (
            parts.metrics.requests.labels("/forecast", "POST", "200").inc(),
            parts.metrics.request_seconds.labels("/forecast", "POST", "200").observe(0.01))),
    }
    result = {name: await _median_ms(fn, repeats) for name, fn in stage.items()}
    result["runtime alone (timed on the inference thread)"] = await _thread_median(
        eng, inputs, repeats)
    return result


def _timed(fn: Callable[..., Any], args: tuple[np.ndarray, ...]) -> float:
    r, ti, tt = args
    t0 = time.perf_counter()
    fn(r[None], ti[None], tt[None])
    return time.perf_counter() - t0


async def _thread_median(eng: Any, inputs: list[Any], repeats: int) -> float:
    loop = asyncio.get_running_loop()
    times = [await loop.run_in_executor(eng._executor, _timed, eng.runtime.predict, inputs[i])
             for i in range(repeats)]
    return statistics.median(times) * 1e3


async def _requests(client: Any, parts: Any, slots: list[int], repeats: int) -> dict[str, float]:
    async def forecast(i: int) -> None:
        r = await client.post("/forecast", json={"as_of": iso(slots[i])})
        assert r.status_code == 200 and r.headers["x-cache"] == "miss", r.text

    async def cached(i: int) -> None:
        r = await client.post("/forecast", json={"as_of": iso(slots[0])})
        assert r.headers["x-cache"] == "hit"

    return {"ASGI: GET /livez (client + framework)": await _median_ms(
                lambda i: client.get("/livez"), repeats),
            "ASGI: POST /forecast uncached": await _median_ms(forecast, repeats),
            "ASGI: POST /forecast cached": await _median_ms(cached, repeats)}


async def _run(args: argparse.Namespace, bundle: Path) -> dict[str, float]:
    import httpx

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(bundle_dir=bundle, redis_url=args.redis_url, api_key=API_KEY,
                        redis_prefix=args.prefix, retention_minutes=5 * 3 * (args.repeats + 20),
                        threads=args.threads, log_level="warning")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        parts = app.state.components
        sensors = list(parts.manifest.sensor_ids)
        last = int(time.time() // 300) - 1
        first = last - 2 * args.repeats - 24
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            rng = np.random.default_rng(0)
            for s in range(first, last + 1):
                r = await client.post("/readings", headers={"X-API-Key": API_KEY}, json={
                    "readings": [{"timestamp": iso(s), "values": dict(zip(
                        sensors, rng.uniform(5, 70, len(sensors)).round(2).tolist()))}]})
                assert r.status_code == 200, r.text
            stage_slots = list(range(last - args.repeats + 1, last + 1))
            stages = await _stages(parts, stage_slots, args.repeats)
            await parts.forecaster.clear_cache()
            request_slots = list(range(first + 12, first + 12 + args.repeats))
            stages.update(await _requests(client, parts, request_slots, args.repeats))
    return stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "artifacts" / "bench-metr-la")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    args.prefix = f"bench-{uuid.uuid4().hex[:8]}"
    bundle = ensure_bundle(args.bundle)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    try:
        stages = asyncio.run(_run(args, bundle))
    finally:
        _drop_keys(args.redis_url, args.prefix)
    for name, ms in stages.items():
        print(f"  {name:<40} {ms:8.3f} ms")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
