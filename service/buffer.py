"""The reading buffer: the latest readings of every sensor, one float32 row per time slot.

Redis layout (``<prefix>`` includes a digest of the sensor list, so a bundle with other
sensors never reads rows written for another layout):

* ``<prefix>:slot:<n>`` — N × 4 bytes, little-endian float32 in model order, NaN = no reading.
  Created as all-NaN with ``SET NX PXAT``, then each run of adjacent sensors is one
  ``SETRANGE``; the key expires ``retention`` after its slot ends.
* ``<prefix>:slots`` — sorted set of slots holding readings (score = slot), for "latest".

A batch is written in one MULTI/EXEC transaction (stored entirely or not at all), a window is
read with one MGET (its end: ``service/window_end.py``); :class:`MemoryBuffer` does the same.

Optionally (``min_replicas``) the transaction is followed, on the same connection and in the
same round trip, by ``WAIT min_replicas timeout``: a batch fewer replicas acknowledged in time
is reported as ``BufferUnavailable(operation="replicate")``: stored on the primary, perhaps not
durable; the client may send it again (a reading overwrites its own earlier value).
"""

from __future__ import annotations

import abc
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis import asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from service.buffer_types import (  # re-exported: the buffer's public types
    EVERY_SLOT,
    FLOAT,
    BufferUnavailable,
    EndRule,
    LatestWindow,
    SlotUpdate,
    StoreOperation,
    WriteUncertain,
    _ignore,
    layout_key,
    runs,
)
from service.refclock import ReferenceClock

__all__ = ["EVERY_SLOT", "FLOAT", "BufferUnavailable", "EndRule", "LatestWindow", "SlotUpdate",
           "StoreOperation", "WriteUncertain", "layout_key", "runs", "ReadingBuffer",
           "MemoryBuffer", "RedisBuffer", "connection_options", "redis_client"]


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

    async def latest_window(self, length: int, extra_prefix: str | None,
                            pick: EndRule = EVERY_SLOT) -> LatestWindow | None:
        """The default window: it ends at the newest slot that ``pick`` accepts.

        ``pick`` looks back at most ``pick.lookback`` slots from the newest slot with readings
        for one holding at least ``pick.min_readings`` readings; when none does, the window
        ends at the best-covered of them. ``extra_prefix + end`` is fetched with it (if
        asked). None when the buffer is empty. The Redis buffer does this in one round trip.
        """
        newest = await self.latest_slot()
        if newest is None:
            return None
        span = length + pick.lookback
        window, _ = await self.read_window_with(newest, span, ())
        counts = (~np.isnan(window[::-1][: pick.lookback + 1])).sum(axis=1)  # newest first
        back, met = pick.choose(counts.tolist())
        end = span - back
        return LatestWindow(newest, newest - back, window[end - length:end], None, met)

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


