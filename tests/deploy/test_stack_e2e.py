"""The compose stack, started natively the way compose would start it (no Docker engine here).

* ``redis-server`` with the options of docker-compose.yml's ``redis`` command (free loopback
  port, its data directory in a temporary folder);
* the forecast service through ``docker/entrypoint-service.sh`` with the image's environment
  (Dockerfile.service's ENV) and compose's ``forecast`` environment; only what must differ
  outside a container is replaced: host (loopback), port (free), bundle path (the ``tiny_bundle``
  fixture), Redis address and the secret's path. torch, pandas and training/ are made
  unimportable, as in the image, which has none of them;
* a real Prometheus with docker/prometheus/prometheus.yml, its scrape job pointed at the
  service and a one-second scrape interval.

Then, through Prometheus's HTTP API: the first scrape already holds every series the alert rules
(docker/prometheus/rules, loaded) and the dashboard select, and with the buffer still empty only
the stale-feed alert is active; the service is up and scraped; ``himnet replay`` (as a
subprocess, over HTTP) drives forecasts that the forecast request counter shows; every metric the
Grafana dashboard queries is exported by the service and every dashboard query is valid PromQL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from model.bundle import read_manifest
from tests.deploy.conftest import COMPOSE_FILE, DOCKER, REPO, require_tool, wait_for
from tests.deploy.monitoring_sources import DASHBOARD_FILE as DASHBOARD
from tests.deploy.monitoring_sources import alerts, rule_queries, selectors
from tests.deploy.test_monitoring import dashboard_metrics, dashboard_queries, exported_families
from tests.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

API_KEY = "e2e-test-key-0123456789"
BLOCKER = '''"""Test-only: the service image has no torch, pandas or training code; neither may this run."""
import sys


class _NotInTheImage:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "pandas", "training"}:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the service image)")
        return None


sys.meta_path.insert(0, _NotInTheImage())
'''
_DEFAULT = re.compile(r"\$\{([A-Z0-9_]+):-([^}]*)\}")


def interpolate(value: Any) -> str:
    """Compose's ``${NAME:-default}`` with an empty environment: the default."""
    return _DEFAULT.sub(lambda m: m.group(2), str(value))


