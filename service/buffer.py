"""The reading buffer: the latest readings of every sensor, one float32 row per time slot.

Redis layout (``<prefix>`` includes a digest of the sensor list, so a bundle with other
sensors never reads rows written for another layout):

* ``<prefix>:slot:<n>`` — N × 4 bytes, little-endian float32 in model order, NaN = no reading.
  Created as all-NaN with ``SET NX PXAT``, then each run of adjacent sensors is one
  ``SETRANGE``; the key expires ``retention`` after its slot ends.
* ``<prefix>:slots`` — sorted set of slots holding readings (score = slot), for "latest".

A batch is written in one MULTI/EXEC transaction, so it is stored entirely or not at all, and a
window is read with one MGET. :class:`MemoryBuffer` behaves the same inside one process.
"""

from __future__ import annotations

import abc
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.refclock import ReferenceClock

FLOAT = np.dtype("<f4")


StoreOperation = Literal["read", "write", "cache"]


class BufferUnavailable(RuntimeError):
    """The shared store did not answer; nothing was stored or read.

    ``operation`` says what failed (reading the buffer, writing it, or clearing the forecast
    cache): the client's answer differs, ``service/problems.py`` maps each.
    """

    def __init__(self, message: str, operation: StoreOperation) -> None:
        super().__init__(message)
        self.operation: StoreOperation = operation


def _ignore(operation: str) -> None:
    """Default error callback: count nothing."""


@dataclass(frozen=True)
class SlotUpdate:
    """New readings for one slot: sensor positions (model order) and their values."""

    slot: int
    index: np.ndarray  # int64, unique
    values: np.ndarray  # float32, finite


def layout_key(sensor_ids: Sequence[str]) -> str:
    """Short digest of the sensor list: part of every key, so layouts never mix."""
    return hashlib.blake2b("\x1f".join(sensor_ids).encode(), digest_size=6).hexdigest()


