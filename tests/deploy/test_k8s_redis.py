"""Redis in k8s/: a password from the `himnet-redis` Secret (never in a manifest or argv), the
exporter sidecar, the PodDisruptionBudget, and the redis-sentinel component (overlay `sentinel`):
two data nodes, three sentinels, the forecast pods pointed at the sentinels. The start scripts
are the compose stack's (tests/deploy/test_redis_auth.py runs them)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.conftest import COMPOSE_FILE, DOCKER, K8S
from tests.deploy.test_k8s import OVERLAYS, matches, one, render

COMPONENT = K8S / "components" / "redis-sentinel"
SECRET = "himnet-redis"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(K8S / "overlays" / name) for name in (*OVERLAYS, "sentinel")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    return found


def secret_file(pod: dict[str, Any], c: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret name, key) behind the file ``path`` mounted in container ``c``."""
    directory, file = path.rsplit("/", 1)
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == directory)
    assert mount["readOnly"] is True
    secret = next(v for v in pod["volumes"] if v["name"] == mount["name"])["secret"]
    (item,) = [i for i in secret["items"] if i["path"] == file]
    return secret["secretName"], item["key"]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


@pytest.mark.parametrize("overlay", (*OVERLAYS, "sentinel"))
def test_redis_and_the_service_read_the_password_from_the_secret(rendered, compose, overlay: str) -> None:
    docs = rendered[overlay]
    pod = one(docs, "StatefulSet", "himnet-redis")["spec"]["template"]["spec"]
    redis = container(pod, "redis")
    assert secret_file(pod, redis, env_of(redis)["REDIS_PASSWORD_FILE"]) == (SECRET, "password")
    text = " ".join(redis.get("command", []) + redis["args"])
    assert "--requirepass" not in text, "the password would show in the pod spec and in ps"
    for probe in ("readinessProbe", "livenessProbe"):
        check = " ".join(redis[probe]["exec"]["command"])
        assert "REDISCLI_AUTH" in check and "PONG" in check, probe
    template = yaml.safe_load((K8S / "base" / "redis-secret-template.yaml").read_text(encoding="utf-8"))
    assert template["metadata"]["name"] == SECRET and "password" in template["stringData"]
    dep = one(docs, "Deployment", "himnet-forecast")
    fpod = dep["spec"]["template"]["spec"]
    (forecast,) = fpod["containers"]
    config = one(docs, "ConfigMap", forecast["envFrom"][0]["configMapRef"]["name"])["data"]
    assert secret_file(fpod, forecast, config["HIMNET_REDIS_PASSWORD_FILE"]) == (SECRET, "password")
    assert "HIMNET_REDIS_PASSWORD" not in config


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_single_redis_runs_the_compose_start_script(rendered, compose, overlay: str) -> None:
    pod = one(rendered[overlay], "StatefulSet", "himnet-redis")["spec"]["template"]["spec"]
    redis = container(pod, "redis")
    compose_start = [part.replace("$$", "$") for part in compose["services"]["redis"]["entrypoint"]]
    assert redis["command"] == [*compose_start, "redis-server"]
    assert redis["image"] == compose["services"]["redis"]["image"]


@pytest.mark.parametrize("overlay", (*OVERLAYS, "sentinel"))
def test_exporter_sidecar_is_scraped_and_pdb_protects_redis(rendered, compose, overlay: str) -> None:
    docs = rendered[overlay]
    sts = one(docs, "StatefulSet", "himnet-redis")
    pod = sts["spec"]["template"]["spec"]
    exporter = container(pod, "exporter")
    assert exporter["image"] == compose["services"]["redis-exporter"]["image"]
    env = env_of(exporter)
    assert env["REDIS_ADDR"] == "redis://127.0.0.1:6379"
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": SECRET, "key": "password"}}
    (port,) = exporter["ports"]
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port["containerPort"] == 9121
    pdb = one(docs, "PodDisruptionBudget", "himnet-redis")
    assert matches(pdb["spec"]["selector"]["matchLabels"], sts["spec"]["template"]["metadata"]["labels"])
    replicas = sts["spec"]["replicas"]
    if overlay == "sentinel":
        assert replicas == 2 and pdb["spec"]["maxUnavailable"] == 1, "one data node at a time"
    else:
        assert replicas == 1 and pdb["spec"]["minAvailable"] == 1, "no unannounced eviction"


