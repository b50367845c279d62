"""docker-compose.yml: valid against the Compose Specification's JSON schema, and wired as the
deployment needs (Redis with AOF, healthchecks, profiles, secret, read-only bundle volume)."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings
from tests.deploy.conftest import COMPOSE_FILE, REPO, require_tool

# Environment variables read by the entrypoint script rather than by service/settings.py.
ENTRYPOINT_VARS = {"HIMNET_BUNDLE_WAIT_S", "HIMNET_PYTHON"}


def settings_env_names() -> set[str]:
    """Every environment variable service/settings.py reads (prefix HIMNET_, plus aliases)."""
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"HIMNET_{name.upper()}")
        alias = field.validation_alias
        for choice in getattr(alias, "choices", []) or []:
            names.add(str(choice).upper())
    return names


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("check-jsonschema")
    return subprocess.run([tool, "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_compose_file_matches_the_compose_specification() -> None:
    result = check_compose(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_compose_file(tmp_path: Path, compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["healthcheck"]["retries"] = "many"  # must be a number
    broken["services"]["forecast"]["depends_on"]["redis"]["condition"] = "service_ready"  # no such
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = check_compose(path)
    assert result.returncode != 0, "the schema check accepted an invalid file"


def test_redis_keeps_an_append_only_file_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    cmd = redis["command"]
    assert cmd[0] == "redis-server"
    opts = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert opts["--appendonly"] == "yes"
    assert opts["--dir"] == "/data"
    assert any(str(v).split(":")[:2] == ["redis-data", "/data"] for v in redis["volumes"])
    assert "redis-data" in compose["volumes"]
    # the healthcheck asks redis-cli for PONG, authenticated with the secret's password
    check = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli" in check and "REDISCLI_AUTH" in check and "PONG" in check


def test_forecast_service_is_wired_like_production(compose: dict[str, Any]) -> None:
    secrets = compose["secrets"]
    for name in ("forecast", "forecast-gpu"):
        svc = compose["services"][name]
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        env = svc["environment"]
        assert env["HIMNET_REDIS_URL"].startswith("redis://redis:6379/")
        # the API key comes from a secret mounted as a file, never from the environment
        assert "HIMNET_API_KEY" not in env
        secret = svc["secrets"][0]
        assert secret in secrets
        assert env["HIMNET_API_KEY_FILE"] == f"/run/secrets/{secret}"
        models = [v for v in svc["volumes"] if isinstance(v, dict) and v["source"] == "models"]
        assert models and models[0]["read_only"] is True
        assert env["HIMNET_BUNDLE_DIR"].startswith(models[0]["target"] + "/")
        assert svc["read_only"] is True and "/tmp" in svc["tmpfs"]
        assert svc["user"].split(":")[0] != "0"
        assert "/readyz" in svc["healthcheck"]["test"]
    assert compose["services"]["forecast"].get("profiles") is None, "the CPU service runs by default"


def test_every_service_variable_is_a_setting(compose: dict[str, Any]) -> None:
    known = settings_env_names() | ENTRYPOINT_VARS
    for name in ("forecast", "forecast-gpu", "forecast-sentinel"):
        unknown = sorted(k for k in compose["services"][name]["environment"] if k not in known)
        assert not unknown, f"{name}: {unknown} are read by nothing (typo?)"


def test_gpu_profile_reserves_an_nvidia_gpu(compose: dict[str, Any]) -> None:
    gpu = compose["services"]["forecast-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["environment"]["HIMNET_DEVICE"] == "cuda"
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.service-gpu"
    # Prometheus discovers replicas under the name `forecast`: the GPU service answers to it too
    assert "forecast" in gpu["networks"]["default"]["aliases"]


def test_train_and_replay_profiles(compose: dict[str, Any]) -> None:
    train, replay = compose["services"]["train"], compose["services"]["replay"]
    assert train["profiles"] == ["train"] and replay["profiles"] == ["replay"]
    assert train["build"]["dockerfile"] == "docker/Dockerfile.train"
    assert train["command"] == ["pipeline"]
    # the bundle the training writes is the one the service reads
    assert "models:/models" in train["volumes"]
    assert train["environment"]["HIMNET_BUNDLE_OUT"] == compose["services"]["forecast"]["environment"][
        "HIMNET_BUNDLE_DIR"]
    # `publish VERSION` writes where the service's reload looks, and may call it
    assert train["environment"]["HIMNET_MODELS_DIR"] == compose["services"]["forecast"][
        "environment"]["HIMNET_MODELS_DIR"] == "/models"
    assert train["environment"]["HIMNET_SERVICE_URL"] == "http://forecast:8000"
    assert train["environment"]["HIMNET_API_KEY_FILE"] == f"/run/secrets/{train['secrets'][0]}"
    cmd = replay["command"]
    assert cmd[0] == "replay" and cmd[cmd.index("--url") + 1] == "http://forecast:8000"
    assert replay["depends_on"]["forecast"]["condition"] == "service_healthy"
    assert replay["environment"]["HIMNET_API_KEY_FILE"] == f"/run/secrets/{replay['secrets'][0]}"


def test_monitoring_mounts_the_repository_config(compose: dict[str, Any]) -> None:
    prom = compose["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"] if v.startswith("./")}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./docker/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    graf = compose["services"]["grafana"]
    targets = {v.split(":")[1]: v.split(":")[0] for v in graf["volumes"] if v.startswith("./")}
    assert targets["/etc/grafana/provisioning"] == "./docker/grafana/provisioning"
    assert targets["/var/lib/grafana/dashboards"] == "./docker/grafana/dashboards"


def test_bind_mounts_and_build_files_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for v in svc.get("volumes", []):
            if isinstance(v, str) and v.startswith("./") and not v.startswith("./data:"):
                assert (REPO / v.split(":")[0]).exists(), f"{name}: {v} does not exist"
        if "build" in svc:
            assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name


@pytest.mark.parametrize("service", ["forecast", "forecast-gpu", "train", "replay"])
def test_images_are_built_from_this_repository(compose: dict[str, Any], service: str) -> None:
    svc = compose["services"][service]
    assert svc["build"]["context"] == "."
    assert svc["image"].startswith("himnet-")


REDIS_NODES = ("redis", "redis-primary", "redis-replica")
SENTINELS = ("redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3")


def test_redis_requires_the_password_from_a_secret_file(compose: dict[str, Any]) -> None:
    assert compose["secrets"]["redis_password"]["file"].endswith("./secrets/redis-password}")
    for name in REDIS_NODES + SENTINELS:
        svc = compose["services"][name]
        assert svc["secrets"] == ["redis_password"], name
        assert svc["environment"]["REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password", name
        assert svc["user"].split(":")[0] != "0", name
        # the password never appears in a command line or the environment
        text = " ".join(map(str, svc["entrypoint"] + svc["command"]))
        assert "--requirepass" not in text and "REDIS_PASSWORD=" not in text, name
    start = compose["services"]["redis"]["entrypoint"]
    assert start[:2] == ["sh", "-c"] and "requirepass" in start[2] and "masterauth" in start[2]
    for name in ("forecast", "forecast-gpu", "forecast-sentinel"):
        svc = compose["services"][name]
        assert "redis_password" in svc["secrets"], name
        assert svc["environment"]["HIMNET_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password", name
        assert "HIMNET_REDIS_PASSWORD" not in svc["environment"], name


def test_redis_exporter_is_scraped_by_prometheus(compose: dict[str, Any]) -> None:
    exporter = compose["services"]["redis-exporter"]
    assert exporter["image"].startswith("oliver006/redis_exporter:v")
    assert exporter["environment"]["REDIS_ADDR"] == "redis://redis:6379"
    assert exporter["secrets"] == ["redis_password"]
    assert "/run/secrets/redis_password" in " ".join(exporter["entrypoint"])
    assert exporter["depends_on"]["redis"]["condition"] == "service_healthy"
    prometheus = yaml.safe_load((REPO / "docker" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "redis"]
    assert job["static_configs"][0]["targets"] == ["redis-exporter:9121"]


def sentinel_conf() -> dict[str, list[str]]:
    """{directive: arguments}; `sentinel X` directives keyed by both words."""
    out = {}
    for line in (REPO / "docker" / "redis" / "sentinel.conf").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            n = 2 if words[0] == "sentinel" else 1
            out[" ".join(words[:n])] = words[n:]
    return out


def test_sentinel_profile_has_a_primary_a_replica_and_three_sentinels(compose: dict[str, Any]) -> None:
    services = compose["services"]
    members = [n for n, s in services.items() if "sentinel" in s.get("profiles", [])]
    assert sorted(members) == sorted(["redis-primary", "redis-replica", *SENTINELS, "forecast-sentinel"])
    single = services["redis"]["command"]
    for name in ("redis-primary", "redis-replica"):
        cmd = services[name]["command"]
        assert cmd[:len(single)] == single, f"{name}: not the single Redis's persistence options"
        extra = dict(zip(cmd[len(single)::2], cmd[len(single) + 1::2]))
        assert extra["--replica-announce-ip"] == name
        assert services[name]["entrypoint"] == services["redis"]["entrypoint"]
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1:][:2] == ["redis-primary", "6379"]
    assert services["redis-primary"]["volumes"] != services["redis-replica"]["volumes"]
    conf = sentinel_conf()
    master, host, port, quorum = conf["sentinel monitor"]
    assert (host, port) == ("redis-primary", "6379")
    assert 2 <= int(quorum) <= len(SENTINELS) // 2 + 1, "a majority of the three must agree"
    assert conf["port"] == ["26379"] and conf["sentinel resolve-hostnames"] == ["yes"]
    for name in SENTINELS:
        svc = services[name]
        assert svc["entrypoint"][0].endswith("/start-sentinel.sh"), name
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        assert mounts[svc["entrypoint"][1]] == "./docker/redis/sentinel.conf"
        assert mounts[svc["entrypoint"][0]] == "./docker/redis/start-sentinel.sh"
        assert svc["environment"]["REDIS_PORT"] == "26379", "the healthcheck asks the sentinel port"
    env = services["forecast-sentinel"]["environment"]
    assert env["HIMNET_REDIS_SENTINELS"].split(",") == [f"{n}:26379" for n in SENTINELS]
    assert env["HIMNET_REDIS_SENTINEL_MASTER"] == master
    assert "HIMNET_REDIS_URL" not in env, "the sentinels, not a URL, name the primary"
    assert set(services["forecast-sentinel"]["depends_on"]) == set(SENTINELS)
    assert "forecast" in services["forecast-sentinel"]["networks"]["default"]["aliases"]