class Proc:
    """A started server process, its log file, and a bounded stop."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.log = name, log
        self.handle = log.open("wb")
        self.popen = subprocess.Popen(args, stdout=self.handle, stderr=subprocess.STDOUT, env=env,
                                      stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self) -> str:
        self.handle.flush()
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self.handle.close()


@pytest.fixture(scope="module")
def stack(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    redis_server = require_tool("redis-server")
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("stack")
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    procs: list[Proc] = []
    try:
        # --- redis, with the compose file's options ---------------------------------------------
        command = [interpolate(a) for a in compose["services"]["redis"]["command"]]
        assert command[0] == "redis-server"
        options = command[1:]
        redis_dir = tmp / "redis"
        redis_dir.mkdir()
        options[options.index("--dir") + 1] = str(redis_dir)
        redis_port = free_port()
        # Redis runs as compose runs it: through its start script, requiring the password from
        # the secret file (the service reads the same file: HIMNET_REDIS_PASSWORD_FILE).
        password = "e2e-redis-password"
        password_file = tmp / "redis-password"
        password_file.write_text(password + "\n", encoding="utf-8")
        start = [part.replace("$$", "$") for part in compose["services"]["redis"]["entrypoint"]]
        redis = Proc("redis", [*start, redis_server, *options, "--port", str(redis_port), "--bind",
                               "127.0.0.1", "--daemonize", "no"], tmp / "redis.log",
                     env={**os.environ, "REDIS_PASSWORD_FILE": str(password_file)})
        procs.append(redis)
        import redis as redis_py

        client = redis_py.Redis(host="127.0.0.1", port=redis_port, password=password, socket_timeout=2)
        wait_for(lambda: client.ping(), 20, f"redis-server on port {redis_port}\n{redis.tail()}")

        # --- the service, through the image's entrypoint and environment ------------------------
        secret = tmp / "api_key"
        secret.write_text(API_KEY + "\n", encoding="utf-8")
        blocker = tmp / "blocker"
        blocker.mkdir()
        (blocker / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
        image_env = DockerfileParser(fileobj=(DOCKER / "Dockerfile.service").open("rb")).envs
        compose_env = {k: interpolate(v) for k, v in compose["services"]["forecast"]["environment"].items()}
        service_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIMNET_")}
        env.update(image_env)
        env.update(compose_env)
        assert env["HIMNET_REDIS_URL"].startswith("redis://redis:6379/")
        assert env["HIMNET_API_KEY_FILE"].startswith("/run/secrets/")
        env.update({
            "PYTHONPATH": f"{blocker}{os.pathsep}{REPO}",  # the image: PYTHONPATH=/app
            "HIMNET_PYTHON": sys.executable,  # the image: python on PATH
            "HIMNET_HOST": "127.0.0.1",
            "HIMNET_PORT": str(service_port),
            "HIMNET_BUNDLE_DIR": str(tiny_bundle),
            "HIMNET_REDIS_URL": env["HIMNET_REDIS_URL"].replace("redis:6379", f"127.0.0.1:{redis_port}"),
            "HIMNET_API_KEY_FILE": str(secret),
        })
        assert env["HIMNET_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
        env["HIMNET_REDIS_PASSWORD_FILE"] = str(password_file)
        service = Proc("service", [str(DOCKER / "entrypoint-service.sh")], tmp / "service.log", env=env)
        procs.append(service)
        base = f"http://127.0.0.1:{service_port}"
        http = httpx.Client(base_url=base, timeout=10)

        def ready() -> bool:
            assert service.alive(), f"the service exited:\n{service.tail()}"
            return http.get("/readyz").status_code == 200

        wait_for(ready, 60, f"the service's /readyz\n{service.tail()}", interval_s=0.3)

        # --- prometheus with the repository's scrape config, retargeted -------------------------
        config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
        prom_port = free_port()
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        config["rule_files"] = [str(DOCKER / "prometheus" / r) for r in config["rule_files"]]
        for job in config["scrape_configs"]:
            if job["job_name"] == "himnet":
                job.pop("dns_sd_configs")
                job["static_configs"] = [{"targets": [f"127.0.0.1:{service_port}"]}]
            else:
                job["static_configs"] = [{"targets": [f"127.0.0.1:{prom_port}"]}]
        config_path = tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        prom = Proc("prometheus", [prometheus, f"--config.file={config_path}",
                                   f"--storage.tsdb.path={tmp / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{prom_port}",
                                   "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                    tmp / "prometheus.log")
        procs.append(prom)
        prom_http = httpx.Client(base_url=f"http://127.0.0.1:{prom_port}", timeout=10)

        def prom_ready() -> bool:
            assert prom.alive(), f"prometheus exited:\n{prom.tail()}"
            return prom_http.get("/-/ready").status_code == 200

        wait_for(prom_ready, 30, f"prometheus /-/ready\n{prom.tail()}", interval_s=0.3)
        yield {"http": http, "prom": prom_http, "redis": client, "redis_dir": redis_dir, "env": env,
               "secret": secret, "base": base, "tmp": tmp, "service": service, "bundle": tiny_bundle}
    finally:
        for proc in reversed(procs):
            proc.stop()


def query(prom: httpx.Client, expr: str) -> list[dict[str, Any]]:
    response = prom.get("/api/v1/query", params={"query": expr})
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def scalar(prom: httpx.Client, expr: str) -> float:
    result = query(prom, expr)
    return float(result[0]["value"][1]) if result else 0.0


def test_first_scrape_has_every_series_rules_and_dashboard_read(stack) -> None:
    """Before any traffic: every selector of the alert rules and the dashboard matches a series of
    the FIRST scrape (queried at that scrape's timestamp), and the rules are loaded and healthy."""
    prom = stack["prom"]
    first = wait_for(lambda: query(prom, 'up{job="himnet"}[1m]'), 30, "the first scrape")
    t0 = first[0]["values"][0][0]
    missing = []
    for expr in rule_queries() + dashboard_queries(json.loads(DASHBOARD.read_text(encoding="utf-8"))):
        for sel in selectors(expr, drop={"instance"}):
            body = prom.get("/api/v1/query", params={"query": f"count({sel})", "time": t0}).json()
            if body["status"] != "success" or not body["data"]["result"]:
                missing.append(str(sel))
    assert not missing, f"not in the first scrape: {sorted(set(missing))}"

    def rules() -> dict[str, str]:
        groups = prom.get("/api/v1/rules").json()["data"]["groups"]
        return {r["name"]: r["health"] for g in groups for r in g["rules"]}

    names = {a["alert"] for a in alerts()}
    wait_for(lambda: set(rules()) == names and set(rules().values()) == {"ok"}, 20,
             "every rule loaded and evaluated without error")

    # the buffer is still empty (no reading at all): the stale-feed alert, and only it, is active
    def active() -> set[str]:
        return {a["labels"]["alertname"] for a in prom.get("/api/v1/alerts").json()["data"]["alerts"]}

    wait_for(lambda: active() == {"HimnetFeedStale"}, 20, "HimnetFeedStale alone pending")


def test_service_is_scraped(stack) -> None:
    prom = stack["prom"]
    wait_for(lambda: scalar(prom, 'up{job="himnet"}') == 1.0, 30, 'up{job="himnet"} == 1')
    manifest = read_manifest(stack["bundle"])
    info = wait_for(lambda: query(prom, 'himnet_model_info{job="himnet"}'), 15, "himnet_model_info")
    assert info[0]["metric"]["model_version"] == manifest.model_version
    assert info[0]["metric"]["num_nodes"] == str(manifest.num_nodes)
    wait_for(lambda: scalar(prom, 'himnet_ready{job="himnet"}') == 1.0, 15, "himnet_ready == 1")


def test_health_check_script_passes_against_the_service(stack) -> None:
    result = subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), "/readyz"], env=stack["env"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    result = subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), "/no-such-path"],
                            env=stack["env"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1


def test_replay_drives_forecasts_seen_by_prometheus(stack) -> None:
    prom, http = stack["prom"], stack["http"]
    wait_for(lambda: scalar(prom, 'up{job="himnet"}') == 1.0, 30, 'up{job="himnet"} == 1')
    counter = 'sum(himnet_http_requests_total{job="himnet", route="/forecast", status="200"})'
    before = scalar(prom, counter)
    manifest = read_manifest(stack["bundle"])
    slots = manifest.in_steps + 4
    report = stack["tmp"] / "replay.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIMNET_")}
    env["HIMNET_API_KEY_FILE"] = str(stack["secret"])
    result = subprocess.run(
        [sys.executable, "-m", "himnet", "replay", "--url", stack["base"], "--data", "synthetic",
         "--data-option", f"num_sensors={manifest.num_nodes}", "--data-option", "days=8",
         "--by-position", "--slots", str(slots), "--speedup", "3000", "--wait", "20",
         "--report", str(report)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(report.read_text(encoding="utf-8"))
    expected = slots - (manifest.in_steps - 1)
    assert out["forecasts"] == expected and not out["forecast_errors"], out
    assert out["readings_sent"] > 0 and not out["readings_refused"], out
    h1 = out["accuracy"][0]
    assert h1["horizon"] == 1 and h1["n"] > 0 and 0 <= h1["mae"] < 100, h1
    assert "MAE" in result.stdout

    wait_for(lambda: scalar(prom, counter) >= before + expected, 20,
             f"the forecast counter to rise by {expected}")
    accepted = wait_for(lambda: scalar(prom, 'sum(himnet_readings_accepted_total{job="himnet"})'), 10,
                        "accepted readings")
    assert accepted >= out["readings_sent"]
    assert http.get("/readyz").status_code == 200

    # the readings went through Redis, which keeps them in its append-only file
    assert stack["redis"].config_get("appendonly")["appendonly"] == "yes"
    aof = list((stack["redis_dir"] / "appendonlydir").glob("*.incr.aof"))
    assert aof and wait_for(lambda: max(p.stat().st_size for p in aof) > 0, 5, "AOF writes")
    assert stack["redis"].dbsize() > 0


def test_dashboard_metrics_are_exported_and_queries_run(stack) -> None:
    prom, http = stack["prom"], stack["http"]
    headers = {"X-API-Key": API_KEY}
    # exercise the labelled series a quiet service has not produced yet: a cache hit, a refusal
    for _ in range(2):
        assert http.post("/forecast", json={}, headers=headers).status_code == 200
    assert http.post("/readings", headers=headers, json={"readings": [
        {"timestamp": "2020-01-01T00:00:00Z", "values": {"no-such-sensor": 1.0}}]}).status_code == 422

    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "himnet.json").read_text(encoding="utf-8"))
    families = exported_families()
    used = dashboard_metrics(dashboard)
    wanted = {name for name in families if any(m == name or m.startswith(name + "_") for m in used)}
    assert wanted, "the dashboard queries no service metric"

    # 1) the service's own /metrics declares every family the dashboard uses
    text = http.get("/metrics").text
    declared = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
    assert wanted <= declared, f"not exported: {sorted(wanted - declared)}"

    # 2) Prometheus scraped them from the himnet target
    def scraped() -> set[str]:
        meta = prom.get("/api/v1/targets/metadata", params={"match_target": '{job="himnet"}'}).json()
        return {m["metric"] for m in meta["data"]}

    wait_for(lambda: wanted <= scraped(), 20, "target metadata of every dashboard metric")

    # 3) every panel query is valid PromQL that Prometheus evaluates (variables substituted)
    for expr in dashboard_queries(dashboard):
        if expr.startswith("label_values("):
            continue  # a Grafana templating function, not PromQL
        concrete = (expr.replace("$__rate_interval", "1m").replace("$job", "himnet")
                    .replace("$instance", ".*"))
        query(prom, concrete)
    hits = wait_for(lambda: scalar(prom, 'sum(himnet_forecast_cache_hits_total{job="himnet"})'), 10,
                    "a cache hit in Prometheus")
    assert hits >= 1
