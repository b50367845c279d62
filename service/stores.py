"""The one factory of the reading buffer and the forecast cache: both in Redis, or both in memory.

Redis when ``REDIS_URL`` is set (shared by replicas; it need not be up yet: ``/readyz``
and ``himnet_redis_up`` report it),
in-process otherwise. Keys carry a digest of the sensor list, and cache keys the model version
and missing-data policy, so bundles and policies never read each other's entries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from model.bundle import Manifest
from service.buffer import MemoryBuffer, ReadingBuffer, RedisBuffer, layout_key, redis_client
from service.cache import (
    ForecastCache,
    MemoryForecastCache,
    OutputCodec,
    RedisForecastCache,
    cache_namespace,
)
from service.metrics import Metrics
from service.settings import Settings
from service.timeslots import SlotClock

log = logging.getLogger("service")


@dataclass(frozen=True)
class Stores:
    """The buffer and the cache of one app, backed by the same store."""

    buffer: ReadingBuffer
    cache: ForecastCache


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
    codec = OutputCodec(manifest.out_steps, manifest.num_nodes, manifest.st_embedding_dim)
    namespace = cache_namespace(prefix, manifest.model_version, settings.missing_policy)
    if not settings.redis_url:
        return Stores(MemoryBuffer(manifest.num_nodes, clock.interval_s, retention),
                      MemoryForecastCache(codec, namespace, manifest.in_steps,
                                          settings.cache_entries))

    def count(operation: str) -> None:
        metrics.redis_errors.labels(operation).inc()

    client = redis_client(settings.redis_url, settings.redis_timeout_s)
    return Stores(RedisBuffer(client, prefix, manifest.num_nodes, clock.interval_s, retention,
                              on_error=count),
                  RedisForecastCache(codec, namespace, manifest.in_steps, client, count))