# The default window in one round trip: the newest slot, the newest of it and the ARGV[6]
# slots before it holding at least ARGV[5] readings (else the best-covered of them; a missing
# reading is the NaN pattern ARGV[7], stored values are finite), that slot's window and one
# extra key for it.
# Answers {newest, end, met, blobs..., extra}. It touches keys it is not given in KEYS, which
# standalone Redis (and a single-shard setup) allows.
_LATEST_WINDOW = """
local top = redis.call('ZRANGE', KEYS[1], '+inf', ARGV[1], 'BYSCORE', 'REV', 'LIMIT', 0, 1)
if #top == 0 then return {} end
local newest = tonumber(top[1])
local need, back, nan = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local last, met, best = newest, 0, -1
for s = newest, newest - back, -1 do
  local blob = redis.call('GET', ARGV[3] .. s)
  local count = 0
  if blob then
    for i = 1, #blob, 4 do
      if string.sub(blob, i, i + 3) ~= nan then count = count + 1 end
    end
  end
  if count >= need then last, met = s, 1 break end
  if count > best then last, best = s, count end
end
local keys = {}
for s = last - tonumber(ARGV[2]) + 1, last do keys[#keys + 1] = ARGV[3] .. s end
if ARGV[4] ~= '' then keys[#keys + 1] = ARGV[4] .. last end
local out = redis.call('MGET', unpack(keys))
table.insert(out, 1, met)
table.insert(out, 1, last)
table.insert(out, 1, newest)
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
        *,
        min_replicas: int = 0,
        replica_timeout_ms: int = 200,
        on_close: Callable[[], Awaitable[None]] | None = None,
        clock: ReferenceClock | None = None,
    ) -> None:
        super().__init__(num_nodes, interval_s, retention_slots, clock)
        self.client = client
        self.prefix = prefix
        self.on_error = on_error
        self.min_replicas = min_replicas
        self.replica_timeout_ms = replica_timeout_ms
        self._on_close = on_close
        self._empty_row = np.full(num_nodes, np.nan, dtype=FLOAT).tobytes()
        self._latest_window = client.register_script(_LATEST_WINDOW)

    def slot_key(self, slot: int) -> str:
        return f"{self.prefix}:slot:{slot}"

    @property
    def slots_key(self) -> str:
        return f"{self.prefix}:slots"

    def _queue(self, pipe: Pipeline, updates: Sequence[SlotUpdate]) -> None:
        """The commands of one batch's transaction."""
        for up in updates:
            key = self.slot_key(up.slot)
            pipe.set(key, self._empty_row, nx=True, pxat=int(self.expires_at(up.slot) * 1000))
            for first, vals in runs(up.index, up.values):
                pipe.setrange(key, first * FLOAT.itemsize, vals.astype(FLOAT).tobytes())
        pipe.zadd(self.slots_key, {str(up.slot): up.slot for up in updates})
        pipe.zremrangebyscore(self.slots_key, "-inf", f"({self.oldest_kept()}")

    async def write(self, updates: Sequence[SlotUpdate]) -> None:
        self.clock.observe(max((up.slot for up in updates), default=None))
        if self.min_replicas:
            return await self._write_and_wait(updates)
        pipe = self.client.pipeline(transaction=True)
        self._queue(pipe, updates)
        await self._execute_write(pipe)

    async def _execute_write(self, pipe: Any) -> list[Any]:
        """Send a write pipeline; a timeout means "maybe stored", any other failure "not stored"."""
        try:
            return await pipe.execute()
        except (RedisTimeout, TimeoutError) as exc:  # sent, maybe applied, answer not seen
            self.on_error("write")
            raise WriteUncertain(f"Redis did not confirm the write in time: {exc}") from exc
        except (RedisError, OSError) as exc:
            self.on_error("write")
            raise BufferUnavailable(f"Redis did not store the readings: {exc}", "write") from exc

    async def _write_and_wait(self, updates: Sequence[SlotUpdate]) -> None:
        """MULTI … EXEC, then WAIT, in one round trip on one connection.

        WAIT counts the replicas that have every write of *its own connection*, so it cannot be
        a separate call (the pool may hand out another connection). A plain pipeline with the
        transaction spelled out does it; without response callbacks, since the queued commands
        answer QUEUED and their real results come inside EXEC's reply.
        """
        pipe = Pipeline(self.client.connection_pool, {}, transaction=False, shard_hint=None)
        pipe.execute_command("MULTI")
        self._queue(pipe, updates)
        pipe.execute_command("EXEC")
        pipe.execute_command("WAIT", self.min_replicas, self.replica_timeout_ms)
        *_, applied, acked = await self._execute_write(pipe)
        failed = ([r for r in applied if isinstance(r, Exception)] if isinstance(applied, list)
                  else [applied])  # not a list: EXEC was aborted
        if failed:
            self.on_error("write")
            raise BufferUnavailable(f"Redis refused the readings: {failed[0]}", "write")
        if int(acked) < self.min_replicas:
            self.on_error("write")
            raise BufferUnavailable(
                f"{acked} of {self.min_replicas} replica(s) acknowledged the readings within "
                f"{self.replica_timeout_ms} ms", "replicate")

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

    async def latest_window(self, length: int, extra_prefix: str | None,
                            pick: EndRule = EVERY_SLOT) -> LatestWindow | None:
        try:
            out = await self._latest_window(
                keys=[self.slots_key],
                args=[self.oldest_kept(), length, f"{self.prefix}:slot:", extra_prefix or "",
                      pick.min_readings, pick.lookback, self._empty_row[: FLOAT.itemsize]])
        except (RedisError, OSError) as exc:
            self.on_error("read")
            raise BufferUnavailable(f"Redis did not answer: {exc}", "read") from exc
        if not out:
            return None
        blobs = [b or None for b in out[3:]]  # Lua turns a missing key into false
        extra = blobs[length] if extra_prefix else None
        self.clock.observe(int(out[0]))
        return LatestWindow(int(out[0]), int(out[1]), self.decode(blobs[:length]), extra,
                            bool(out[2]))

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            self.on_error("ping")
            return False

    async def close(self) -> None:
        await self.client.aclose()
        if self._on_close is not None:
            await self._on_close()


def connection_options(timeout_s: float) -> dict[str, object]:
    """Fail fast while Redis is down and reconnect by itself afterwards: one immediate retry
    (a dropped idle connection, or a promoted replica behind Sentinel), then an error."""
    return {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 1), "health_check_interval": 0,
            "decode_responses": False}


def redis_client(url: str, timeout_s: float, password: str | None = None) -> aioredis.Redis:
    """A client for the Redis at ``url`` (``password``: from the secret file, if any)."""
    return aioredis.from_url(url, password=password, **connection_options(timeout_s))

