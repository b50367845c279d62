"""Where live accuracy keeps its state: remembered forecasts and per-slot score buckets.

Redis layout (``<base>`` = ``<prefix>:acc:<model version>``, prefix as the buffer's):

* ``<base>:f:<e>`` — the forecast served for the window ending at slot ``e``: T_out × N float32
  forecast, then the N float32 last-value baseline. Written once (``SET NX``); deleted when its
  last horizon is scored, and expiring ``T_out + grace + 1`` slots after ``e`` in any case.
* ``<base>:b:<s>`` — the scores of target slot ``s``: T_out × F float64 sums (see
  ``service/accuracy.py``). Written once with ``SET NX``: the replica whose write lands scored
  the slot, every other replica drops its copy. Expires after the accuracy retention (a day).

So Redis holds at most ``T_out + grace + 1`` forecasts and ``retention`` buckets per model
version (LOS-LOOP: 15 × 10 KB and 288 × 864 B). The memory store keeps the same, pruned by slot.
The truth row is read in the same round trip as the forecasts (the buffer's extra keys).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import numpy as np
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.buffer import BufferUnavailable, ReadingBuffer


class AccuracyStore(abc.ABC):
    """Forecasts by window end and score buckets by target slot, for one model version."""

    def __init__(self, buffer: ReadingBuffer) -> None:
        self.buffer = buffer

    @abc.abstractmethod
    async def remember(self, end: int, blob: bytes, ttl_s: float) -> None:
        """Keep ``blob`` for window end ``end`` unless one is kept already."""

    @abc.abstractmethod
    async def fetch(self, target: int, ends: Sequence[int]
                    ) -> tuple[np.ndarray, list[bytes | None], bool]:
        """(truth row N, forecast blobs of ``ends``, whether ``target`` is scored already)."""

    @abc.abstractmethod
    async def save(self, target: int, bucket: bytes, ttl_s: float, done_end: int) -> bool:
        """Store ``target``'s bucket unless present (True: this call scored it); forget the
        forecast of ``done_end`` (its last horizon is scored)."""

    @abc.abstractmethod
    async def buckets(self, targets: Sequence[int]) -> list[bytes | None]:
        """The buckets of ``targets`` (None where not scored or expired)."""


class MemoryAccuracyStore(AccuracyStore):
    """One process's store (the memory buffer's companion), pruned by slot."""

    def __init__(self, buffer: ReadingBuffer, keep_forecasts: int, keep_buckets: int) -> None:
        super().__init__(buffer)
        self.keep_forecasts = keep_forecasts
        self.keep_buckets = keep_buckets
        self._forecasts: dict[int, bytes] = {}
        self._buckets: dict[int, bytes] = {}

    async def remember(self, end: int, blob: bytes, ttl_s: float) -> None:
        self._forecasts.setdefault(end, blob)
        newest = max(self._forecasts)
        for old in [e for e in self._forecasts if e <= newest - self.keep_forecasts]:
            del self._forecasts[old]

    async def fetch(self, target: int, ends: Sequence[int]
                    ) -> tuple[np.ndarray, list[bytes | None], bool]:
        row = (await self.buffer.read_window(target, 1))[0]
        return row, [self._forecasts.get(e) for e in ends], target in self._buckets

    async def save(self, target: int, bucket: bytes, ttl_s: float, done_end: int) -> bool:
        self._forecasts.pop(done_end, None)
        if target in self._buckets:
            return False
        self._buckets[target] = bucket
        for old in [s for s in self._buckets if s <= target - self.keep_buckets]:
            del self._buckets[old]
        return True

    async def buckets(self, targets: Sequence[int]) -> list[bytes | None]:
        return [self._buckets.get(s) for s in targets]


class RedisAccuracyStore(AccuracyStore):
    """Shared by every replica on the same Redis, prefix and model version."""

    def __init__(self, buffer: ReadingBuffer, client: aioredis.Redis, base: str,
                 on_error: Callable[[str], None]) -> None:
        super().__init__(buffer)
        self.client = client
        self.base = base
        self.on_error = on_error

    def _f(self, end: int) -> str:
        return f"{self.base}:f:{end}"

    def _b(self, target: int) -> str:
        return f"{self.base}:b:{target}"

    async def remember(self, end: int, blob: bytes, ttl_s: float) -> None:
        await self._call("accuracy_write", self.client.set(
            self._f(end), blob, nx=True, px=max(1, int(ttl_s * 1000))))

    async def fetch(self, target: int, ends: Sequence[int]
                    ) -> tuple[np.ndarray, list[bytes | None], bool]:
        extra = [self._b(target)] + [self._f(e) for e in ends]
        window, blobs = await self.buffer.read_window_with(target, 1, extra)
        return window[0], list(blobs[1:]), blobs[0] is not None

    async def save(self, target: int, bucket: bytes, ttl_s: float, done_end: int) -> bool:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self._b(target), bucket, nx=True, px=max(1, int(ttl_s * 1000)))
        pipe.delete(self._f(done_end))
        stored, _ = await self._call("accuracy_write", pipe.execute())
        return bool(stored)

    async def buckets(self, targets: Sequence[int]) -> list[bytes | None]:
        if not targets:
            return []
        return list(await self._call("accuracy_read",
                                     self.client.mget([self._b(s) for s in targets])))

    async def _call(self, operation: str, awaitable):  # type: ignore[no-untyped-def]
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            self.on_error(operation)
            raise BufferUnavailable(f"Redis did not answer: {exc}",
                                    "read" if operation == "accuracy_read" else "write") from exc