def runs(index: np.ndarray, values: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Split sensor positions into maximal runs of adjacent positions: (first, values)."""
    order = np.argsort(index, kind="stable")
    idx, vals = index[order], values[order]
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(idx)]])
    return [(int(idx[s]), vals[s:e]) for s, e in zip(starts, ends)]


class ReadingBuffer(abc.ABC):
    """Interface shared by the Redis and in-memory buffers."""

    shared: bool = False

    def __init__(self, num_nodes: int, interval_s: int, retention_slots: int,
                 clock: ReferenceClock | None = None) -> None:
        self.num_nodes = num_nodes
        self.interval_s = interval_s
        self.retention_slots = retention_slots
        self.clock = clock or ReferenceClock(interval_s)  # wall clock unless replay mode

    def expires_at(self, slot: int) -> float:
        """Epoch seconds (wall clock) after which ``slot`` is dropped."""
        return self.clock.wall_deadline(float((slot + 1 + self.retention_slots) * self.interval_s))

    def oldest_kept(self, now: float | None = None) -> int:
        """The oldest slot still within retention (``now``: wall time; replay mode ignores it)."""
        ref = self.clock.now(now)
        if ref == float("inf"):
            return -(2 ** 62)  # replay mode before the first reading: nothing is too old
        return int(ref // self.interval_s) - self.retention_slots + 1

    @abc.abstractmethod
    async def write(self, updates: Sequence[SlotUpdate]) -> None:
        """Store all updates atomically or raise :class:`BufferUnavailable`."""

    async def read_window(self, last_slot: int, length: int) -> np.ndarray:
        """``length × N`` float32 for slots ``last_slot - length + 1 … last_slot``, NaN = none."""
        window, _ = await self.read_window_with(last_slot, length, ())
        return window

    @abc.abstractmethod
    async def read_window_with(
        self, last_slot: int, length: int, extra_keys: Sequence[str]
    ) -> tuple[np.ndarray, list[bytes | None]]:
        """The window plus raw values of ``extra_keys`` fetched in the same round trip.

        Stores that cannot fetch foreign keys answer None for each of them.
        """

    @abc.abstractmethod
    async def latest_slot(self) -> int | None:
        """Newest slot with any reading, or None when the buffer is empty."""

    async def latest_window(
        self, length: int, extra_prefix: str | None
    ) -> tuple[int, np.ndarray, bytes | None] | None:
        """The newest slot, its window and the value of ``extra_prefix + slot`` (if asked).

        None when the buffer is empty. The Redis buffer does this in one round trip.
        """
        latest = await self.latest_slot()
        if latest is None:
            return None
        window, extra = await self.read_window_with(
            latest, length, [f"{extra_prefix}{latest}"] if extra_prefix else [])
        return latest, window, (extra[0] if extra else None)

    @abc.abstractmethod
    async def ping(self) -> bool:
        """Whether the store answers now."""

    async def close(self) -> None:
        """Release connections."""


class MemoryBuffer(ReadingBuffer):
    """In-process buffer for a single replica (and the default local run)."""

    def __init__(self, num_nodes: int, interval_s: int, retention_slots: int,
                 clock: ReferenceClock | None = None) -> None:
        super().__init__(num_nodes, interval_s, retention_slots, clock)
        self._rows: dict[int, np.ndarray] = {}

    def _prune(self) -> None:
        oldest = self.oldest_kept()
        for slot in [s for s in self._rows if s < oldest]:
            del self._rows[slot]

    async def write(self, updates: Sequence[SlotUpdate]) -> None:
        self.clock.observe(max((up.slot for up in updates), default=None))
        self._prune()
        for up in updates:
            row = self._rows.get(up.slot)
            if row is None:
                row = self._rows[up.slot] = np.full(self.num_nodes, np.nan, dtype=FLOAT)
            row[up.index] = up.values

    async def read_window_with(
        self, last_slot: int, length: int, extra_keys: Sequence[str]
    ) -> tuple[np.ndarray, list[bytes | None]]:
        self._prune()
        out = np.full((length, self.num_nodes), np.nan, dtype=FLOAT)
        for i, slot in enumerate(range(last_slot - length + 1, last_slot + 1)):
            row = self._rows.get(slot)
            if row is not None:
                out[i] = row
        return out, [None] * len(extra_keys)

    async def latest_slot(self) -> int | None:
        self._prune()
        latest = max(self._rows) if self._rows else None
        self.clock.observe(latest)
        return latest

    async def ping(self) -> bool:
        return True


# Newest slot, its window and one extra key, in one round trip. It touches keys it is not
# given in KEYS, which standalone Redis (and a single-shard setup) allows.
_LATEST_WINDOW = """
local top = redis.call('ZRANGE', KEYS[1], '+inf', ARGV[1], 'BYSCORE', 'REV', 'LIMIT', 0, 1)
if #top == 0 then return {} end
local last = tonumber(top[1])
local keys = {}
for s = last - tonumber(ARGV[2]) + 1, last do keys[#keys + 1] = ARGV[3] .. s end
if ARGV[4] ~= '' then keys[#keys + 1] = ARGV[4] .. last end
local out = redis.call('MGET', unpack(keys))
table.insert(out, 1, top[1])
return out
"""


class RedisBuffer(ReadingBuffer):
    """Buffer in Redis, shared by every replica that uses the same URL and prefix.

    Every failed Redis call is reported once to ``on_error`` with its operation ("read",
    "write", "ping"), where it fails, so the metrics count each failure exactly once.
    """

    shared = True

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        num_nodes: int,
        interval_s: int,
        retention_slots: int,
        on_error: Callable[[str], None] = _ignore,
        clock: ReferenceClock | None = None,
    ) -> None:
        super().__init__(num_nodes, interval_s, retention_slots, clock)
        self.client = client
        self.prefix = prefix
        self.on_error = on_error
        self._empty_row = np.full(num_nodes, np.nan, dtype=FLOAT).tobytes()
        self._latest_window = client.register_script(_LATEST_WINDOW)

    def slot_key(self, slot: int) -> str:
        return f"{self.prefix}:slot:{slot}"

    @property
    def slots_key(self) -> str:
        return f"{self.prefix}:slots"

    async def write(self, updates: Sequence[SlotUpdate]) -> None:
        self.clock.observe(max((up.slot for up in updates), default=None))
        pipe = self.client.pipeline(transaction=True)
        for up in updates:
            key = self.slot_key(up.slot)
            pipe.set(key, self._empty_row, nx=True, pxat=int(self.expires_at(up.slot) * 1000))
            for first, vals in runs(up.index, up.values):
                pipe.setrange(key, first * FLOAT.itemsize, vals.astype(FLOAT).tobytes())
        pipe.zadd(self.slots_key, {str(up.slot): up.slot for up in updates})
        pipe.zremrangebyscore(self.slots_key, "-inf", f"({self.oldest_kept()}")
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            self.on_error("write")
            raise BufferUnavailable(f"Redis did not store the readings: {exc}", "write") from exc

    async def read_window_with(
        self, last_slot: int, length: int, extra_keys: Sequence[str]
    ) -> tuple[np.ndarray, list[bytes | None]]:
        keys = [self.slot_key(s) for s in range(last_slot - length + 1, last_slot + 1)]
        try:
            blobs = await self.client.mget(keys + list(extra_keys))
        except (RedisError, OSError) as exc:
            self.on_error("read")
            raise BufferUnavailable(f"Redis did not answer: {exc}", "read") from exc
        return self.decode(blobs[:length]), list(blobs[length:])

    def decode(self, blobs: Sequence[bytes | None]) -> np.ndarray:
        """MGET result → ``len(blobs) × N`` float32, NaN where nothing is stored."""
        out = np.full((len(blobs), self.num_nodes), np.nan, dtype=FLOAT)
        for i, blob in enumerate(blobs):
            if blob:
                row = np.frombuffer(blob[: self.num_nodes * FLOAT.itemsize], dtype=FLOAT)
                out[i, : row.size] = row
        return out

    async def latest_slot(self) -> int | None:
        try:
            top = await self.client.zrange(self.slots_key, "+inf", f"{self.oldest_kept()}",
                                           byscore=True, desc=True, offset=0, num=1,
                                           withscores=True)
        except (RedisError, OSError) as exc:
            self.on_error("read")
            raise BufferUnavailable(f"Redis did not answer: {exc}", "read") from exc
        latest = int(top[0][1]) if top else None
        self.clock.observe(latest)
        return latest

    async def latest_window(
        self, length: int, extra_prefix: str | None
    ) -> tuple[int, np.ndarray, bytes | None] | None:
        try:
            out = await self._latest_window(
                keys=[self.slots_key],
                args=[self.oldest_kept(), length, f"{self.prefix}:slot:", extra_prefix or ""])
        except (RedisError, OSError) as exc:
            self.on_error("read")
            raise BufferUnavailable(f"Redis did not answer: {exc}", "read") from exc
        if not out:
            return None
        blobs = [b or None for b in out[1:]]  # Lua turns a missing key into false
        extra = blobs[length] if extra_prefix else None
        self.clock.observe(int(out[0]))
        return int(out[0]), self.decode(blobs[:length]), extra

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            self.on_error("ping")
            return False

    async def close(self) -> None:
        await self.client.aclose()


def redis_client(url: str, timeout_s: float) -> aioredis.Redis:
    """A client that fails fast while Redis is down and reconnects by itself afterwards."""
    return aioredis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
        decode_responses=False,
    )

