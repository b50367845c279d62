"""Acceptance: a property-based fuzz of the RUNNING service over its own OpenAPI document.

Schemathesis reads ``/openapi.json`` from a real uvicorn server (tiny bundle, real Redis under a
key prefix of its own), generates requests for every operation — schema-valid ones, schema-
breaking ones and the document's examples — and checks each answer: no 5xx, the status code is
documented, the media type and the body match the documented response. So that the write path
is reached, part of the generated readings are moved onto recent slots of the grid (the schema
already names the bundle's sensors and the value range); the accepted writes are counted and
must be more than zero. Bounded by ``HIMNET_FUZZ_SECONDS`` (default 120 s) over all operations.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.settings import Settings
from tests.service.conftest import API_KEY, AUTH, INTERVAL_S, iso, serve

pytestmark = pytest.mark.slow

BUDGET_S = float(os.environ.get("HIMNET_FUZZ_SECONDS", "120"))
ROUND = 25  # examples per hypothesis run; runs repeat until the operation's share is spent
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
WEIGHT = {"POST /readings": 4, "POST /forecast": 4}  # share of the budget; other operations: 1
RECENT_SLOTS = 12  # readings moved onto one of the newest slots (retention: 24)


def _timestamps() -> st.SearchStrategy[str]:
    """ISO-8601 date-times, with the edges of the calendar and odd offsets drawn often."""
    offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    zone = st.one_of(st.just(timezone.utc), offsets, st.none())
    edges = st.sampled_from([datetime.min, datetime.max, datetime(1970, 1, 1), datetime(2038, 1, 19)])
    moment = st.one_of(st.datetimes(), edges)
    return st.builds(lambda m, z: m.replace(tzinfo=z).isoformat(), moment, zone)


# Date-times drawn by this strategy (schema format "date-time": readings, as_of, windows).
schemathesis.openapi.format("date-time", _timestamps())

@pytest.fixture(scope="module")
def service(tiny_bundle, redis_url: str) -> Iterator[httpx.Client]:
    """One server for the whole fuzz, on a key prefix deleted afterwards."""
    prefix = f"fuzz-{uuid.uuid4().hex[:10]}"
    config = Settings(bundle_dir=tiny_bundle, redis_url=redis_url, redis_prefix=prefix,
                      api_key=API_KEY)
    try:
        with serve(config) as client:
            yield client
    finally:
        store = redis.Redis.from_url(redis_url)
        keys = list(store.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            store.delete(*keys)
        store.close()


def _on_recent_slots(case: Any) -> st.SearchStrategy[Any]:
    """The same readings, each snapshot on a distinct one of the newest slots."""
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("readings"), list):
        return st.just(case)
    snapshots = [s for s in body["readings"] if isinstance(s, dict)][:RECENT_SLOTS]
    now = int(time.time() // INTERVAL_S)

    def place(ages: list[int]) -> Any:
        case.body = {**body, "readings": [{**s, "timestamp": iso(now - age)}
                                          for s, age in zip(snapshots, ages)]}
        return case

    return st.lists(st.integers(0, RECENT_SLOTS - 1), min_size=len(snapshots),
                    max_size=len(snapshots), unique=True).map(place)


def _from_buffer(case: Any) -> Any:
    """The same forecast request, from the newest buffered window."""
    if isinstance(case.body, dict):
        case.body = {k: v for k, v in case.body.items() if k not in ("as_of", "window")}
    return case


def _strategy(operation: Any) -> st.SearchStrategy[Any]:
    modes = [operation.as_strategy(mode) for mode in schemathesis.GenerationMode]
    valid = operation.as_strategy(schemathesis.GenerationMode.POSITIVE)
    if operation.label == "POST /readings":
        modes.append(valid.flatmap(_on_recent_slots))
    if operation.label == "POST /forecast":
        modes.append(valid.map(_from_buffer))
    return st.one_of(*modes, *operation.get_strategies_from_examples())


def _fuzz(operation: Any, seconds: float, seen: Counter[tuple[str, int]]) -> None:
    """Run cases of one operation for about ``seconds`` (in rounds of ``ROUND`` examples, so
    the budget holds); raise on a failed check."""
    stop = time.monotonic() + seconds
    calls = [0]

    @settings(max_examples=ROUND, deadline=None, database=None, derandomize=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(case=_strategy(operation))
    def run(case: Any) -> None:
        calls[0] += 1
        response = case.call(headers=AUTH, timeout=30)
        seen[(operation.label, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS)

    while time.monotonic() < stop:
        before = calls[0]
        run()
        if calls[0] - before < ROUND:
            return  # hypothesis ran out of distinct inputs (an operation without parameters)


def test_fuzz_the_running_service(service: httpx.Client) -> None:
    schema = schemathesis.openapi.from_url(f"{service.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    shares = [WEIGHT.get(op.label, 1) for op in operations]
    seen: Counter[tuple[str, int]] = Counter()
    started = time.monotonic()
    for op, share in zip(operations, shares):
        _fuzz(op, BUDGET_S * share / sum(shares), seen)
    took = time.monotonic() - started
    accepted = seen[("POST /readings", 200)]
    summary = ", ".join(f"{label} {code}: {n}" for (label, code), n in sorted(seen.items()))
    print(f"\nfuzz: {sum(seen.values())} cases in {took:.0f} s; accepted writes {accepted}; "
          f"{summary}")
    assert len(operations) >= 9
    assert accepted > 0, summary  # the write path was reached
    assert any(label == "POST /forecast" and code == 200 for label, code in seen), summary
