"""Embeddings, model metadata, metrics, OpenAPI, the inference thread and the no-torch rule."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model.bundle import load_embeddings
from model.clustering import kmeans
from service.inference import InferenceEngine, Overloaded
from service.metrics import Metrics
from tests.service.conftest import AUTH, current_slot, features, iso, serve, serve_app, snapshot

REPO = Path(__file__).resolve().parents[2]


def _fill(client, sensors: list[str], last: int) -> np.ndarray:
    values = np.random.default_rng(11).uniform(20, 70, (12, len(sensors))).astype(np.float32)
    body = {"readings": [snapshot(last - 11 + t, {s: float(values[t, j])
                                                  for j, s in enumerate(sensors)})
                         for t in range(12)]}
    assert client.post("/readings", json=body, headers=AUTH).status_code == 200
    return values


def test_embeddings(make_settings, reference, tiny_bundle: Path) -> None:
    sensors = list(reference.manifest.sensor_ids)
    arrays = load_embeddings(tiny_bundle)
    labels = kmeans(arrays["node_embedding"], 3, seed=7).labels
    with serve(make_settings(clusters=3, cluster_seed=7, neighbours=3)) as client:
        listing = client.get("/embeddings").json()
        one = client.get(f"/embeddings/{sensors[2]}").json()
        missing = client.get("/embeddings/not-a-sensor")
        no_st = client.get(f"/embeddings/{sensors[2]}?include=st")
        last = current_slot() - 1
        values = _fill(client, sensors, last)
        with_st = client.get(f"/embeddings/{sensors[2]}", params={"include": "st"}).json()
        bad_include = client.get(f"/embeddings/{sensors[2]}?include=everything")
    assert listing["count"] == len(sensors) and listing["clusters"] == 3
    assert [s["id"] for s in listing["sensors"]] == sensors
    assert [s["cluster"] for s in listing["sensors"]] == labels.tolist()
    assert listing["sensors"][0]["coords"] == reference.manifest.coords[0]

    np.testing.assert_allclose(one["spatial"], arrays["node_embedding"][2], rtol=1e-6)
    row = arrays["adjacency"][2]
    others = [j for j in np.argsort(-row, kind="stable") if j != 2][:3]
    assert [n["index"] for n in one["neighbours"]] == others
    assert [n["id"] for n in one["neighbours"]] == [sensors[j] for j in others]
    np.testing.assert_allclose([n["weight"] for n in one["neighbours"]], row[others], rtol=1e-6)
    assert one["self_weight"] == pytest.approx(float(row[2]), rel=1e-6)
    assert one["cluster"] == labels[2] and one["spatiotemporal"] is None

    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert "GET /embeddings" in missing.json()["detail"]
    assert no_st.status_code == 404  # nothing buffered yet: no window to embed
    assert bad_include.status_code == 422

    tz = reference.manifest.timezone
    _, st = reference.predict(values[None], features(last - 11, 12, tz)[None],
                              features(last + 1, 12, tz)[None])
    np.testing.assert_allclose(with_st["spatiotemporal"]["vector"], st[0, 2], rtol=1e-5, atol=1e-6)


def test_model_info_openapi_and_metrics(make_settings, reference) -> None:
    sensors = list(reference.manifest.sensor_ids)
    with serve(make_settings()) as client:
        info = client.get("/model").json()
        openapi = client.get("/openapi.json").json()
        _fill(client, sensors, current_slot() - 1)
        client.post("/forecast")
        client.post("/forecast")
        client.post("/readings", json={"readings": [snapshot(current_slot(), {"x": 1.0})]},
                    headers=AUTH)
        client.get("/embeddings/nope")
        text = client.get("/metrics").text
    m = reference.manifest
    assert info["model_version"] == m.model_version and info["backend"] == "onnx"
    assert info["provider"] == "CPUExecutionProvider"
    assert info["metrics"] == m.metrics and info["num_nodes"] == m.num_nodes
    for path in ("/readings", "/forecast", "/embeddings", "/embeddings/{node}", "/model",
                 "/livez", "/readyz", "/metrics"):
        assert path in openapi["paths"], path
    assert "application/problem+json" in openapi["paths"]["/readings"]["post"]["responses"]["422"][
        "content"]

    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("himnet_http_requests_total", (("method", "POST"), ("route", "/forecast"),
                                                   ("status", "200")))] == 2
    assert samples[("himnet_http_requests_total", (("method", "GET"),
                                                   ("route", "/embeddings/{node}"),
                                                   ("status", "404")))] == 1
    assert ("himnet_http_request_duration_seconds_bucket",
            (("le", "0.005"), ("method", "POST"), ("route", "/forecast"), ("status", "200"))
            ) in samples
    assert samples[("himnet_readings_accepted_total", ())] == 12 * len(sensors)
    assert samples[("himnet_readings_rejected_total", (("reason", "unknown_sensor"),))] == 1
    assert samples[("himnet_forecast_cache_hits_total", (("source", "buffer"),))] == 1
    assert samples[("himnet_forecast_cache_misses_total", (("source", "buffer"),))] == 1
    assert samples[("himnet_inference_duration_seconds_count", ())] == 1
    assert samples[("himnet_window_coverage_ratio", ())] == 1.0
    assert 0 <= samples[("himnet_newest_slot_age_seconds", ())] < 900
    assert samples[("himnet_model_info", (("backend", "onnx"), ("model_name", m.model_name),
                                          ("model_version", m.model_version),
                                          ("num_nodes", str(m.num_nodes)),
                                          ("provider", "CPUExecutionProvider")))] == 1
    assert "himnet_redis_errors" in families
    # no per-sensor labels anywhere
    assert not any(set(labels) & {"sensor", "node"} for _, labels in
                   (((n, dict(lab)) for n, lab in samples)))


def test_inference_thread_and_queue_bound(tiny_bundle: Path) -> None:
    async def go() -> tuple[int, set[int], int]:
        engine = InferenceEngine(max_pending=2, metrics=Metrics())
        runtime = await engine.load(tiny_bundle, "onnx", "cpu", 1)
        seen: set[int] = set()
        original = runtime._run

        def recording(*args):  # wraps the real model call to record the calling thread
            seen.add(threading.get_ident())
            return original(*args)

        runtime._run = recording
        r, ti, tt = (a[0] for a in runtime.example_inputs(1))
        results = await asyncio.gather(*(engine.predict(r, ti, tt) for _ in range(6)),
                                       return_exceptions=True)
        engine.close()
        refused = sum(isinstance(x, Overloaded) for x in results)
        assert all(isinstance(x, (tuple, Overloaded)) for x in results), results
        return refused, seen, engine.thread_ident or 0

    refused, seen, loader = asyncio.run(go())
    assert refused == 4  # two admitted (running + queued), the rest refused at once
    assert seen == {loader}  # every run on the thread that loaded and warmed the model
    assert loader != threading.get_ident()


def test_torchscript_backend_runs_on_its_loading_thread(make_settings, reference,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    sensors = list(reference.manifest.sensor_ids)
    caplog.set_level(logging.WARNING)
    last = current_slot() - 1
    with serve(make_settings(backend="torchscript")) as client:
        values = _fill(client, sensors, last)
        body = client.post("/forecast").json()
        assert client.get("/model").json()["provider"] == "torch:cpu"
    assert not [r for r in caplog.records if "thread other than" in r.getMessage()]
    tz = reference.manifest.timezone
    want, _ = reference.predict(values[None], features(last - 11, 12, tz)[None],
                                features(last + 1, 12, tz)[None])
    got = np.array([body["forecasts"][s] for s in sensors]).T
    np.testing.assert_allclose(got, want[0], rtol=1e-4, atol=1e-3)


def test_service_imports_without_torch() -> None:
    code = ("import sys; import service.app, service.__main__, service.runtime; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert not any(m.startswith('training') for m in sys.modules), 'training imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_overload_answers_503_with_retry_after(make_settings, reference) -> None:
    """With the inference thread busy and the queue full, a new forecast is refused at once."""
    sensors = list(reference.manifest.sensor_ids)
    last = current_slot() - 1
    stamps = [iso(s) for s in range(last - 11, last + 1)]
    with serve_app(make_settings(inference_queue=1, retry_after_s=3)) as (client, app):
        engine = app.state.components.engine
        release = threading.Event()
        engine._executor.submit(release.wait, 30)  # occupy the one inference thread
        first: list[int] = []
        waiting = threading.Thread(target=lambda: first.append(client.post("/forecast", json={
            "window": {"timestamps": stamps, "values": [[40.0] * len(sensors)] * 12}}).status_code))
        waiting.start()
        deadline = time.monotonic() + 10
        while engine.pending < 1:  # the first forecast is admitted and queued
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with httpx.Client(base_url=str(client.base_url)) as other:
            refused = other.post("/forecast", json={"window": {
                "timestamps": stamps, "values": [[41.0] * len(sensors)] * 12}})
        release.set()
        waiting.join(10)
        metrics = client.get("/metrics").text
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "3"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "urn:himnet:problem:overloaded"
    assert first == [200]
    assert "himnet_inference_rejected_total 1.0" in metrics
