"""The Redis start scripts of docker-compose.yml (and k8s), run for real: redis-server started by
the compose entrypoint requires the password from the secret file, refuses to start without one,
and a sentinel started by docker/redis/start-sentinel.sh from docker/redis/sentinel.conf
authenticates to it and requires the password from its own clients."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
import yaml

from tests.deploy.conftest import COMPOSE_FILE, DOCKER, free_port, require_tool, wait_for

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
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    wrong = redis.Redis(host="127.0.0.1", port=primary["port"], password="guess", socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):
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


def test_sentinel_authenticates_to_the_primary_and_to_its_clients(
        tmp_path: Path, password_file: Path, primary: dict[str, Any]) -> None:
    server = require_tool("redis-server")
    # compose's template, pointed at this test's loopback ports; the start script is the real one
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
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping()
        master = client.sentinel_master("himnet")
        assert int(master["port"]) == primary["port"] and master["is_master"]

        def primary_seen_up() -> bool:  # past down-after-milliseconds: authenticated pings answer
            state = client.sentinel_master("himnet")
            return not state["is_sdown"] and int(state["last-ok-ping-reply"]) < 1000 and \
                int(state["info-refresh"]) < 10_000

        wait_for(primary_seen_up, 10, f"sentinel sees the primary up\n{log.read_text()}")
        assert not client.sentinel_master("himnet")["is_sdown"]
        assert (work / "sentinel.conf").stat().st_mode & 0o077 == 0, "the copy with the password is private"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
