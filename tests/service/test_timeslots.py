"""Slot arithmetic and the input rules (service/timeslots.py), tested directly."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from model.time_features import time_features
from service.buffer import MemoryBuffer
from service.timeslots import InputRules, SlotClock, TimestampRejected

INTERVAL = 300
NOW_SLOT = 5_900_000  # 2026-02-02T02:40:00Z
NOW = NOW_SLOT * INTERVAL + 17.0  # 17 s into the slot


def _at(slot: int, seconds: int = 0) -> datetime:
    return datetime.fromtimestamp(slot * INTERVAL + seconds, tz=timezone.utc)


@pytest.fixture
def rules() -> InputRules:
    clock = SlotClock(5.0, 288, None)
    buffer = MemoryBuffer(4, INTERVAL, 24)  # 2 h retention, as the service builds it
    return InputRules(clock, clock_skew_s=30.0, retention_minutes=120.0,
                      oldest_kept=buffer.oldest_kept, value_min=0.0, value_max=200.0)


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


def test_on_grid_returns_the_slot_or_names_both_neighbours(rules: InputRules) -> None:
    assert rules.on_grid(_at(NOW_SLOT - 3)) == NOW_SLOT - 3
    other_zone = _at(NOW_SLOT - 3).astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert rules.on_grid(other_zone) == NOW_SLOT - 3
    with pytest.raises(TimestampRejected, match="multiples of 300 s") as caught:
        rules.on_grid(_at(NOW_SLOT - 3, 150))
    assert caught.value.reason == "misaligned"
    assert "e.g. 2026-02-02T02:25:00Z or 2026-02-02T02:30:00Z" in caught.value.hint


def test_not_ahead_tolerates_the_clock_skew_only(rules: InputRules) -> None:
    rules.not_ahead(_at(NOW_SLOT), NOW)
    rules.not_ahead(datetime.fromtimestamp(NOW + 30.0, tz=timezone.utc), NOW)  # at the limit
    with pytest.raises(TimestampRejected, match="more than 30 s ahead of the server clock") as caught:
        rules.not_ahead(datetime.fromtimestamp(NOW + 30.5, tz=timezone.utc), NOW)
    assert caught.value.reason == "in_future"


def test_retained_follows_the_buffer(rules: InputRules) -> None:
    rules.retained(NOW_SLOT - 23, NOW)  # the oldest slot the buffer still keeps
    with pytest.raises(TimestampRejected, match="older than the retention of 120 minutes") as caught:
        rules.retained(NOW_SLOT - 24, NOW)
    assert caught.value.reason == "too_old"


def test_slot_checks_grid_then_future_then_retention(rules: InputRules) -> None:
    assert rules.slot(_at(NOW_SLOT - 1), NOW) == NOW_SLOT - 1
    # a misaligned timestamp is reported as misaligned even when it is also in the future
    with pytest.raises(TimestampRejected, match="multiples of 300 s"):
        rules.slot(_at(NOW_SLOT + 5, 1), NOW)
    with pytest.raises(TimestampRejected, match="ahead of the server clock"):
        rules.slot(_at(NOW_SLOT + 1), NOW)
    with pytest.raises(TimestampRejected, match="older than the retention"):
        rules.slot(_at(NOW_SLOT - 40), NOW)
    naive_utc = _at(NOW_SLOT - 2).replace(tzinfo=None)  # naive = the model's wall clock (UTC here)
    assert rules.slot(naive_utc, NOW) == NOW_SLOT - 2


def test_rejections_describe_themselves_per_subject(rules: InputRules) -> None:
    with pytest.raises(TimestampRejected, match="ahead") as future:
        rules.not_ahead(_at(NOW_SLOT + 2), NOW)
    assert future.value.describe("as_of X") == (
        "as_of X is in the future: more than 30 s ahead of the server clock")
    with pytest.raises(TimestampRejected, match="retention") as old:
        rules.retained(NOW_SLOT - 30, NOW)
    assert old.value.describe("as_of X") == "as_of X is older than the retention of 120 minutes"
    with pytest.raises(TimestampRejected, match="multiples") as off:
        rules.on_grid(_at(NOW_SLOT, 1))
    assert off.value.describe("window timestamp X").startswith(
        "window timestamp X is not on the model's interval: timestamps must be multiples of 300 s")


def test_value_faults(rules: InputRules) -> None:
    values = np.array([0.0, 200.0, -0.5, 200.5, np.nan, np.inf, -np.inf, 61.5])
    not_finite, out_of_range = rules.value_faults(values)
    assert not_finite.tolist() == [False, False, False, False, True, True, True, False]
    assert out_of_range.tolist() == [False, False, True, True, False, False, False, False]
    empty = rules.value_faults(np.array([]))
    assert empty[0].shape == empty[1].shape == (0,)
