"""Prometheus metrics of one app instance, in its own registry.

A registry per app (not the global default) lets tests run several apps in one process. Labels
are bounded: route templates, methods, status codes and rejection reasons, never sensor ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0)


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
        self.inference_seconds = Histogram(
            "himnet_inference_duration_seconds", "Model run time on the inference thread",
            buckets=LATENCY_BUCKETS, registry=r)
        self.inference_wait_seconds = Histogram(
            "himnet_inference_queue_wait_seconds", "Time a forecast waited for the model",
            buckets=LATENCY_BUCKETS, registry=r)
        self.inference_pending = Gauge("himnet_inference_pending",
                                       "Forecasts running or queued", registry=r)
        self.inference_rejected = Counter("himnet_inference_rejected_total",
                                          "Forecasts refused because the queue was full",
                                          registry=r)
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
                                     registry=r)
        self.window_coverage = Gauge("himnet_window_coverage_ratio",
                                     "Observed fraction of the input window of the latest forecast",
                                     registry=r)
        self.redis_errors = Counter("himnet_redis_errors_total", "Failed Redis operations",
                                    ["operation"], registry=r)
        self.model_info = Gauge("himnet_model_info", "The served model (value is always 1)",
                                ["model_name", "model_version", "backend", "provider",
                                 "num_nodes"], registry=r)
        self.ready = Gauge("himnet_ready", "1 when the instance reports ready", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