def test_sentinel_component_files_match_the_compose_ones() -> None:
    assert (COMPONENT / "start-sentinel.sh").read_bytes() == (DOCKER / "redis" / "start-sentinel.sh").read_bytes()
    compose_conf = (DOCKER / "redis" / "sentinel.conf").read_text(encoding="utf-8")
    k8s_conf = (COMPONENT / "sentinel.conf").read_text(encoding="utf-8")

    def directives(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]

    # the same settings; only the primary's name differs (compose service vs pod DNS name)
    assert directives(k8s_conf) == [ln.replace("redis-primary", "himnet-redis-0.himnet-redis")
                                    for ln in directives(compose_conf)]


def test_sentinel_overlay_wires_data_nodes_sentinels_and_service(rendered) -> None:
    docs = rendered["sentinel"]
    sentinels = one(docs, "StatefulSet", "himnet-redis-sentinel")
    assert sentinels["spec"]["replicas"] == 3
    service = one(docs, "Service", sentinels["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    labels = sentinels["spec"]["template"]["metadata"]["labels"]
    assert matches(service["spec"]["selector"], labels)
    assert one(docs, "PodDisruptionBudget", "himnet-redis-sentinel")["spec"]["minAvailable"] == 2
    spod = sentinels["spec"]["template"]["spec"]
    sentinel = container(spod, "sentinel")
    assert secret_file(spod, sentinel, env_of(sentinel)["REDIS_PASSWORD_FILE"]) == (SECRET, "password")
    scripts = one(docs, "ConfigMap", next(v for v in spod["volumes"] if v["name"] == "scripts")["configMap"]["name"])
    assert {"start-redis.sh", "start-sentinel.sh", "sentinel.conf"} <= set(scripts["data"])
    conf = scripts["data"]["sentinel.conf"]
    monitor = next(ln.split() for ln in conf.splitlines() if ln.startswith("sentinel monitor"))
    master, host, port = monitor[2], monitor[3], int(monitor[4])
    redis_sts = one(docs, "StatefulSet", "himnet-redis")
    assert host == f"{redis_sts['metadata']['name']}-0.{redis_sts['spec']['serviceName']}" and port == 6379
    redis = container(redis_sts["spec"]["template"]["spec"], "redis")
    assert redis["command"] == ["/etc/himnet-redis/start-redis.sh"]
    env = env_of(redis)
    assert env["SENTINEL_MASTER"] == master and env["REDIS_SERVICE"] == redis_sts["spec"]["serviceName"]
    sentinel_hosts = [f"{sentinels['metadata']['name']}-{i}.{service['metadata']['name']}" for i in range(3)]
    assert env["SENTINEL_HOSTS"].split() == sentinel_hosts
    # the forecast pods use the sentinels, not a URL
    dep = one(docs, "Deployment", "himnet-forecast")
    config = one(docs, "ConfigMap", dep["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]
                 ["configMapRef"]["name"])["data"]
    assert "HIMNET_REDIS_URL" not in config
    assert config["HIMNET_REDIS_SENTINELS"].split(",") == [f"{h}:26379" for h in sentinel_hosts]
    assert config["HIMNET_REDIS_SENTINEL_MASTER"] == master
    # network: forecast pods reach the sentinels; data nodes reach each other for replication
    spolicy = one(docs, "NetworkPolicy", "himnet-redis-sentinel")
    sources = [s["podSelector"]["matchLabels"] for s in spolicy["spec"]["ingress"][0]["from"]]
    forecast_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert any(matches(s, forecast_labels) for s in sources)
    rpolicy = one(docs, "NetworkPolicy", "himnet-redis")
    redis_labels = redis_sts["spec"]["template"]["metadata"]["labels"]
    assert any(matches(s["podSelector"]["matchLabels"], redis_labels)
               for r in rpolicy["spec"]["ingress"] for s in r["from"] if "podSelector" in s
               if [p["port"] for p in r["ports"]] == [6379])


def test_sentinel_settings_are_settings(rendered) -> None:
    from tests.deploy.test_compose import settings_env_names
    docs = rendered["sentinel"]
    dep = one(docs, "Deployment", "himnet-forecast")
    config = one(docs, "ConfigMap", dep["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]
                 ["configMapRef"]["name"])["data"]
    unknown = sorted(set(config) - settings_env_names())
    assert not unknown, f"ConfigMap keys no setting reads: {unknown}"
