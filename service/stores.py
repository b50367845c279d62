"""The one factory of the reading buffer and the forecast cache: both in Redis, or both in memory.

Redis when ``REDIS_URL`` is set, or the master that ``REDIS_SENTINELS`` name (shared by
replicas; it need not be up yet, readiness says so), in-process otherwise. Behind Sentinel,
redis-py's pool asks the sentinels for the master on every new connection, and drops a
connection that fails or answers READONLY (a demoted primary): with the one immediate retry of
``connection_options``, a write after a failover reaches the promoted replica by itself. Keys
carry a digest of the sensor list, and cache keys the model version and missing-data policy, so
bundles and policies never read each other's entries.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from model.bundle import Manifest
from service.buffer import (
    MemoryBuffer,
    ReadingBuffer,
    RedisBuffer,
    connection_options,
    layout_key,
    redis_client,
)
from service.cache import ForecastCache, MemoryForecastCache, OutputCodec, RedisForecastCache
from service.metrics import Metrics
from service.settings import Settings
from service.timeslots import SlotClock

log = logging.getLogger("service")


@dataclass(frozen=True)
class Stores:
    """The buffer and the cache of one app, backed by the same store."""

    buffer: ReadingBuffer
    cache: ForecastCache


def build_stores(settings: Settings, manifest: Manifest, clock: SlotClock,
                 metrics: Metrics) -> Stores:
    """Buffer and cache for ``manifest``'s sensors, in Redis or in memory per ``settings``."""
    retention = clock.slots_in(settings.retention_minutes)
    if retention < manifest.in_steps:
        log.warning("retention of %s slots is shorter than the %s-slot input window",
                    retention, manifest.in_steps)
    prefix = f"{settings.redis_prefix}:{layout_key(manifest.sensor_ids)}"
    codec = OutputCodec(manifest.out_steps, manifest.num_nodes, manifest.st_embedding_dim)
    namespace = f"{prefix}:fc:{manifest.model_version}:{settings.missing_policy}"
    if not (settings.redis_url or settings.redis_sentinels):
        return Stores(MemoryBuffer(manifest.num_nodes, clock.interval_s, retention),
                      MemoryForecastCache(codec, namespace, manifest.in_steps,
                                          settings.cache_entries))

    def count(operation: str) -> None:
        metrics.redis_errors.labels(operation).inc()

    client, close_sentinels = connect(settings)
    buffer = RedisBuffer(client, prefix, manifest.num_nodes, clock.interval_s, retention,
                         on_error=count, min_replicas=settings.redis_min_replicas_ack,
                         replica_timeout_ms=settings.redis_replica_ack_timeout_ms,
                         on_close=close_sentinels)
    return Stores(buffer, RedisForecastCache(codec, namespace, manifest.in_steps, client, count))


def connect(settings: Settings) -> tuple[aioredis.Redis, Callable[[], Awaitable[None]] | None]:
    """The Redis client per ``settings`` (URL or Sentinel; nothing is contacted yet), and what
    closes the sentinel connections when it is closed (None for a URL)."""
    password = settings.resolved_redis_password()
    if not settings.redis_sentinels:
        assert settings.redis_url
        return redis_client(settings.redis_url, settings.redis_timeout_s, password), None
    timeout = settings.redis_timeout_s
    # The sentinels: the same password; a dead one is skipped at once (no retries, no backoff).
    sentinel = Sentinel(settings.sentinel_addresses(),
                        sentinel_kwargs={"password": password, "socket_timeout": timeout,
                                         "socket_connect_timeout": timeout,
                                         "retry": Retry(NoBackoff(), 0)},
                        password=password, **connection_options(timeout))
    assert settings.redis_sentinel_master
    return sentinel.master_for(settings.redis_sentinel_master), sentinel.aclose
