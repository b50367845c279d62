"""Buffer layout against a real Redis, and the in-memory buffer (no bundle needed)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.buffer import EndRule, MemoryBuffer, RedisBuffer, SlotUpdate, redis_client, runs

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
        fr = await rb.latest_window(5, f"{prefix}:extra:")
        fm = await mb.latest_window(5, f"{prefix}:extra:")
        assert fr.last == fm.last == fr.newest == now_slot - 1
        assert fr.extra == b"payload" and fm.extra is None and fr.met and fm.met
        np.testing.assert_array_equal(fr.window, fm.window)
        np.testing.assert_array_equal(fr.window, await rb.read_window(now_slot - 1, 5))
        assert (await rb.latest_window(5, None)).extra is None
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



def test_default_window_end_steps_back_over_a_ragged_slot(redis_url: str, prefix: str) -> None:
    """Both buffers pick the newest slot with enough readings, within the lookback."""
    now_slot = int(time.time() // INTERVAL)
    full = np.arange(N)
    updates = [SlotUpdate(now_slot - k, full, np.full(N, 10.0 + k, np.float32))
               for k in range(2, 8)]
    updates.append(SlotUpdate(now_slot - 1, np.array([0, 4, 8]), np.ones(3, np.float32)))

    async def go() -> None:
        client = redis_client(redis_url, 1.0)
        rb = RedisBuffer(client, f"{prefix}:b", N, INTERVAL, 24)
        mb = MemoryBuffer(N, INTERVAL, 24)
        await client.set(f"{prefix}:extra:{now_slot - 2}", b"cached")
        for buf in (rb, mb):
            await buf.write(updates)
        for rule, last, met in [(EndRule(8, 2), now_slot - 2, True),   # 3 < 8: step back
                                (EndRule(3, 2), now_slot - 1, True),   # 3 readings suffice
                                (EndRule(8, 0), now_slot - 1, False),  # no lookback: newest
                                (EndRule(11, 3), now_slot - 2, False)]:  # none: best-covered
            got = [await b.latest_window(4, f"{prefix}:extra:", rule) for b in (rb, mb)]
            for found in got:
                assert (found.newest, found.last, found.met) == (now_slot - 1, last, met), rule
                np.testing.assert_array_equal(found.window, await rb.read_window(last, 4))
            assert got[0].extra == (b"cached" if last == now_slot - 2 else None)
        await client.aclose()

    asyncio.run(go())
