"""Prometheus and Grafana configuration: `promtool check config`, the scrape job, the Grafana
provisioning, and a dashboard that queries only metrics the service exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.metrics import Metrics
from tests.deploy.conftest import DOCKER, require_tool
from tests.deploy.monitoring_sources import rule_queries

PROMETHEUS_YML = DOCKER / "prometheus" / "prometheus.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "himnet.json"
DATASOURCES = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = DOCKER / "grafana" / "provisioning" / "dashboards" / "himnet.yml"

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_METRIC = re.compile(r"\b(himnet_[a-zA-Z0-9_]+)")


def exported_families() -> dict[str, str]:
    """Metric family name -> type, for every metric service/metrics.py defines."""
    families = {}
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        families[name] = family.type
    return families


def sample_names(families: dict[str, str]) -> set[str]:
    """Every series name a scrape can show for these families."""
    names = set()
    for name, kind in families.items():
        names.add(name)
        if kind == "histogram":
            names.update(name + s for s in _HISTOGRAM_SUFFIXES)
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def dashboard_metrics(dashboard: dict[str, Any]) -> set[str]:
    return {m for expr in dashboard_queries(dashboard) for m in _METRIC.findall(expr)}


def family_of(series: str, families: dict[str, str]) -> str:
    for suffix in _HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and families.get(base) == "histogram":
            return base
    return series


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    return subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_promtool_accepts_the_config() -> None:
    result = promtool_check(PROMETHEUS_YML)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_rejects_a_broken_config(tmp_path: Path) -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    config["scrape_configs"][0]["scrape_interval"] = "often"
    broken = tmp_path / "prometheus.yml"
    broken.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert promtool_check(broken).returncode != 0


def test_scrape_job_targets_the_forecast_service() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "himnet"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["forecast"] and sd["port"] == 8000


def test_dashboard_queries_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    families = exported_families()
    used = dashboard_metrics(dashboard)
    unknown = sorted(used - sample_names(families))
    assert not unknown, f"the dashboard queries metrics the service does not export: {unknown}"
    # and it covers what operators watch: latency, throughput, cache, buffer age, coverage, errors
    for needed in ("himnet_http_request_duration_seconds", "himnet_inference_duration_seconds",
                   "himnet_http_requests_total", "himnet_readings_accepted_total",
                   "himnet_forecast_cache_hits_total", "himnet_forecast_cache_misses_total",
                   "himnet_newest_slot_age_seconds", "himnet_window_coverage_ratio",
                   "himnet_readings_rejected_total", "himnet_redis_errors_total",
                   "himnet_inference_rejected_total", "himnet_newest_reading_timestamp_seconds",
                   "himnet_inference_queue_capacity", "himnet_slot_interval_seconds"):
        assert needed in {family_of(m, families) for m in used}, f"no panel shows {needed}"


def test_dashboard_shows_every_signal_an_alert_reads(dashboard: dict[str, Any]) -> None:
    families = exported_families()
    shown = {family_of(m, families) for m in dashboard_metrics(dashboard)}
    alerting = {family_of(m, families) for expr in rule_queries() for m in _METRIC.findall(expr)}
    assert alerting and alerting <= shown, f"alerts read, no panel shows: {sorted(alerting - shown)}"
    assert any("ALERTS{" in q for q in dashboard_queries(dashboard)), "no panel lists firing alerts"


def test_metric_name_check_catches_a_wrong_name(dashboard: dict[str, Any]) -> None:
    wrong = json.loads(json.dumps(dashboard))
    wrong["panels"][1]["targets"][0]["expr"] = "sum(rate(himnet_forecasts_total[5m]))"
    assert "himnet_forecasts_total" in dashboard_metrics(wrong) - sample_names(exported_families())


def test_dashboard_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    (source,) = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    uids = set()

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            if "datasource" in panel:
                uids.add(panel["datasource"]["uid"])
            uids.update(t["datasource"]["uid"] for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    assert uids == {source["uid"]}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    (provider,) = yaml.safe_load(DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
