"""A new model without downtime, and back: POST /admin/reload and /admin/rollback on a real
uvicorn service with a real Redis and real ONNX Runtime sessions."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import torch

from model.bundle import read_manifest, write_manifest
from service.runtime import load_runtime
from tests.service.conftest import AUTH, current_slot, features, iso, serve, serve_app, snapshot

T_IN = T_OUT = 12


@pytest.fixture(scope="module")
def models_dir(tiny_checkpoint, tiny_bundle: Path, tmp_path_factory) -> Path:
    """HIMNET_MODELS_DIR with two versions: the tiny bundle ("v1") and other weights ("v2")."""
    from training.export import export_bundle

    root = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_bundle, root / "v1")
    gen = torch.Generator().manual_seed(7)
    weights = {k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
               for k, v in tiny_checkpoint.state_dict.items()}
    export_bundle(dataclasses.replace(tiny_checkpoint, state_dict=weights), root / "v2",
                  version="v2", contraction="generate")
    return root


def _window(sensors: list[str], last: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    values = np.random.default_rng(seed).uniform(20, 70, (T_IN, len(sensors))).round(3)
    body = {"timestamps": [iso(s) for s in range(last - T_IN + 1, last + 1)],
            "values": values.tolist()}
    return body, values.astype(np.float32)


def _expected(bundle: Path, values: np.ndarray, last: int) -> np.ndarray:
    runtime = load_runtime(bundle)
    tz = runtime.manifest.timezone
    f, _ = runtime.predict(values[None], features(last - T_IN + 1, T_IN, tz)[None],
                           features(last + 1, T_OUT, tz)[None])
    return f[0]


def _matrix(body: dict[str, Any], sensors: list[str]) -> np.ndarray:
    return np.array([body["forecasts"][s] for s in sensors]).T


def _settings(make_settings, models_dir: Path, **extra: Any) -> Any:
    return make_settings(bundle_dir=models_dir / "v1", models_dir=models_dir, **extra)


def test_reload_serves_the_new_model_with_its_own_cache_and_rolls_back(
        make_settings, models_dir: Path, prefix: str, redis_url: str) -> None:
    v1 = read_manifest(models_dir / "v1").model_version
    sensors = list(read_manifest(models_dir / "v1").sensor_ids)
    last = current_slot() - 1
    window, values = _window(sensors, last, seed=3)
    with serve(_settings(make_settings, models_dir)) as client:
        body = {"readings": [snapshot(last - T_IN + 1 + t, dict(zip(sensors, map(float, row))))
                             for t, row in enumerate(values)]}
        assert client.post("/readings", json=body, headers=AUTH).status_code == 200
        first = client.post("/forecast")
        assert first.headers["x-cache"] == "miss" and first.json()["model_version"] == v1
        assert client.post("/forecast").headers["x-cache"] == "hit"
        stateless = client.post("/forecast", json={"window": window})
        assert stateless.status_code == 200 and stateless.json()["model_version"] == v1

        r = client.post("/admin/reload", json={"version": "v2"}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["outcome"] == "loaded"
        assert r.json()["active"]["model_version"] == "v2"
        assert r.json()["previous"]["model_version"] == v1
        after = client.post("/forecast")
        assert after.headers["x-cache"] == "miss", "the cache must not be shared across versions"
        assert after.json()["model_version"] == "v2"
        np.testing.assert_allclose(_matrix(after.json(), sensors),
                                   _expected(models_dir / "v2", values, last), rtol=1e-5, atol=1e-4)
        assert not np.allclose(_matrix(after.json(), sensors), _matrix(first.json(), sensors))
        again = client.post("/forecast", json={"window": window})
        assert again.headers["x-cache"] == "miss" and again.json()["model_version"] == "v2"
        info = client.get("/model").json()
        assert info["model_version"] == "v2" and info["previous"]["model_version"] == v1
        metrics = client.get("/metrics").text
        assert 'himnet_model_reloads_total{outcome="loaded"} 1.0' in metrics
        # himnet_model_info names the active model only (the live-accuracy series stay per
        # version: the old model's forecasts are still scored when their targets arrive)
        info_lines = [x for x in metrics.splitlines() if x.startswith("himnet_model_info{")]
        assert info_lines and all('model_version="v2"' in x for x in info_lines)
        assert 'himnet_live_scored_targets_total{horizon="1",model_version="v2"}' in metrics

        back = client.post("/admin/rollback", headers=AUTH)
        assert back.status_code == 200, back.text
        assert back.json()["active"]["model_version"] == v1
        assert back.json()["previous"]["model_version"] == "v2"
        old = client.post("/forecast")
        assert old.headers["x-cache"] == "hit"  # v1's entries were kept under v1's namespace
        old_body, first_body = old.json(), first.json()
        old_body.pop("newest_reading_age_s"), first_body.pop("newest_reading_age_s")  # per answer
        assert old_body == first_body
        assert client.post("/admin/rollback", headers=AUTH).json()["active"]["model_version"] == "v2"
        same = client.post("/admin/reload", json={"version": "v2"}, headers=AUTH)
        assert same.status_code == 200 and same.json()["outcome"] == "unchanged"
    keys = {k.decode() for k in redis.Redis.from_url(redis_url).scan_iter(match=f"{prefix}:*:fc:*")}
    assert any(f":fc:{v1}:" in k for k in keys) and any(":fc:v2:" in k for k in keys), keys


def _damaged_checksum(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    onnx = dst / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))


def _rewritten(src: Path, dst: Path, **changes: Any) -> None:
    shutil.copytree(src, dst)
    write_manifest(dst, dataclasses.replace(read_manifest(src), **changes))


def test_broken_bundles_are_refused_and_the_old_model_keeps_serving(
        make_settings, models_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    v1 = read_manifest(root / "v1").model_version
    sensors = list(read_manifest(root / "v1").sensor_ids)
    _damaged_checksum(root / "v2", root / "bad-sum")
    _rewritten(root / "v2", root / "other-sensors", model_version="v3",
               sensor_ids=[f"x{s}" for s in sensors])
    config = {**read_manifest(root / "v2").config, "st_embedding_dim": 7}
    _rewritten(root / "v2", root / "bad-shape", model_version="v4", st_embedding_dim=7,
               config=config)  # the graph's st_embedding output is 5 wide
    cases = {"bad-sum": (422, "invalid-bundle", "sha256"),
             "other-sensors": (409, "incompatible-bundle", "sensors"),
             "bad-shape": (422, "invalid-bundle", "st_embedding"),
             "nowhere": (404, "unknown-model-version", "nowhere")}
    window, _ = _window(sensors, current_slot() - 1, seed=4)
    with serve(_settings(make_settings, root)) as client:
        for version, (status, slug, word) in cases.items():
            r = client.post("/admin/reload", json={"version": version}, headers=AUTH)
            assert r.status_code == status, (version, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"].endswith(slug) and word in r.json()["detail"], r.json()
            served = client.post("/forecast", json={"window": window})
            assert served.status_code == 200 and served.json()["model_version"] == v1
        assert client.get("/model").json()["previous"] is None
        assert client.post("/admin/reload", json={"version": "../v2"},
                           headers=AUTH).status_code == 422
        nothing = client.post("/admin/rollback", headers=AUTH)
        assert nothing.status_code == 409 and nothing.json()["type"].endswith("no-previous-model")
        metrics = client.get("/metrics").text
    assert 'himnet_model_reloads_total{outcome="refused"} 5.0' in metrics


def test_admin_actions_need_the_api_key(make_settings, models_dir: Path) -> None:
    with serve(_settings(make_settings, models_dir)) as client:
        for path in ("/admin/reload", "/admin/rollback"):
            assert client.post(path).status_code == 401
            assert client.post(path, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/model").json()["model_version"] != "v2"


def test_requests_in_flight_finish_on_the_old_model(make_settings, models_dir: Path) -> None:
    v1 = read_manifest(models_dir / "v1").model_version
    sensors = list(read_manifest(models_dir / "v1").sensor_ids)
    last = current_slot() - 1
    window, values = _window(sensors, last, seed=5)
    with serve_app(_settings(make_settings, models_dir)) as (client, app):
        old_engine = app.state.components.engine
        gate = threading.Event()
        old_engine._executor.submit(gate.wait, 30)  # hold the old model's thread
        answers: list[Any] = []
        slow = threading.Thread(target=lambda: answers.append(
            client.post("/forecast", json={"window": window})))
        slow.start()
        deadline = time.monotonic() + 10
        while old_engine.pending < 1:  # the request now waits on the old model
            assert time.monotonic() < deadline, "the forecast never reached the model"
            time.sleep(0.01)
        r = client.post("/admin/reload", json={"version": "v2"}, headers=AUTH)
        assert r.status_code == 200, r.text  # loaded and warmed beside the busy old model
        fresh = client.post("/forecast", json={"window": window})
        assert fresh.json()["model_version"] == "v2"
        gate.set()
        slow.join(30)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["model_version"] == v1
    np.testing.assert_allclose(_matrix(answers[0].json(), sensors),
                               _expected(models_dir / "v1", values, last), rtol=1e-5, atol=1e-4)


def _model_version(client: Any) -> str:
    return client.get("/model").json()["model_version"]


def test_the_watcher_serves_a_newly_published_version(make_settings, models_dir: Path,
                                                      tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(models_dir / "v1", root / "v1")
    v1 = read_manifest(root / "v1").model_version
    settings = _settings(make_settings, root, watch_interval_s=0.2)
    with serve(settings) as client:
        time.sleep(0.6)
        assert _model_version(client) == v1  # what was there at startup is the baseline
        shutil.copytree(models_dir / "v2", tmp_path / "v2.partial")  # export, then rename
        (tmp_path / "v2.partial").rename(root / "v2")
        deadline = time.monotonic() + 30
        while _model_version(client) != "v2":
            assert time.monotonic() < deadline, "the watcher did not pick up v2"
            time.sleep(0.1)
        assert client.post("/admin/rollback", headers=AUTH).status_code == 200
        time.sleep(1.0)
        assert _model_version(client) == v1  # a rollback sticks until something newer appears


def test_watching_needs_a_models_dir(tiny_bundle: Path) -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="watch_interval_s needs models_dir"):
        Settings(bundle_dir=tiny_bundle, watch_interval_s=1.0)


def test_a_reloaded_model_runs_under_the_configured_batch_policy(
        make_settings, models_dir: Path) -> None:
    from service.inference import BatchPolicy

    wanted = BatchPolicy(max_batch=3, max_wait_ms=7.0, start_deadline_ms=25.0)
    settings = _settings(make_settings, models_dir, max_batch=3, batch_wait_ms=7.0,
                         start_deadline_ms=25.0)
    with serve_app(settings) as (client, app):
        first = app.state.components.engine
        assert first.policy == wanted
        r = client.post("/admin/reload", json={"version": "v2"}, headers=AUTH)
        assert r.status_code == 200, r.text
        reloaded = app.state.components.engine
        assert reloaded is not first and reloaded.policy == wanted
        assert client.post("/admin/rollback", headers=AUTH).status_code == 200
        assert app.state.components.engine is first and first.policy == wanted
