"""Every series a rule or a dashboard panel reads is in a fresh service's FIRST /metrics scrape
(known label values created at zero), and every label value the service code uses is one of the
known values that service/metrics.py creates."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from service.metrics import (
    CACHE_SOURCES,
    REDIS_OPERATIONS,
    REJECT_REASONS,
    RELOAD_OUTCOMES,
    Metrics,
)
from tests.deploy.monitoring_sources import dashboard_queries, rule_queries, selectors, unmatched
from tests.service.conftest import AUTH, INTERVAL_S, current_slot, serve, snapshot

SERVICE = Path(__file__).resolve().parents[2] / "service"


def _samples(text: str) -> list[tuple[str, dict[str, str]]]:
    return [(s.name, dict(s.labels)) for f in text_string_to_metric_families(text)
            for s in f.samples]


def test_first_scrape_has_every_series_rules_and_dashboard_read(make_settings, reference) -> None:
    sensor = reference.manifest.sensor_ids[0]
    with serve(make_settings()) as client:
        text = client.get("/metrics").text  # the first request: nothing has happened yet
        slot = current_slot() - 2
        assert client.post("/readings", json={"readings": [snapshot(slot, {sensor: 1.0}),
                                                           snapshot(slot - 3, {sensor: 2.0})]},
                           headers=AUTH).status_code == 200
        later = dict(_values(client.get("/metrics").text))
    assert later[("himnet_newest_reading_timestamp_seconds", ())] == slot * INTERVAL_S
    samples = _samples(text)
    missing = unmatched(rule_queries() + dashboard_queries(), samples)
    assert not missing, f"absent from the first scrape: {missing}"
    values = dict(_values(text))
    assert values[("himnet_ready", ())] == 1.0, "himnet_ready without anyone calling /readyz"
    assert values[("himnet_newest_reading_timestamp_seconds", ())] == 0.0  # an empty buffer
    assert values[("himnet_inference_queue_capacity", ())] == make_settings().inference_queue
    assert values[("himnet_slot_interval_seconds", ())] > 0


def _values(text: str) -> list[tuple[tuple[str, tuple[tuple[str, str], ...]], float]]:
    return [((s.name, tuple(sorted(s.labels.items()))), s.value)
            for f in text_string_to_metric_families(text) for s in f.samples]


def test_selector_check_catches_a_missing_series() -> None:
    fresh = Metrics()
    samples = _samples(fresh.render().decode())
    # a label value nobody creates up front, and a metric that does not exist
    assert unmatched(['rate(himnet_readings_rejected_total{reason="bad_mood"}[5m])'], samples)
    assert unmatched(["himnet_no_such_metric"], samples)
    # what Metrics() creates by itself, before any route exists
    assert not unmatched(['rate(himnet_redis_errors_total{operation="write"}[5m])',
                          'himnet_readings_rejected_total{reason=~"too_old|in_future"}'], samples)
    # the request series come from the app's routes (init_routes), not from Metrics() alone
    assert unmatched(['himnet_http_requests_total{status=~"5.."}'], samples)
    assert [str(s) for s in selectors('x{job="a"} / himnet_ready{job="$job", a!~"b"}')] == [
        'himnet_ready{a!~"b"}']


def _literals(pattern: str) -> set[str]:
    found = set()
    for path in SERVICE.rglob("*.py"):
        found.update(re.findall(pattern, path.read_text(encoding="utf-8")))
    return found


def test_every_label_value_the_code_uses_is_created_up_front() -> None:
    reasons = (_literals(r'errors\.add\(\s*"(\w+)"') | _literals(r'tally\["(\w+)"\]')
               | _literals(r'readings_rejected\.labels\(\s*"(\w+)"'))
    assert reasons and reasons <= set(REJECT_REASONS), sorted(reasons - set(REJECT_REASONS))
    from typing import get_args

    from service.timeslots import TimestampReason  # the reasons of refused timestamps
    assert set(get_args(TimestampReason)) <= set(REJECT_REASONS)
    operations = _literals(r'redis_errors\.labels\(\s*"(\w+)"') | _literals(r'on_error\(\s*"(\w+)"')
    assert operations and operations <= set(REDIS_OPERATIONS), sorted(operations - set(REDIS_OPERATIONS))
    sources = _literals(r'cache_(?:hits|misses)\.labels\(\s*"(\w+)"')
    assert sources and sources <= set(CACHE_SOURCES), sorted(sources - set(CACHE_SOURCES))
    outcomes = _literals(r'model_reloads\.labels\(\s*"(\w+)"')  # refusals, failures, rollbacks
    outcomes |= _literals(r'return "(\w+)"  # reload outcome')  # what a reload answers
    assert {"refused", "rolled_back", "loaded"} <= outcomes
    assert outcomes <= set(RELOAD_OUTCOMES), sorted(outcomes - set(RELOAD_OUTCOMES))
