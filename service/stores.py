"""The one factory of the reading buffer and the forecast cache: both in Redis, or both in memory.

Redis when ``REDIS_URL`` is set (shared by replicas; it need not be up yet, readiness says so),
in-process otherwise. Keys carry a digest of the sensor list, and cache keys the model version
and missing-data policy, so bundles and policies never read each other's entries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis import asyncio as aioredis

from model.bundle import Manifest
from service.buffer import MemoryBuffer, ReadingBuffer, RedisBuffer, layout_key, redis_client
from service.cache import ForecastCache, MemoryForecastCache, OutputCodec, RedisForecastCache
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
    ref = ReferenceClock(clock.interval_s, replay=settings.replay_mode)
    if not settings.redis_url:
        return Stores(MemoryBuffer(manifest.num_nodes, clock.interval_s, retention, ref),
                      MemoryForecastCache(codec, namespace, manifest.in_steps,
                                          settings.cache_entries), prefix, None)

    def count(operation: str) -> None:
        metrics.redis_errors.labels(operation).inc()

    client = redis_client(settings.redis_url, settings.redis_timeout_s)
    return Stores(RedisBuffer(client, prefix, manifest.num_nodes, clock.interval_s, retention,
                              on_error=count, clock=ref),
                  RedisForecastCache(codec, namespace, manifest.in_steps, client, count),
                  prefix, client)
