"""The write path (service/ingest.py): rules, all-or-nothing writes, telling the forecaster.

Unit tests: a real in-memory buffer, real rules and metrics; the forecaster is a recorder
(the end-to-end write → forecast path is in test_forecast.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

import numpy as np
import pytest

from service.buffer import BufferUnavailable, MemoryBuffer, SlotUpdate, WriteUncertain
from service.errors import InvalidInput
from service.ingest import Ingest, Stored
from service.metrics import Metrics
from service.schemas import Snapshot
from service.timeslots import InputRules, SlotClock

SENSORS = ["a", "b", "c"]
INTERVAL = 300


class _Recorder:
    """Stands in for the forecaster: remembers which slots it was told about."""

    def __init__(self) -> None:
        self.changed: list[set[int]] = []

    async def readings_changed(self, slots: Iterable[int]) -> None:
        self.changed.append(set(slots))


class _DownBuffer(MemoryBuffer):
    async def write(self, updates: Sequence[SlotUpdate]) -> None:
        raise BufferUnavailable("Redis did not store the readings: down", "write")


class _SlowBuffer(MemoryBuffer):
    async def write(self, updates: Sequence[SlotUpdate]) -> None:
        raise WriteUncertain("Redis did not confirm the write in time: Timeout reading")


def _ingest(buffer: MemoryBuffer | None = None) -> tuple[Ingest, MemoryBuffer, _Recorder, Metrics]:
    buffer = buffer or MemoryBuffer(len(SENSORS), INTERVAL, 24)
    rules = InputRules(SlotClock(5.0, 288, None), clock_skew_s=30.0, retention_minutes=120.0,
                       oldest_kept=buffer.oldest_kept, value_min=0.0, value_max=200.0)
    recorder, metrics = _Recorder(), Metrics()
    ingest = Ingest(rules=rules, buffer=buffer, forecaster=recorder,  # type: ignore[arg-type]
                    metrics=metrics, sensor_ids=SENSORS, max_batch_timestamps=4)
    return ingest, buffer, recorder, metrics


def _snap(slot: int, values: dict[str, float]) -> Snapshot:
    return Snapshot(timestamp=datetime.fromtimestamp(slot * INTERVAL, tz=timezone.utc),
                    values=values)


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_store_writes_and_tells_the_forecaster() -> None:
    ingest, buffer, recorder, metrics = _ingest()
    now = int(time.time() // INTERVAL)
    stored = asyncio.run(ingest.store([_snap(now - 1, {"c": 3.0, "a": 1.0}),
                                       _snap(now - 3, {"b": 2.0})]))
    assert stored == Stored(accepted=3, slots=2, latest_slot=now - 1)
    assert recorder.changed == [{now - 1, now - 3}]
    window = asyncio.run(buffer.read_window(now - 1, 3))
    np.testing.assert_array_equal(window, [[np.nan, 2.0, np.nan], [np.nan] * 3, [1.0, np.nan, 3.0]])
    assert _sample(metrics, "himnet_readings_accepted_total") == 3


def test_one_broken_rule_refuses_the_batch() -> None:
    ingest, buffer, recorder, metrics = _ingest()
    now = int(time.time() // INTERVAL)
    with pytest.raises(InvalidInput, match="readings refused, nothing stored: 1 reading") as caught:
        asyncio.run(ingest.store([_snap(now - 1, {"a": 1.0}), _snap(now - 2, {"b": 500.0})]))
    assert caught.value.slug == "invalid-readings"
    assert caught.value.extra["errors"][0]["reason"] == "out_of_range"
    assert asyncio.run(buffer.latest_slot()) is None and recorder.changed == []
    assert _sample(metrics, "himnet_readings_rejected_total", reason="out_of_range") == 1

    with pytest.raises(InvalidInput, match="unknown sensors: ghost, nope") as unknown:
        asyncio.run(ingest.store([_snap(now - 1, {"nope": 1.0, "a": 1.0, "ghost": 2.0})]))
    assert unknown.value.slug == "unknown-sensors"
    assert unknown.value.extra["unknown_sensors"] == ["ghost", "nope"]

    with pytest.raises(InvalidInput, match="1 reading.s. duplicate timestamp"):
        asyncio.run(ingest.store([_snap(now - 1, {"a": 1.0}), _snap(now - 1, {"b": 1.0})]))
    with pytest.raises(InvalidInput, match="5 timestamps in one request; the limit is 4"):
        asyncio.run(ingest.store([_snap(now - i, {"a": 1.0}) for i in range(1, 6)]))


def test_timestamp_rules_come_from_input_rules() -> None:
    ingest, _, _, metrics = _ingest()
    now = int(time.time() // INTERVAL)
    off = Snapshot(timestamp=datetime.fromtimestamp(now * INTERVAL - 7, tz=timezone.utc),
                   values={"a": 1.0, "b": 2.0})
    with pytest.raises(InvalidInput, match="2 reading.s. misaligned; 1 reading.s. too old") as caught:
        asyncio.run(ingest.store([off, _snap(now - 30, {"a": 1.0})]))
    reasons = [(e["reason"], e["hint"]) for e in caught.value.extra["errors"]]
    assert reasons[0][0] == "misaligned" and "multiples of 300 s" in reasons[0][1]
    assert reasons[1] == ("too_old", "older than the retention of 120 minutes")
    assert _sample(metrics, "himnet_readings_rejected_total", reason="misaligned") == 2


def test_unreachable_store_counts_the_readings_and_tells_nobody() -> None:
    ingest, _, recorder, metrics = _ingest(_DownBuffer(len(SENSORS), INTERVAL, 24))
    now = int(time.time() // INTERVAL)
    with pytest.raises(BufferUnavailable, match="did not store") as caught:
        asyncio.run(ingest.store([_snap(now - 1, {"a": 1.0, "b": 2.0})]))
    assert caught.value.operation == "write" and recorder.changed == []
    assert _sample(metrics, "himnet_readings_rejected_total", reason="store_unavailable") == 2


def test_unconfirmed_write_is_not_counted_as_rejected() -> None:
    ingest, _, recorder, metrics = _ingest(_SlowBuffer(len(SENSORS), INTERVAL, 24))
    now = int(time.time() // INTERVAL)
    with pytest.raises(WriteUncertain) as caught:
        asyncio.run(ingest.store([_snap(now - 1, {"a": 1.0, "b": 2.0})]))
    assert caught.value.operation == "write_uncertain" and recorder.changed == []
    assert _sample(metrics, "himnet_readings_rejected_total", reason="store_unavailable") in (None, 0.0)


def test_every_violation_is_reported_bounded_and_counted() -> None:
    """An unknown sensor does not hide the other values' faults; lists are bounded."""
    ingest, buffer, _, metrics = _ingest()
    now = int(time.time() // INTERVAL)
    with pytest.raises(InvalidInput) as caught:
        asyncio.run(ingest.store([_snap(now - 1, {"ghost": 1.0, "a": 500.0, "b": float("nan")}),
                                  _snap(now - 2, {"c": 1.0})]))
    extra = caught.value.extra
    assert caught.value.slug == "invalid-readings"
    assert [e["reason"] for e in extra["errors"]] == ["unknown_sensor", "not_finite",
                                                      "out_of_range"]
    assert extra["counts"] == {"unknown_sensor": 1, "out_of_range": 1, "not_finite": 1}
    assert asyncio.run(buffer.latest_slot()) is None

    many = {f"x{i:05d}": 1.0 for i in range(5000)}
    with pytest.raises(InvalidInput) as caught:
        asyncio.run(ingest.store([_snap(now - 1, {**many, "a": -1.0})]))
    extra = caught.value.extra
    assert len(extra["errors"]) == 50 and extra["errors_total"] == 5001
    assert extra["counts"] == {"unknown_sensor": 5000, "out_of_range": 1}
    assert extra["unknown_sensors"] == sorted(many)[:50]
    assert extra["unknown_sensors_total"] == 5000
    assert len(caught.value.detail) < 300
    assert _sample(metrics, "himnet_readings_rejected_total", reason="unknown_sensor") == 5001


def test_null_is_no_reading() -> None:
    ingest, buffer, _, _ = _ingest()
    now = int(time.time() // INTERVAL)
    asyncio.run(ingest.store([_snap(now - 1, {"a": 5.0, "b": 6.0})]))
    stored = asyncio.run(ingest.store([_snap(now - 1, {"a": None, "c": 7})]))  # type: ignore[dict-item]
    assert stored == Stored(accepted=1, slots=1, latest_slot=now - 1)
    window = asyncio.run(buffer.read_window(now - 1, 1))
    np.testing.assert_array_equal(window, [[5.0, 6.0, 7.0]])  # null kept the earlier 5.0
    assert asyncio.run(ingest.store([_snap(now - 2, {"a": None})])) == Stored(0, 0, None)  # type: ignore[dict-item]
    assert asyncio.run(buffer.latest_slot()) == now - 1
