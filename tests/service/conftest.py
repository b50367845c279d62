"""Service test helpers: real uvicorn servers on loopback, a real Redis, the tiny bundle.

Each test gets its own key prefix in the test database (``REDIS_TEST_URL``, default DB 15)
and deletes only those keys afterwards.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import uvicorn

from model.time_features import time_features
from service.app import create_app
from service.settings import Settings
from tests.ports import loopback_socket

REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")
API_KEY = "test-key-7f3a"
AUTH = {"X-API-Key": API_KEY}
INTERVAL_S = 300


def iso(slot: int) -> str:
    return datetime.fromtimestamp(slot * INTERVAL_S, tz=timezone.utc).isoformat().replace(
        "+00:00", "Z")


def current_slot() -> int:
    return int(time.time() // INTERVAL_S)


def features(first_slot: int, count: int, tz: str) -> np.ndarray:
    """Time features computed independently of the service (for reference runs)."""
    stamps = (np.arange(first_slot, first_slot + count) * INTERVAL_S).astype("datetime64[s]")
    return time_features(stamps, 288, tz)


def snapshot(slot: int, values: dict[str, float]) -> dict[str, Any]:
    return {"timestamp": iso(slot), "values": values}


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"no Redis at {REDIS_TEST_URL} ({exc}): run scripts/ensure-redis.sh")
    finally:
        client.close()
    return REDIS_TEST_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix; its keys are deleted after the test."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def make_settings(tiny_bundle: Path, redis_url: str, prefix: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = dict(bundle_dir=tiny_bundle, redis_url=redis_url,
                                    redis_prefix=prefix, api_key=API_KEY, response_decimals=None)
        base.update(overrides)
        return Settings(**base)

    return make


@contextmanager
def serve(settings: Settings) -> Iterator[httpx.Client]:
    """Run the app under uvicorn on a free loopback port (own thread and loop) and yield a client."""
    with serve_app(settings) as (client, _):
        yield client


@contextmanager
def serve_app(settings: Settings) -> Iterator[tuple[httpx.Client, Any]]:
    """Like :func:`serve`, also yielding the app (for tests that look at its internals)."""
    app = create_app(settings)
    sock = loopback_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning",
                                           access_log=False))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        server.should_exit = True
        thread.join(10)
        sock.close()
        raise RuntimeError(f"server did not start: {errors!r}")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client, app
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture(scope="session")
def reference(tiny_bundle: Path) -> Any:
    """The bundle's runtime, loaded directly: the oracle the service must match."""
    from service.runtime import load_runtime

    return load_runtime(tiny_bundle)
