"""Prometheus metrics of one app instance, in its own registry.

A registry per app (not the global default) lets tests run several apps in one process. Labels
are bounded: route templates, methods, status codes and rejection reasons, never sensor ids.
Every known label value is created at zero up front, so that a series a rule or a dashboard
panel reads exists from the first scrape and ``rate()`` sees the first failure (a counter that
appears at 1 has no increase to show).

Several worker processes (``HIMNET_WORKERS`` > 1, ``python -m service``): prometheus_client's
multiprocess mode. Every worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` and
``/metrics`` on any worker merges them all; counters and histograms add up, each gauge says how
its workers' values combine (``multiprocess_mode``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.live_metrics import LiveSeries

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0)
# Known label values, created at zero. tests/service/test_metrics_init.py checks that every value
# the service code passes to .labels() (or to the cache's on_error) is listed here.
REJECT_REASONS = ("unsupported_date", "misaligned", "in_future", "too_old", "duplicate_timestamp",
                  "unknown_sensor", "not_finite", "out_of_range", "store_unavailable")
REDIS_OPERATIONS = ("ping", "read", "write", "cache_get", "cache_put", "cache_invalidate",
                    "cache_clear", "accuracy_read", "accuracy_write")
CACHE_SOURCES = ("buffer", "request")
# Why a forecast was refused with 503: the HTTP layer's in-flight bound, the inference queue's
# bound, or a model run that could not start within the deadline (service/inference.py).
SHED_REASONS = ("in_flight", "queue_full", "start_deadline")
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
RELOAD_OUTCOMES = ("loaded", "unchanged", "refused", "failed", "rolled_back")


class Metrics:
    """Every metric the service exports."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("himnet_http_requests_total", "HTTP requests answered",
                                ["route", "method", "status"], registry=r)
        self.request_seconds = Histogram(
            "himnet_http_request_duration_seconds", "HTTP request latency",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self._add_inference_metrics(r)
        self.cache_hits = Counter("himnet_forecast_cache_hits_total",
                                  "Forecasts answered from the cache", ["source"], registry=r)
        self.cache_misses = Counter("himnet_forecast_cache_misses_total",
                                    "Forecasts that ran the model", ["source"], registry=r)
        self.readings_accepted = Counter("himnet_readings_accepted_total",
                                         "Sensor readings stored", registry=r)
        self.readings_rejected = Counter("himnet_readings_rejected_total",
                                         "Sensor readings refused", ["reason"], registry=r)
        self.newest_slot_age = Gauge("himnet_newest_slot_age_seconds",
                                     "Age of the newest slot with readings (at scrape time)",
                                     registry=r, multiprocess_mode="mostrecent")
        self.newest_reading_timestamp = Gauge(
            "himnet_newest_reading_timestamp_seconds",
            "Start (Unix time) of the newest slot with readings in the buffer, read at scrape "
            "time; 0 while the buffer holds none; kept when the buffer is unreachable",
            registry=r, multiprocess_mode="max")
        self.slot_interval = Gauge("himnet_slot_interval_seconds",
                                   "The model's time-slot length", registry=r,
                                   multiprocess_mode="max")
        self.window_coverage = Gauge("himnet_window_coverage_ratio",
                                     "Observed fraction of the input window of the latest forecast",
                                     registry=r, multiprocess_mode="mostrecent")
        self.window_coverage.set(float("nan"))  # no forecast yet is not "nothing observed"
        self.inference_capacity = Gauge("himnet_inference_queue_capacity",
                                        "Forecasts that may run or wait before 503 (the bound)",
                                        registry=r, multiprocess_mode="livesum")
        self.redis_errors = Counter("himnet_redis_errors_total", "Failed Redis operations",
                                    ["operation"], registry=r)
        self.model_info = Gauge("himnet_model_info", "The served model (value is always 1)",
                                ["model_name", "model_version", "backend", "provider",
                                 "num_nodes"], registry=r, multiprocess_mode="max")
        self.model_reloads = Counter("himnet_model_reloads_total",
                                     "Model reloads and rollbacks by outcome", ["outcome"],
                                     registry=r)
        self.ready = Gauge("himnet_ready", "1 when the instance can serve: model loaded and "
                           "warmed, inference thread alive, not shutting down (read at scrape "
                           "time; Redis is not part of it; with several workers: when every "
                           "live worker can)", registry=r, multiprocess_mode="livemin")
        self._ready_fn: Callable[[], float] | None = None
        self._model_labels: tuple[str, ...] | None = None
        self.redis_up = Gauge("himnet_redis_up", "1 when the shared store (Redis) answered at the "
                              "last scrape or readiness check, 0 when it did not; NaN with the "
                              "in-process buffer (no Redis)", registry=r,
                              multiprocess_mode="livemin")
        self.redis_up.set(float("nan"))
        self.live = LiveSeries(r)  # labelled per model version by service/live_setup.py
        self._create_known_series()

    def _create_known_series(self) -> None:
        """Every known label value at zero (see the module docstring)."""
        for reason in REJECT_REASONS:
            self.readings_rejected.labels(reason)
        for operation in REDIS_OPERATIONS:
            self.redis_errors.labels(operation)
        for outcome in RELOAD_OUTCOMES:
            self.model_reloads.labels(outcome)
        for source in CACHE_SOURCES:
            self.cache_hits.labels(source)
            self.cache_misses.labels(source)
        for reason in SHED_REASONS:
            self.inference_shed.labels(reason)

    def _add_inference_metrics(self, r: CollectorRegistry) -> None:
        """The inference engine's series: run time, queue wait, batch size, refusals."""
        self.inference_seconds = Histogram(
            "himnet_inference_duration_seconds", "Model run time on the inference thread",
            buckets=LATENCY_BUCKETS, registry=r)
        self.inference_wait_seconds = Histogram(
            "himnet_inference_queue_wait_seconds", "Time a forecast waited for the model",
            buckets=LATENCY_BUCKETS, registry=r)
        self.inference_pending = Gauge("himnet_inference_pending",
                                       "Forecasts running or queued", registry=r,
                                       multiprocess_mode="livesum")
        self.inference_rejected = Counter("himnet_inference_rejected_total",
                                          "Forecasts refused by the inference engine (queue "
                                          "full or start deadline)", registry=r)
        self.inference_batch_size = Histogram(
            "himnet_inference_batch_size", "Windows per model run (micro-batching)",
            buckets=BATCH_BUCKETS, registry=r)
        self.inference_shed = Counter("himnet_requests_shed_total",
                                      "Requests answered 503 to keep latency bounded",
                                      ["reason"], registry=r)

    def init_routes(self, paths: dict[str, Any]) -> None:
        """Create the request series of every route at zero, from the app's OpenAPI ``paths``
        (route template -> method -> declared responses): each status a route declares (its
        success code, its problem responses, 422) and 500; the latency histogram for the
        success code only (an error's latency is not what a panel plots)."""
        for path, operations in paths.items():
            for method, operation in operations.items():
                declared = sorted(str(code) for code in operation.get("responses", {})
                                  if str(code).isdigit())
                success = next((code for code in declared if code.startswith("2")), "200")
                for status in sorted({success, "500", *declared}):
                    self.requests.labels(path, method.upper(), status)
                self.request_seconds.labels(path, method.upper(), success)
        self.requests.labels("unmatched", "GET", "404")

    def set_ready_function(self, ready: Callable[[], float]) -> None:
        """``himnet_ready`` from ``ready()`` at scrape time. Several workers: a function gauge
        is not shared between processes, so each worker stores its value now and at each of its
        scrapes (``livemin``: the replica is ready when every live worker is)."""
        if multiprocess_dir() is None:
            self.ready.set_function(ready)
        else:
            self._ready_fn = ready
            self.refresh_ready()

    def refresh_ready(self) -> None:
        """Store the readiness function's value now (multiprocess mode: at each scrape and when
        the worker starts shutting down; a single process reads it at scrape time anyway)."""
        if self._ready_fn is not None:
            self.ready.set(self._ready_fn())

    def show_model(self, *labels: str) -> None:
        """``himnet_model_info`` names only the model with ``labels``: the old series goes (one
        process) or to 0 (multiprocess mode: ``clear()`` is not implemented for its files)."""
        if multiprocess_dir() is None:
            self.model_info.clear()
        elif self._model_labels is not None:
            self.model_info.labels(*self._model_labels).set(0)
        self.model_info.labels(*labels).set(1)
        self._model_labels = labels

    def render(self) -> bytes:
        """The exposition text: this app's registry, or every worker's files (multiprocess)."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        self.refresh_ready()
        forget_dead_workers(directory)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=directory)
        return generate_latest(merged)


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` when the service runs several workers, else None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def forget_dead_workers(directory: str) -> None:
    """Drop the live-gauge files of worker processes that no longer exist (a restarted worker
    must not count twice in ``livesum`` gauges); their counters and histograms stay summed."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
