"""Ways to reach Redis (URL or Sentinel, a password from a secret file) and the optional WAIT
after each write: the settings refuse what cannot work, the one factory builds the matching
client, a password-protected redis-server accepts the service, and a write no replica
confirmed is a 503 that says the readings may not be durable (the failover itself:
test_failover.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from pydantic import ValidationError
from redis.asyncio.sentinel import SentinelConnectionPool

from model.bundle import read_manifest
from service.buffer import BufferUnavailable, RedisBuffer, SlotUpdate, layout_key, redis_client
from service.metrics import Metrics
from service.settings import Settings
from service.stores import build_stores
from service.timeslots import SlotClock
from tests.ports import free_port
from tests.service.conftest import AUTH, current_slot, serve, snapshot

PASSWORD = "pw-from-a-secret+/="
SENTINELS = "10.0.0.1:26379, sentinel-2:26380,sentinel-3:26381"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "redis-password"
    path.write_text(PASSWORD + "\nignored second line\n", encoding="utf-8")
    return path


def settings(bundle: Path, **values: Any) -> Settings:
    return Settings(bundle_dir=bundle, **values)


# --- settings ----------------------------------------------------------------------------------
def test_sentinel_settings_are_parsed(tiny_bundle: Path, password_file: Path) -> None:
    cfg = settings(tiny_bundle, redis_sentinels=SENTINELS, redis_sentinel_master="himnet",
                   redis_password_file=password_file)
    assert cfg.redis_url is None and cfg.redis_sentinels == SENTINELS.replace(" ", "")
    assert cfg.sentinel_addresses() == [("10.0.0.1", 26379), ("sentinel-2", 26380),
                                        ("sentinel-3", 26381)]
    assert cfg.resolved_redis_password() == PASSWORD  # the first line, as the start scripts read
    assert settings(tiny_bundle).sentinel_addresses() == []


@pytest.mark.parametrize("values, message", [
    ({"redis_url": "redis://r:6379/0", "redis_sentinels": "s:26379",
      "redis_sentinel_master": "himnet"}, "not both"),
    ({"redis_sentinels": "s:26379"}, "redis_sentinel_master"),
    ({"redis_sentinels": "s1:26379,s2", "redis_sentinel_master": "himnet"},
     "'s2' is not host:port"),
    ({"redis_sentinels": "s1:99999", "redis_sentinel_master": "himnet"}, "not host:port"),
    ({"redis_min_replicas_ack": 1}, "needs Redis"),
    ({"redis_url": "redis://r:6379/0", "redis_min_replicas_ack": 1, "redis_timeout_s": 0.1,
      "redis_replica_ack_timeout_ms": 100}, "shorter than redis_timeout_s"),
])
def test_settings_refuse_what_cannot_work(tiny_bundle: Path, values: dict[str, Any],
                                          message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(tiny_bundle, **values)


def test_url_password_and_password_file_are_exclusive(tiny_bundle: Path,
                                                      password_file: Path) -> None:
    with pytest.raises(ValidationError, match="carries a password"):
        settings(tiny_bundle, redis_url="redis://:pw@r:6379/0", redis_password_file=password_file)
    assert settings(tiny_bundle, redis_url="redis://r:6379/0", redis_password_file=password_file)


@pytest.mark.parametrize("content", [None, "", "\n  \n"])
def test_unreadable_or_empty_password_file_names_the_file(tiny_bundle: Path, tmp_path: Path,
                                                          content: str | None) -> None:
    path = tmp_path / "missing-password"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ValidationError, match=f"redis_password_file {path}"):
        settings(tiny_bundle, redis_url="redis://r:6379/0", redis_password_file=path)


def test_the_service_refuses_to_start_without_its_password_file(tiny_bundle: Path,
                                                                tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIMNET_")}
    env.update(HIMNET_BUNDLE_DIR=str(tiny_bundle), HIMNET_REDIS_SENTINELS="127.0.0.1:1",
               HIMNET_REDIS_SENTINEL_MASTER="himnet", HIMNET_REDIS_PASSWORD_FILE=str(missing))
    result = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "HIMNET_REDIS_PASSWORD_FILE" in result.stderr and str(missing) in result.stderr


# --- the factory -------------------------------------------------------------------------------
def _stores(cfg: Settings) -> Any:
    manifest = read_manifest(cfg.bundle_dir)
    clock = SlotClock(manifest.interval_minutes, manifest.steps_per_day, manifest.timezone)
    return build_stores(cfg, manifest, clock, Metrics())


def test_sentinel_mode_builds_a_master_client_with_the_password(tiny_bundle: Path,
                                                                password_file: Path) -> None:
    cfg = settings(tiny_bundle, redis_sentinels=SENTINELS, redis_sentinel_master="himnet",
                   redis_password_file=password_file, redis_timeout_s=0.3,
                   redis_min_replicas_ack=1, redis_replica_ack_timeout_ms=150)
    stores = _stores(cfg)
    buffer = stores.buffer
    assert isinstance(buffer, RedisBuffer) and buffer.client is stores.cache.client
    pool = buffer.client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "himnet"
    assert pool.is_master and pool.connection_kwargs["password"] == PASSWORD
    assert pool.connection_kwargs["socket_timeout"] == 0.3
    sentinels = pool.sentinel_manager.sentinels
    kwargs = [s.connection_pool.connection_kwargs for s in sentinels]
    assert [(k["host"], k["port"]) for k in kwargs] == cfg.sentinel_addresses()
    assert all(s.connection_pool.connection_kwargs["password"] == PASSWORD for s in sentinels)
    assert (buffer.min_replicas, buffer.replica_timeout_ms) == (1, 150)


def test_no_sentinel_answering_is_an_unavailable_store_at_once(tiny_bundle: Path,
                                                               password_file: Path) -> None:
    hosts = ",".join(f"127.0.0.1:{free_port()}" for _ in range(3))  # nothing listens there
    buffer = _stores(settings(tiny_bundle, redis_sentinels=hosts, redis_sentinel_master="himnet",
                              redis_password_file=password_file)).buffer

    async def go() -> float:
        started = time.monotonic()
        assert await buffer.ping() is False
        with pytest.raises(BufferUnavailable, match="No master found"):
            await buffer.latest_slot()
        elapsed = time.monotonic() - started
        await buffer.close()
        return elapsed

    assert asyncio.run(go()) < 3, "a dead sentinel must be skipped, not retried with backoff"


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server that requires PASSWORD (configuration on stdin, as compose starts it)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([server, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stdin is not None
    proc.stdin.write(f'port {port}\nbind 127.0.0.1\nsave ""\ndir "{tmp_path}"\n'
                     f'requirepass "{PASSWORD}"\n'.encode())
    proc.stdin.close()
    try:
        client = redis.Redis(port=port, password=PASSWORD, socket_timeout=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_url_mode_authenticates_with_the_password_file(tiny_bundle: Path, password_file: Path,
                                                       protected_redis: int) -> None:
    url = f"redis://127.0.0.1:{protected_redis}/0"

    async def ping(cfg: Settings) -> bool:
        buffer = _stores(cfg).buffer
        try:
            return await buffer.ping()
        finally:
            await buffer.close()

    assert asyncio.run(ping(settings(tiny_bundle, redis_url=url,
                                     redis_password_file=password_file))) is True
    assert asyncio.run(ping(settings(tiny_bundle, redis_url=url))) is False


# --- WAIT --------------------------------------------------------------------------------------
def test_wait_without_a_replica_answers_503_but_the_primary_has_the_readings(
        make_settings, reference, redis_url: str) -> None:
    sensors = list(reference.manifest.sensor_ids)
    slot = current_slot() - 1
    cfg = make_settings(redis_min_replicas_ack=1, redis_replica_ack_timeout_ms=50)
    body = {"readings": [snapshot(slot, {sensors[0]: 42.5})]}
    with serve(cfg) as http:
        r = http.post("/readings", json=body, headers=AUTH)
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == str(cfg.retry_after_s)
        problem = r.json()
        assert problem["type"].endswith("store-unavailable")
        assert "may not be durable" in problem["detail"] and "retry is safe" in problem["detail"]
        metrics = http.get("/metrics").text
    assert 'himnet_redis_errors_total{operation="write"} 1.0' in metrics
    # the transaction ran on the primary before WAIT: the readings are there (not durable)
    manifest = read_manifest(cfg.bundle_dir)

    async def stored() -> np.ndarray:
        client = redis_client(redis_url, 1.0)
        buf = RedisBuffer(client, f"{cfg.redis_prefix}:{layout_key(manifest.sensor_ids)}",
                          manifest.num_nodes, 300, 24)
        try:
            return await buf.read_window(slot, 1)
        finally:
            await buf.close()

    assert asyncio.run(stored())[0, 0] == np.float32(42.5)


def test_wait_path_reports_a_command_failing_inside_exec(redis_url: str, prefix: str) -> None:
    """A command failing inside EXEC is a refused write (not a success, not a 'replicate')."""
    slot = current_slot()

    async def go() -> BufferUnavailable:
        client = redis_client(redis_url, 1.0)
        buf = RedisBuffer(client, prefix, 4, 300, 24, min_replicas=1, replica_timeout_ms=20)
        await client.set(buf.slots_key, b"not a sorted set")  # ZADD fails with WRONGTYPE
        try:
            with pytest.raises(BufferUnavailable) as caught:
                await buf.write([SlotUpdate(slot, np.array([1]), np.array([3.0], np.float32))])
            return caught.value
        finally:
            await buf.close()

    error = asyncio.run(go())
    assert error.operation == "write" and "WRONGTYPE" in str(error)
