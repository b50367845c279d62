"""Several worker processes per replica: refused without Redis; with Redis, readings posted
through one worker are what forecasts through the other see, and ``/metrics`` on any worker
counts the requests of both (Prometheus multiprocess mode). Real ``python -m service``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.ports import free_port
from tests.service.conftest import API_KEY, AUTH, current_slot, features, snapshot

REPO = Path(__file__).resolve().parents[2]
T_IN = T_OUT = 12
FORECASTS = {"route": "/forecast", "method": "POST", "status": "200"}


def test_several_workers_without_redis_are_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HIMNET_BUNDLE_DIR": str(tiny_bundle),
           "HIMNET_WORKERS": "2", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "workers > 1 needs Redis" in proc.stderr and "Traceback" not in proc.stderr


@contextmanager
def _two_workers(bundle: Path, redis_url: str, prefix: str, metrics_dir: Path
                 ) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "HIMNET_BUNDLE_DIR": str(bundle), "HIMNET_WORKERS": "2",
           "HIMNET_THREADS": "1", "HIMNET_REDIS_URL": redis_url, "HIMNET_REDIS_PREFIX": prefix,
           "HIMNET_API_KEY": API_KEY, "HIMNET_PORT": str(port), "HIMNET_LOG_LEVEL": "warning",
           "HIMNET_RESPONSE_DECIMALS": "9", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the service exited with {proc.returncode}"
            assert time.monotonic() < deadline, "the service did not become ready"
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


def _per_worker(metrics_dir: Path) -> dict[str, dict[str, float]]:
    """pid -> forecasts and reading posts answered 200 by that worker, from its own file."""
    out: dict[str, dict[str, float]] = {}
    for path in metrics_dir.glob("counter_*.db"):
        counts = {"forecast": 0.0, "readings": 0.0}
        for family in MultiProcessCollector.merge([str(path)]):
            for s in family.samples:
                if s.name == "himnet_http_requests_total" and s.labels.get("status") == "200":
                    if s.labels.get("route") == "/forecast":
                        counts["forecast"] += s.value
                    elif s.labels.get("route") == "/readings":
                        counts["readings"] += s.value
        out[path.stem.rsplit("_", 1)[-1]] = counts
    return out


def _forecast(base: str) -> dict[str, Any]:
    with httpx.Client(base_url=base, timeout=30) as fresh:  # a new connection each time
        r = fresh.post("/forecast", headers={"Connection": "close"})
    assert r.status_code == 200, r.text
    return r.json()


def test_two_workers_share_readings_and_metrics(tiny_bundle, redis_url, prefix, reference,
                                                tmp_path: Path) -> None:
    sensors = list(reference.manifest.sensor_ids)
    tz = reference.manifest.timezone
    last = current_slot() - 1
    values = np.random.default_rng(3).uniform(20, 70, (T_IN, len(sensors))).astype(np.float32)
    want, _ = reference.predict(values[None], features(last - T_IN + 1, T_IN, tz)[None],
                                features(last + 1, T_OUT, tz)[None])
    metrics_dir = tmp_path / "metrics"
    with _two_workers(tiny_bundle, redis_url, prefix, metrics_dir) as base:
        body = {"readings": [snapshot(last - T_IN + 1 + t, dict(zip(sensors, map(float, row))))
                             for t, row in enumerate(values)]}
        assert httpx.post(f"{base}/readings", json=body, headers=AUTH).status_code == 200
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            for _ in range(20):  # until both workers have answered forecasts (bounded)
                for answer in pool.map(lambda _: _forecast(base), range(16)):
                    got = np.array([answer["forecasts"][s] for s in sensors]).T
                    np.testing.assert_allclose(got, want[0], rtol=1e-6, atol=1e-5)
                sent += 16
                workers = _per_worker(metrics_dir)
                if len(workers) == 2 and all(w["forecast"] > 0 for w in workers.values()):
                    break
        text = httpx.get(f"{base}/metrics").text
    assert len(workers) == 2 and all(w["forecast"] > 0 for w in workers.values()), workers
    posted = [pid for pid, w in workers.items() if w["readings"] == 1]
    assert len(posted) == 1  # one worker stored the readings, the other forecast from them too
    merged = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}
    assert merged[("himnet_http_requests_total", tuple(sorted(FORECASTS.items())))] == sent
    assert merged[("himnet_ready", ())] == 1.0
    assert merged[("himnet_inference_queue_capacity", ())] == 2 * 8  # both workers' bounds


def test_workers_setting_is_validated(tiny_bundle: Path, redis_url: str) -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Settings(bundle_dir=tiny_bundle, workers=0)
    with pytest.raises(ValidationError, match="workers > 1 needs Redis"):
        Settings(bundle_dir=tiny_bundle, workers=2)
    assert Settings(bundle_dir=tiny_bundle, workers=2, redis_url=redis_url).workers == 2
