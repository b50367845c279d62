"""Buffer layout against a real Redis, and the in-memory buffer (no bundle needed)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.buffer import MemoryBuffer, RedisBuffer, SlotUpdate, redis_client, runs

N = 10
INTERVAL = 300


def test_runs_merge_adjacent_positions() -> None:
    index = np.array([5, 1, 2, 9, 3, 7, 8])
    values = np.arange(7, dtype=np.float32)
    got = [(first, vals.tolist()) for first, vals in runs(index, values)]
    assert got == [(1, [1.0, 2.0, 4.0]), (5, [0.0]), (7, [5.0, 6.0, 3.0])]


def test_redis_and_memory_buffers_agree(redis_url: str, prefix: str) -> None:
    now_slot = int(time.time() // INTERVAL)
    updates = [
        SlotUpdate(now_slot - 3, np.array([0, 1, 2, 7]), np.array([1, 2, 3, 4], np.float32)),
        SlotUpdate(now_slot - 1, np.array([9, 4]), np.array([5, 6], np.float32)),
    ]
    late = [SlotUpdate(now_slot - 3, np.array([2, 3]), np.array([30, 40], np.float32))]

    async def go() -> tuple[np.ndarray, np.ndarray, int | None, int | None, list[int]]:
        client = redis_client(redis_url, 1.0)
        rb = RedisBuffer(client, f"{prefix}:b", N, INTERVAL, 24)
        mb = MemoryBuffer(N, INTERVAL, 24)
        assert await rb.latest_slot() is None and await mb.latest_slot() is None
        for buf in (rb, mb):
            await buf.write(updates)
            await buf.write(late)
        wr, wm = await rb.read_window(now_slot, 5), await mb.read_window(now_slot, 5)
        raw = await client.get(rb.slot_key(now_slot - 3))
        ttl = await client.pttl(rb.slot_key(now_slot - 3))
        latest = (await rb.latest_slot(), await mb.latest_slot())
        # the one-round-trip path (Lua) agrees with the two-step one
        await client.set(f"{prefix}:extra:{now_slot - 1}", b"payload")
        lr, wlr, extra = await rb.latest_window(5, f"{prefix}:extra:")
        lm, wlm, none = await mb.latest_window(5, f"{prefix}:extra:")
        assert lr == lm == now_slot - 1 and extra == b"payload" and none is None
        np.testing.assert_array_equal(wlr, wlm)
        np.testing.assert_array_equal(wlr, await rb.read_window(now_slot - 1, 5))
        assert (await rb.latest_window(5, None))[2] is None
        await client.aclose()
        assert len(raw) == N * 4
        return wr, wm, latest[0], latest[1], [ttl]

    wr, wm, lr, lm, (ttl,) = asyncio.run(go())
    np.testing.assert_array_equal(wr, wm)
    expected = np.full((5, N), np.nan, np.float32)
    expected[1, [0, 1, 2, 3, 7]] = [1, 2, 30, 40, 4]  # slot now-3; the late write overwrote 2
    expected[3, [4, 9]] = [6, 5]
    np.testing.assert_array_equal(wr, expected)
    assert lr == lm == now_slot - 1
    # expires `retention` after the end of its slot
    want_ms = ((now_slot - 3 + 1 + 24) * INTERVAL - time.time()) * 1000
    assert abs(ttl - want_ms) < 5000

