"""The one factory of the reading buffer and the forecast cache: both in Redis, or both in memory.

Redis when ``REDIS_URL`` is set, or the master that ``REDIS_SENTINELS`` name (shared by
replicas; it need not be up yet: ``/readyz`` and ``himnet_redis_up`` report it), in-process otherwise. Behind Sentinel,
redis-py's pool asks the sentinels for the master on every new connection, and drops a
connection that fails or answers READONLY (a demoted primary): with the one immediate retry of
``connection_options``, a write after a failover reaches the promoted replica by itself. A
primary that is replaced while it still accepts writes (a switchover, a partition) would keep
the pooled connections, and its writes are discarded when it rejoins as replica: the pool asks
the sentinels again at most every 0.5 s and drops every connection when the answer changed.
Keys carry a digest of the sensor list, and cache keys the model version and missing-data
policy, so bundles and policies never read each other's entries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from dataclasses import dataclass

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
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
from service.cache import (
    ForecastCache,
    MemoryForecastCache,
    OutputCodec,
    RedisForecastCache,
    cache_namespace,
)
from service.metrics import Metrics
from service.refclock import ReferenceClock
from service.settings import Settings
from service.timeslots import SlotClock

log = logging.getLogger("service")


@dataclass(frozen=True)
class Stores:
    """The buffer and the cache of one app, backed by the same store."""

    buffer: ReadingBuffer
    cache: ForecastCache
    prefix: str  # key prefix of this sensor layout (Redis), also for the live-accuracy keys
    client: aioredis.Redis | None  # the shared client; None for the memory stores


def store_prefix(settings: Settings, sensor_ids: Sequence[str]) -> str:
    """Prefix of every key of this sensor layout (buffer rows and cached outputs)."""
    return f"{settings.redis_prefix}:{layout_key(sensor_ids)}"


def build_stores(settings: Settings, manifest: Manifest, clock: SlotClock,
                 metrics: Metrics) -> Stores:
    """Buffer and cache for ``manifest``'s sensors, in Redis or in memory per ``settings``."""
    retention = clock.slots_in(settings.retention_minutes)
    if retention < manifest.in_steps:
        log.warning("retention of %s slots is shorter than the %s-slot input window",
                    retention, manifest.in_steps)
    prefix = store_prefix(settings, manifest.sensor_ids)
    codec = OutputCodec(manifest.out_steps, manifest.num_nodes, manifest.st_embedding_dim,
                        spread=manifest.ensemble is not None)
    namespace = cache_namespace(prefix, manifest.model_version, settings.missing_policy)
    ref = ReferenceClock(clock.interval_s, replay=settings.replay_mode)
    if not (settings.redis_url or settings.redis_sentinels):
        return Stores(MemoryBuffer(manifest.num_nodes, clock.interval_s, retention, ref),
                      MemoryForecastCache(codec, namespace, manifest.in_steps,
                                          settings.cache_entries), prefix, None)

    def count(operation: str) -> None:
        metrics.redis_errors.labels(operation).inc()

    client, close_sentinels = connect(settings)
    buffer = RedisBuffer(client, prefix, manifest.num_nodes, clock.interval_s, retention,
                         on_error=count, min_replicas=settings.redis_min_replicas_ack,
                         replica_timeout_ms=settings.redis_replica_ack_timeout_ms,
                         on_close=close_sentinels, clock=ref)
    return Stores(buffer, RedisForecastCache(codec, namespace, manifest.in_steps, client, count),
                  prefix, client)


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
    client = sentinel.master_for(settings.redis_sentinel_master,
                                 connection_pool_class=MasterFollowingPool)
    return client, sentinel.aclose


class MasterFollowingPool(SentinelConnectionPool):
    """redis-py's Sentinel pool, which asks for the master only when it opens a connection,
    plus a check at most every ``refresh_s`` when a connection is handed out: when the
    sentinels name another master, every connection (in use too: its command fails and is
    retried once) is dropped, so no write keeps going to a replaced primary that accepts it."""

    refresh_s = 0.5

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)
        self._asked = float("-inf")

    async def get_connection(self, *args: Any, **options: Any) -> AbstractConnection:
        if time.monotonic() - self._asked >= self.refresh_s:
            self._asked = time.monotonic()
            known = self.master_address
            try:
                current = await self.get_master_address()  # also drops idle connections
            except MasterNotFoundError:
                current = known  # no master now: connecting fails by itself
            if known is not None and current != known:
                log.warning("Redis master moved from %s to %s", known, current)
                await self.disconnect(inuse_connections=True)
        conn = await super().get_connection(*args, **options)  # (arguments: deprecated)
        if self.master_address is not None and \
                (getattr(conn, "host", None), getattr(conn, "port", None)) != self.master_address:
            try:  # a connection opened before the move, back in the pool
                await conn.disconnect()
                await conn.connect()  # to the master the sentinels name now
            except BaseException:
                await self.release(conn)
                raise
        return conn
