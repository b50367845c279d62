"""The Redis start scripts of docker-compose.yml (and k8s), run for real: redis-server started by
the compose entrypoint requires the password from the secret file, refuses to start without one;
a sentinel started by docker/redis/start-sentinel.sh from docker/redis/sentinel.conf
authenticates to it and requires the password from its own clients; the k8s Sentinel
component's data node start script picks its role (sentinels' answer, else pod 0 is primary)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
import yaml

from tests.deploy.conftest import COMPOSE_FILE, DOCKER, K8S, require_tool, wait_for
from tests.ports import free_port

PASSWORD = "s3cret+/="


def start_script() -> list[str]:
    """The compose Redis entrypoint with compose's `$$` escapes undone (what the shell runs)."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return [part.replace("$$", "$") for part in compose["services"]["redis"]["entrypoint"]]


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "redis-password"
    path.write_text(PASSWORD + "\n", encoding="utf-8")
    return path


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def primary(tmp_path: Path, password_file: Path) -> Iterator[dict[str, Any]]:
    server = require_tool("redis-server")
    port = free_port()
    args = [*start_script(), server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--dir", str(tmp_path)]
    proc = spawn(args, {"REDIS_PASSWORD_FILE": str(password_file)}, tmp_path / "redis.log")
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, socket_timeout=2)
        wait_for(client.ping, 15, f"redis-server on {port}: {(tmp_path / 'redis.log').read_text()}")
        yield {"port": port, "client": client}
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_redis_requires_the_password_of_the_secret_file(primary: dict[str, Any]) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=primary["port"], socket_timeout=2)
    with pytest.raises(redis.AuthenticationError, match="(?i)auth"):
        anonymous.ping()
    wrong = redis.Redis(host="127.0.0.1", port=primary["port"], password="guess", socket_timeout=2)
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
        wrong.ping()
    assert primary["client"].ping() is True
    assert primary["client"].config_get("masterauth")["masterauth"] == PASSWORD
    # the password is not on the command line for `ps` to show
    info = primary["client"].info("server")
    assert PASSWORD not in str(info.get("executable", "")) + str(info.get("config_file", ""))


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_redis_refuses_to_start_without_a_password(tmp_path: Path, content: str | None) -> None:
    server = require_tool("redis-server")
    path = tmp_path / "redis-password"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = subprocess.run([*start_script(), server, "--port", str(free_port()), "--save", ""],
                            env={**os.environ, "REDIS_PASSWORD_FILE": str(path)},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "no password" in result.stderr


@pytest.fixture
def sentinel(tmp_path: Path, password_file: Path, primary: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """docker/redis/start-sentinel.sh with compose's template, pointed at the test's primary."""
    server = require_tool("redis-server")
    port = free_port()
    template = (DOCKER / "redis" / "sentinel.conf").read_text(encoding="utf-8")
    template = (template.replace("port 26379", f"port {port}\nbind 127.0.0.1")
                .replace("redis-primary 6379", f"127.0.0.1 {primary['port']}")
                .replace("down-after-milliseconds himnet 5000", "down-after-milliseconds himnet 1000"))
    conf = tmp_path / "sentinel.template.conf"
    conf.write_text(template, encoding="utf-8")
    bin_dir = tmp_path / "bin"  # redis-sentinel is redis-server in sentinel mode
    bin_dir.mkdir()
    (bin_dir / "redis-sentinel").write_text(f'#!/bin/sh\nexec {server} "$1" --sentinel\n', encoding="utf-8")
    (bin_dir / "redis-sentinel").chmod(0o755)
    work = tmp_path / "sentinel"
    work.mkdir()
    env = {"REDIS_PASSWORD_FILE": str(password_file), "SENTINEL_DIR": str(work),
           "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    log = tmp_path / "sentinel.log"
    proc = spawn([str(DOCKER / "redis" / "start-sentinel.sh"), str(conf)], env, log)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, socket_timeout=2)
        wait_for(client.ping, 15, f"sentinel on {port}: {log.read_text()}")
        yield {"port": port, "client": client, "log": log, "dir": work}
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_sentinel_authenticates_to_the_primary_and_to_its_clients(
        sentinel: dict[str, Any], primary: dict[str, Any]) -> None:
    client = sentinel["client"]
    with pytest.raises(redis.AuthenticationError, match="(?i)auth"):
        redis.Redis(host="127.0.0.1", port=sentinel["port"], socket_timeout=2).ping()
    master = client.sentinel_master("himnet")
    assert int(master["port"]) == primary["port"] and master["is_master"]

    def primary_seen_up() -> bool:  # past down-after-milliseconds: authenticated pings answer
        state = client.sentinel_master("himnet")
        return not state["is_sdown"] and int(state["last-ok-ping-reply"]) < 1000 and \
            int(state["info-refresh"]) < 10_000

    wait_for(primary_seen_up, 10, f"sentinel sees the primary up\n{sentinel['log'].read_text()}")
    assert not client.sentinel_master("himnet")["is_sdown"]
    assert (sentinel["dir"] / "sentinel.conf").stat().st_mode & 0o077 == 0, "the copy with the password is private"


K8S_START = K8S / "components" / "redis-sentinel" / "start-redis.sh"


def start_k8s_node(tmp_path: Path, password_file: Path, pod: str, sentinel_port: int | None,
                   ) -> tuple[subprocess.Popen[bytes], redis.Redis, Path]:
    """k8s/components/redis-sentinel/start-redis.sh as pod ``pod`` of StatefulSet himnet-redis."""
    require_tool("redis-server")
    port = free_port()
    data = tmp_path / pod
    data.mkdir()
    env = {"REDIS_PASSWORD_FILE": str(password_file), "POD_NAME": pod, "REDIS_SERVICE": "himnet-redis",
           "SENTINEL_MASTER": "himnet", "SENTINEL_HOSTS": "127.0.0.1" if sentinel_port else "",
           "SENTINEL_PORT": str(sentinel_port or 1)}
    log = tmp_path / f"{pod}.log"
    proc = spawn([str(K8S_START), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(data)],
                 env, log)
    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, socket_timeout=2, decode_responses=True)
    wait_for(client.ping, 15, f"{pod} on {port}: {log.read_text() if log.exists() else ''}")
    return proc, client, log


@pytest.mark.parametrize("pod, role", [("himnet-redis-0", "master"), ("himnet-redis-1", "slave")])
def test_k8s_node_without_sentinels_pod_zero_is_the_primary(tmp_path: Path, password_file: Path,
                                                            pod: str, role: str) -> None:
    proc, client, _log = start_k8s_node(tmp_path, password_file, pod, None)
    try:
        info = client.info("replication")
        assert info["role"] == role
        if role == "slave":
            assert info["master_host"] == "himnet-redis-0.himnet-redis"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_k8s_node_replicates_the_primary_the_sentinels_name(
        tmp_path: Path, password_file: Path, primary: dict[str, Any], sentinel: dict[str, Any]) -> None:
    proc, client, log = start_k8s_node(tmp_path, password_file, "himnet-redis-1", sentinel["port"])
    try:
        info = client.info("replication")
        assert info["role"] == "slave" and int(info["master_port"]) == primary["port"], log.read_text()
        # masterauth: the replica authenticates to the primary and copies its data
        primary["client"].set("himnet:probe", "1")
        wait_for(lambda: client.get("himnet:probe") == "1", 15, f"replication\n{log.read_text()}")
        assert client.info("replication")["master_link_status"] == "up"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
