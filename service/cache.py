"""Forecast cache: the full model output of one input window, sliced per request.

Entries are keyed by the window's last slot (plus model version and missing-data policy) and
carry a digest of the window's content. A reading for slot ``s`` deletes the entries of every
window whose input covers ``s`` (last slots ``s … s + T_in - 1``); the digest check on every
hit also refuses an entry computed from data that changed while it was being computed.

With Redis configured the cache lives there (shared by replicas, expiring with the readings);
otherwise in-process. Stateless windows use an in-process cache keyed by content digest only.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.buffer import BufferUnavailable

DIGEST_BYTES = 16


def cache_namespace(store_prefix: str, model_version: str, policy: str) -> str:
    """Key namespace of one model version's cached outputs: versions never share an entry."""
    return f"{store_prefix}:fc:{model_version}:{policy}"


@dataclass(frozen=True)
class ModelOutput:
    """One window's forecast (``T_out × N``, raw units), ST embedding (``N × d_st``) and, from a
    seed-ensemble bundle, the members' spread (``T_out × N``, raw units)."""

    forecast: np.ndarray
    st_embedding: np.ndarray
    spread: np.ndarray | None = None


class OutputCodec:
    """Bytes ↔ :class:`ModelOutput` with a content digest in front: digest, forecast, ST
    embedding, then (``spread``: a seed-ensemble model) the spread, all little-endian float32."""

    def __init__(self, out_steps: int, num_nodes: int, st_dim: int, spread: bool = False) -> None:
        self.f_shape = (out_steps, num_nodes)
        self.s_shape = (num_nodes, st_dim)
        self.f_bytes = out_steps * num_nodes * 4
        self.s_bytes = num_nodes * st_dim * 4
        self.spread = spread
        self.size = DIGEST_BYTES + self.f_bytes + self.s_bytes + (self.f_bytes if spread else 0)

    def encode(self, digest: bytes, out: ModelOutput) -> bytes:
        parts = [digest, np.ascontiguousarray(out.forecast, dtype="<f4").tobytes(),
                 np.ascontiguousarray(out.st_embedding, dtype="<f4").tobytes()]
        if self.spread:
            if out.spread is None:
                raise ValueError("this model's outputs carry a spread; got none")
            parts.append(np.ascontiguousarray(out.spread, dtype="<f4").tobytes())
        return b"".join(parts)

    def decode(self, blob: bytes | None, digest: bytes) -> ModelOutput | None:
        """The output stored in ``blob`` if it was computed from the window with ``digest``."""
        if blob is None or len(blob) != self.size or blob[:DIGEST_BYTES] != digest:
            return None
        count = self.f_shape[0] * self.f_shape[1]
        f = np.frombuffer(blob, dtype="<f4", count=count, offset=DIGEST_BYTES).reshape(self.f_shape)
        s_at = DIGEST_BYTES + self.f_bytes
        s = np.frombuffer(blob, dtype="<f4", count=self.s_bytes // 4, offset=s_at).reshape(self.s_shape)
        spread = (np.frombuffer(blob, dtype="<f4", count=count, offset=s_at + self.s_bytes)
                  .reshape(self.f_shape) if self.spread else None)
        return ModelOutput(f, s, spread)


class ForecastCache(abc.ABC):
    """Cache of model outputs per buffered window (keyed by the window's last slot)."""

    def __init__(self, codec: OutputCodec, namespace: str, in_steps: int) -> None:
        self.codec = codec
        self.namespace = namespace  # model version and missing-data policy
        self.in_steps = in_steps

    def key(self, last_slot: int) -> str:
        return f"{self.namespace}:{last_slot}"

    @abc.abstractmethod
    def for_model(self, codec: OutputCodec, namespace: str) -> ForecastCache:
        """An empty cache of the same store for another model (its codec and namespace)."""

    def affected(self, slots: Iterable[int]) -> set[int]:
        """Last slots of the windows whose input covers any of ``slots``."""
        return {s + k for s in slots for k in range(self.in_steps)}

    def prefetch_key(self, last_slot: int) -> str | None:
        """A Redis key the buffer may fetch in the same round trip as the window, if any."""
        return None

    def prefetch_prefix(self) -> str | None:
        """``prefetch_key(slot)`` is this prefix followed by the slot (None: no prefetch)."""
        return None

    @abc.abstractmethod
    async def get(self, last_slot: int, digest: bytes, prefetched: bytes | None = None
                  ) -> ModelOutput | None: ...

    @abc.abstractmethod
    async def put(self, last_slot: int, digest: bytes, out: ModelOutput, ttl_s: float) -> None: ...

    @abc.abstractmethod
    async def invalidate(self, slots: Iterable[int]) -> None:
        """Drop entries of every window that covers one of ``slots`` (newly written slots)."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Drop every entry of this namespace."""


class LRU:
    """A small in-process LRU map."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._d: OrderedDict[object, object] = OrderedDict()

    def get(self, key: object) -> object | None:
        value = self._d.get(key)
        if value is not None:
            self._d.move_to_end(key)
        return value

    def put(self, key: object, value: object) -> None:
        if self.capacity <= 0:
            return
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.capacity:
            self._d.popitem(last=False)

    def pop(self, key: object) -> None:
        self._d.pop(key, None)

    def clear(self) -> None:
        self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


class MemoryForecastCache(ForecastCache):
    """In-process cache (single replica or no Redis)."""

    def __init__(self, codec: OutputCodec, namespace: str, in_steps: int, capacity: int) -> None:
        super().__init__(codec, namespace, in_steps)
        self._lru = LRU(capacity)

    def for_model(self, codec: OutputCodec, namespace: str) -> MemoryForecastCache:
        return MemoryForecastCache(codec, namespace, self.in_steps, self._lru.capacity)

    async def get(self, last_slot: int, digest: bytes, prefetched: bytes | None = None
                  ) -> ModelOutput | None:
        entry = self._lru.get(last_slot)
        if entry is None:
            return None
        stored_digest, out = entry  # type: ignore[misc]
        return out if stored_digest == digest else None

    async def put(self, last_slot: int, digest: bytes, out: ModelOutput, ttl_s: float) -> None:
        self._lru.put(last_slot, (digest, out))

    async def invalidate(self, slots: Iterable[int]) -> None:
        for last in self.affected(slots):
            self._lru.pop(last)

    async def clear(self) -> None:
        self._lru.clear()


class RedisForecastCache(ForecastCache):
    """Cache in Redis next to the buffer, shared by every replica."""

    def __init__(
        self,
        codec: OutputCodec,
        namespace: str,
        in_steps: int,
        client: aioredis.Redis,
        on_error: Callable[[str], None],
    ) -> None:
        super().__init__(codec, namespace, in_steps)
        self.client = client
        self.on_error = on_error

    def for_model(self, codec: OutputCodec, namespace: str) -> RedisForecastCache:
        return RedisForecastCache(codec, namespace, self.in_steps, self.client, self.on_error)

    def prefetch_key(self, last_slot: int) -> str | None:
        return self.key(last_slot)

    def prefetch_prefix(self) -> str | None:
        return f"{self.namespace}:"

    async def get(self, last_slot: int, digest: bytes, prefetched: bytes | None = None
                  ) -> ModelOutput | None:
        blob = prefetched
        if blob is None:
            try:
                blob = await self.client.get(self.key(last_slot))
            except (RedisError, OSError):
                self.on_error("cache_get")
                return None
        return self.codec.decode(blob, digest)

    async def put(self, last_slot: int, digest: bytes, out: ModelOutput, ttl_s: float) -> None:
        try:
            await self.client.set(self.key(last_slot), self.codec.encode(digest, out),
                                  px=max(1, int(ttl_s * 1000)))
        except (RedisError, OSError):
            self.on_error("cache_put")  # a lost cache entry only costs a recomputation

    async def invalidate(self, slots: Iterable[int]) -> None:
        keys = [self.key(last) for last in sorted(self.affected(slots))]
        if not keys:
            return
        try:
            await self.client.delete(*keys)
        except (RedisError, OSError):
            self.on_error("cache_invalidate")  # digests still keep stale entries from serving

    async def clear(self) -> None:
        try:
            batch: list[bytes] = []
            async for key in self.client.scan_iter(match=f"{self.namespace}:*", count=500):
                batch.append(key)
                if len(batch) >= 500:
                    await self.client.unlink(*batch)
                    batch.clear()
            if batch:
                await self.client.unlink(*batch)
        except (RedisError, OSError) as exc:
            self.on_error("cache_clear")
            raise BufferUnavailable(f"Redis did not answer: {exc}", "cache") from exc


class StatelessCache:
    """In-process cache for caller-supplied windows, keyed by their content digest."""

    def __init__(self, capacity: int) -> None:
        self._lru = LRU(capacity)

    def get(self, digest: bytes) -> ModelOutput | None:
        return self._lru.get(digest)  # type: ignore[return-value]

    def put(self, digest: bytes, out: ModelOutput) -> None:
        self._lru.put(digest, out)

    def clear(self) -> None:
        self._lru.clear()
