"""Buffer layout and slot arithmetic, against a real Redis (no bundle needed)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from model.time_features import time_features
from service.buffer import MemoryBuffer, RedisBuffer, SlotUpdate, redis_client, runs
from service.timeslots import SlotClock

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


def test_slot_clock_alignment_and_zones() -> None:
    clock = SlotClock(5.0, 288, "America/Los_Angeles")
    utc = datetime(2024, 3, 10, 9, 55, tzinfo=timezone.utc)  # 01:55 PST, before the DST jump
    slot, aligned = clock.slot_of(utc)
    assert aligned and clock.start(slot) == utc
    assert clock.slot_of(utc + timedelta(seconds=1)) == (slot, False)
    naive_local = datetime(2024, 3, 10, 1, 55)  # naive = model's wall clock
    assert clock.slot_of(naive_local) == (slot, True)
    other = utc.astimezone(timezone(timedelta(hours=-3)))
    assert clock.slot_of(other) == (slot, True)
    # features across the DST change equal the shared time encoding
    feats = clock.features(slot, 4)
    stamps = (np.arange(slot, slot + 4) * 300).astype("datetime64[s]")
    np.testing.assert_array_equal(feats, time_features(stamps, 288, "America/Los_Angeles"))
    local = [clock.start(s).astimezone(ZoneInfo("America/Los_Angeles")) for s in
             range(slot, slot + 4)]
    assert [t.hour for t in local] == [1, 3, 3, 3]  # 02:00 does not exist that night
    assert feats[1, 0] == pytest.approx(36 / 288)  # 03:00 local
    with pytest.raises(ValueError, match="whole number of seconds"):
        SlotClock(0.001, 288, None)
    with pytest.raises(ValueError, match="time zone"):
        SlotClock(5.0, 288, "Mars/Olympus")
