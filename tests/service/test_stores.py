"""The one factory of buffer and cache (service/stores.py): Redis or memory, never mixed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from model.bundle import read_manifest
from service.buffer import BufferUnavailable, MemoryBuffer, RedisBuffer
from service.cache import MemoryForecastCache, RedisForecastCache
from service.metrics import Metrics
from service.settings import Settings
from service.stores import build_stores
from service.timeslots import SlotClock


def _build(tiny_bundle: Path, **settings: object) -> tuple[object, Metrics]:
    manifest = read_manifest(tiny_bundle)
    clock = SlotClock(manifest.interval_minutes, manifest.steps_per_day, manifest.timezone)
    metrics = Metrics()
    cfg = Settings(bundle_dir=tiny_bundle, **settings)  # type: ignore[arg-type]
    return build_stores(cfg, manifest, clock, metrics), metrics


def test_memory_without_redis(tiny_bundle: Path) -> None:
    stores, _ = _build(tiny_bundle, retention_minutes=60.0, cache_entries=3)
    assert isinstance(stores.buffer, MemoryBuffer) and not stores.buffer.shared
    assert isinstance(stores.cache, MemoryForecastCache)
    assert stores.buffer.retention_slots == 12


def test_redis_for_both_and_failures_are_counted_once(tiny_bundle: Path) -> None:
    manifest = read_manifest(tiny_bundle)
    stores, metrics = _build(tiny_bundle, redis_url="redis://127.0.0.1:1/0", redis_timeout_s=0.2,
                             redis_prefix="t")
    assert isinstance(stores.buffer, RedisBuffer) and stores.buffer.shared
    assert isinstance(stores.cache, RedisForecastCache)
    assert stores.buffer.client is stores.cache.client  # one connection pool for both
    assert stores.cache.namespace == (f"{stores.buffer.prefix}:fc:{manifest.model_version}:"
                                      "missing_value")

    async def go() -> None:
        with pytest.raises(BufferUnavailable, match="Redis did not answer") as caught:
            await stores.buffer.latest_slot()
        assert caught.value.operation == "read"
        assert await stores.buffer.ping() is False
        await stores.buffer.close()

    asyncio.run(go())
    count = metrics.registry.get_sample_value
    assert count("himnet_redis_errors_total", {"operation": "read"}) == 1
    assert count("himnet_redis_errors_total", {"operation": "ping"}) == 1
