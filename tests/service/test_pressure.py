"""Serving under pressure: micro-batching gives the unbatched answers, shedding is quick and
correct (503 problem+json with Retry-After), accepted forecasts stay right.

Engine-level tests run the real ONNX Runtime of the tiny bundle; the admission-estimate test
uses a slow fake runtime (a unit test of the estimate, nothing else). HTTP tests run uvicorn.
Timing bounds are generous: they catch a request that waited for the model, not a slow box.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.inference import BatchPolicy, InferenceEngine, Overloaded, request_arrival
from service.metrics import Metrics
from tests.service.conftest import current_slot, features, iso, serve_app

T_IN = T_OUT = 12


def _windows(reference: Any, count: int, seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    """``count`` different (readings, input_time, target_time) windows, different as_of too."""
    rng = np.random.default_rng(seed)
    m = reference.manifest
    out = []
    for i in range(count):
        last = 1_000 + 7 * i
        out.append((rng.uniform(20, 70, (T_IN, m.num_nodes)).astype(np.float32),
                    features(last - T_IN + 1, T_IN, m.timezone),
                    features(last + 1, T_OUT, m.timezone)))
    return out


def _batch_sizes(metrics: Metrics) -> tuple[float, float]:
    """(model runs, windows run) from the batch-size histogram."""
    runs = metrics.registry.get_sample_value("himnet_inference_batch_size_count")
    windows = metrics.registry.get_sample_value("himnet_inference_batch_size_sum")
    return runs or 0.0, windows or 0.0


async def _engine(bundle: Path, policy: BatchPolicy, max_pending: int = 64) -> InferenceEngine:
    engine = InferenceEngine(max_pending, Metrics(), policy)
    await engine.load(bundle, "onnx", "cpu", 1)
    return engine


def test_batched_forecasts_equal_unbatched(tiny_bundle: Path, reference: Any) -> None:
    """Windows that queue while the model is busy run together and get their own answers."""
    windows = _windows(reference, 10)
    want = [reference.predict(r[None], ti[None], tt[None]) for r, ti, tt in windows]

    async def run() -> tuple[list[Any], tuple[float, float]]:
        engine = await _engine(tiny_bundle, BatchPolicy(max_batch=4))
        try:
            got = await asyncio.gather(*(engine.predict(*w) for w in windows))
            return list(got), _batch_sizes(engine.metrics)
        finally:
            engine.close()

    got, (runs, windows_run) = asyncio.run(run())
    assert windows_run == 10
    assert runs < 10, "nothing was batched"  # the first runs alone, the rest in batches of <= 4
    assert runs >= 3  # 1 + ceil(9 / 4)
    for (f, st, spread), (wf, wst) in zip(got, want):
        assert spread is None  # a single model
        assert f.shape == wf[0].shape and st.shape == wst[0].shape
        np.testing.assert_allclose(f, wf[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(st, wst[0], rtol=0, atol=1e-5)


def test_a_forecast_alone_runs_at_once(tiny_bundle: Path, reference: Any) -> None:
    """An idle engine never holds a forecast for a batch that may not fill (batch_wait 0)."""
    (window,) = _windows(reference, 1)

    async def run() -> tuple[float, float]:
        engine = await _engine(tiny_bundle, BatchPolicy(max_batch=32))
        try:
            for _ in range(3):
                await engine.predict(*window)
            return _batch_sizes(engine.metrics)
        finally:
            engine.close()

    assert asyncio.run(run()) == (3.0, 3.0)


def test_batch_wait_holds_an_idle_engine_for_company(tiny_bundle: Path, reference: Any) -> None:
    """With a wait, forecasts arriving together run as one batch even on an idle engine; a full
    batch does not wait for the timer."""
    windows = _windows(reference, 7, seed=1)
    want = [reference.predict(r[None], ti[None], tt[None])[0][0] for r, ti, tt in windows]

    async def run() -> tuple[list[Any], tuple[float, float], float]:
        engine = await _engine(tiny_bundle, BatchPolicy(max_batch=4, max_wait_ms=5_000))
        try:
            started = time.perf_counter()
            full = await asyncio.gather(*(engine.predict(*w) for w in windows[:4]))
            took = time.perf_counter() - started
            rest = await asyncio.gather(*(engine.predict(*w) for w in windows[4:]))
            return [*full, *rest], _batch_sizes(engine.metrics), took
        finally:
            engine.close()

    got, sizes, took = asyncio.run(run())
    assert sizes == (2.0, 7.0)  # a full batch of 4 at once, then 3 held until the wait ended
    assert took < 4.0, "a full batch waited for the timer"
    for (f, _, _), w in zip(got, want):
        np.testing.assert_allclose(f, w, rtol=0, atol=1e-5)


class _SlowRuntime:
    """A fake runtime: every window costs ``seconds`` (the estimate's unit test only)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict_full(self, readings: np.ndarray, *_: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        time.sleep(self.seconds * readings.shape[0])
        return np.zeros((readings.shape[0], T_OUT, 2), np.float32), np.zeros((readings.shape[0], 2, 1)), None


def test_start_deadline_refuses_at_once_when_the_wait_is_known_to_be_too_long() -> None:
    async def run() -> tuple[float, str, int]:
        engine = InferenceEngine(64, Metrics(), BatchPolicy(max_batch=1, start_deadline_ms=50))
        engine.runtime = _SlowRuntime(0.3)
        engine._per_window_s = 0.3  # as measured at load
        window = (np.zeros((T_IN, 2), np.float32), np.zeros((T_IN, 2), np.float32),
                  np.zeros((T_OUT, 2), np.float32))
        first = asyncio.ensure_future(engine.predict(*window))
        await asyncio.sleep(0.01)  # the first is running
        started = time.perf_counter()
        try:
            await engine.predict(*window)
        except Overloaded as exc:
            message = str(exc)
        took = time.perf_counter() - started
        await first
        engine.close()
        shed = engine.metrics.registry.get_sample_value("himnet_requests_shed_total",
                                                        {"reason": "start_deadline"})
        return took, message, int(shed or 0)

    took, message, shed = asyncio.run(run())
    assert took < 0.1, f"refused after {took:.3f} s: it waited"
    assert "50 ms" in message and shed == 1


def test_start_deadline_counts_from_the_requests_arrival_not_from_its_queueing() -> None:
    """While the model is busy, a request that spent most of its deadline on the way to the model
    (body, Redis, window under load) is refused at once although its own wait would be short; a
    fresh one is queued and runs; an idle engine runs even the late one (it can start now)."""
    window = (np.zeros((T_IN, 2), np.float32), np.zeros((T_IN, 2), np.float32),
              np.zeros((T_OUT, 2), np.float32))

    async def arriving(engine: InferenceEngine, ago_s: float) -> tuple[str, float]:
        token = request_arrival.set(time.perf_counter() - ago_s)
        started = time.perf_counter()
        try:
            await engine.predict(*window)
            message = ""
        except Overloaded as exc:
            message = str(exc)
        finally:
            request_arrival.reset(token)
        return message, time.perf_counter() - started

    async def run() -> tuple[tuple[str, float], tuple[str, float], tuple[str, float]]:
        engine = InferenceEngine(64, Metrics(), BatchPolicy(max_batch=1, start_deadline_ms=40))
        engine.runtime = _SlowRuntime(0.02)
        engine._per_window_s = 0.02  # as measured at load
        busy = asyncio.ensure_future(engine.predict(*window))
        await asyncio.sleep(0.005)  # it runs: about 15 ms left
        late, fresh = await asyncio.gather(arriving(engine, 0.045), arriving(engine, 0.005))
        await busy
        idle = await arriving(engine, 0.045)
        engine.close()
        return late, fresh, idle

    (late, took), (fresh, _), (idle, _) = asyncio.run(run())
    assert "40 ms" in late and took < 0.01, (late, took)
    assert fresh == "" and idle == ""


def _stateless(reference: Any, last: int, level: float) -> dict[str, Any]:
    n = reference.manifest.num_nodes
    return {"window": {"timestamps": [iso(s) for s in range(last - T_IN + 1, last + 1)],
                       "values": [[level + j for j in range(n)]] * T_IN}}


def _expected(reference: Any, body: dict[str, Any], last: int) -> np.ndarray:
    tz = reference.manifest.timezone
    values = np.array(body["window"]["values"], np.float32)
    f, _ = reference.predict(values[None], features(last - T_IN + 1, T_IN, tz)[None],
                             features(last + 1, T_OUT, tz)[None])
    return f[0]


def _assert_shed(response: httpx.Response, took: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "2"
    assert response.json()["type"] == "urn:himnet:problem:overloaded"
    assert took < 2.0, f"the refusal took {took:.2f} s"


@pytest.mark.parametrize("limit", ["in_flight", "start_deadline"])
def test_shed_forecast_is_answered_at_once_and_accepted_ones_are_right(
        make_settings, reference, limit: str) -> None:
    """The model is held busy; one forecast waits for it, the next one is shed (by the HTTP
    in-flight bound, or by the start deadline while it waits); afterwards both kinds of
    request get correct answers."""
    bound = ({"max_in_flight": 1, "start_deadline_ms": 0} if limit == "in_flight"
             else {"max_in_flight": 64, "start_deadline_ms": 150.0})
    last = current_slot() - 1
    first_body, second_body = _stateless(reference, last, 30.0), _stateless(reference, last, 31.0)
    with serve_app(make_settings(retry_after_s=2, inference_queue=64, **bound)) as (client, app):
        release = threading.Event()
        app.state.components.engine._executor.submit(release.wait, 30)  # the model is busy
        first: list[httpx.Response] = []
        waiting = threading.Thread(target=lambda: first.append(client.post("/forecast",
                                                                           json=first_body)))
        waiting.start()
        engine = app.state.components.engine
        deadline = time.monotonic() + 10
        while engine.pending < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with httpx.Client(base_url=str(client.base_url), timeout=30) as other:
            started = time.perf_counter()
            shed = other.post("/forecast", json=second_body)
            took = time.perf_counter() - started
        release.set()
        waiting.join(30)
        again = client.post("/forecast", json=second_body)  # now accepted
        text = client.get("/metrics").text
    _assert_shed(shed, took)
    assert first[0].status_code == 200, first[0].text
    np.testing.assert_allclose(np.array(list(first[0].json()["forecasts"].values())).T,
                               _expected(reference, first_body, last), atol=1e-5)
    assert again.status_code == 200, again.text
    np.testing.assert_allclose(np.array(list(again.json()["forecasts"].values())).T,
                               _expected(reference, second_body, last), atol=1e-5)
    assert f'himnet_requests_shed_total{{reason="{limit}"}} 1.0' in text
    assert ('himnet_http_requests_total{method="POST",route="/forecast",status="503"} 1.0'
            in text)


def _nice_of_threads() -> dict[int, int]:
    """This process's threads (OS id) and their nice values, from /proc."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        out[int(task.name)] = int(fields[16])  # field 19 of stat: nice
    return out


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread nice is Linux's")
def test_inference_nice_lowers_the_runtime_threads_only(tiny_bundle: Path) -> None:
    """The inference thread, and the ONNX Runtime threads it creates, run at a lower priority;
    the event loop's thread keeps its own."""
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    before = set(_nice_of_threads())

    async def run() -> tuple[int | None, dict[int, int]]:
        engine = InferenceEngine(8, Metrics(), BatchPolicy())
        await engine.load(tiny_bundle, "onnx", "cpu", 2, nice=3)
        try:
            return engine.native_thread_id, _nice_of_threads()
        finally:
            engine.close()

    inference_tid, nice = asyncio.run(run())
    assert nice[threading.get_native_id()] == base  # the caller (event loop) is untouched
    assert nice[inference_tid] == min(19, base + 3)
    lowered = [tid for tid, n in nice.items() if tid not in before and n == min(19, base + 3)]
    assert len(lowered) >= 2, "ONNX Runtime's pool thread did not inherit the priority"


@pytest.mark.parametrize("freeze", [True, False])
def test_startup_objects_are_frozen_out_of_the_cyclic_collector(make_settings, freeze: bool) -> None:
    """A full gc pause on the event loop walks only what requests created (gc.freeze after
    startup), and the freeze is lifted at shutdown so the process can collect the app."""
    import gc

    with serve_app(make_settings(gc_freeze=freeze)) as (client, _):
        assert client.get("/livez").status_code == 200
        frozen = gc.get_freeze_count()
    assert (frozen > 10_000) is freeze
    assert gc.get_freeze_count() == 0
