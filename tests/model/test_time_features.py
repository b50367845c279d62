from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from model import encode_time, time_features


def test_slot_fraction_and_monday_zero():
    # 2012-03-01 was a Thursday; 22:25 is slot 269 of 288.
    feats = time_features(np.array(["2012-03-01T22:25:00", "2012-03-05T00:00:00"], dtype="datetime64[s]"), 288)
    expected = np.array([[np.float32(269) / np.float32(288), 3.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(feats, expected)
    assert feats.dtype == np.float32


def test_partial_slots_truncate_and_other_intervals():
    feats = time_features(np.array(["2020-01-01T00:14:59"], dtype="datetime64[s]"), 96)  # 15-minute steps
    assert feats[0, 0] == 0.0
    feats = time_features(np.array(["2020-01-01T13:00:00"], dtype="datetime64[s]"), 24)
    assert feats[0, 0] == np.float32(13 / 24)


def test_utc_converted_to_local_zone_across_dst():
    # Los Angeles: PST (UTC-8) before 2024-03-10 10:00 UTC, PDT (UTC-7) after.
    utc = np.array(["2024-03-10T09:00:00", "2024-03-10T11:00:00"], dtype="datetime64[s]")
    feats = time_features(utc, 288, tz="America/Los_Angeles")
    assert feats[0, 0] * 288 == 12 * 1  # 01:00 local
    assert feats[1, 0] * 288 == 12 * 4  # 04:00 local (clocks jumped)
    assert feats[0, 1] == 6.0  # Sunday


def test_encode_time_accepts_aware_datetimes():
    moment = datetime(2024, 7, 1, 15, 30, tzinfo=timezone.utc)  # 08:30 in Los Angeles (PDT)
    tod, dow = encode_time(moment, 288, tz="America/Los_Angeles")
    assert (round(tod * 288), dow) == (102, 0.0)
