"""Real Redis for failover runs: a primary, a replica and three sentinels on loopback.

Plain ``redis-server`` processes (``redis-sentinel`` is ``redis-server --sentinel``), all with
one password, each with its own configuration file and log in ``work``. Used by
``benchmarks/redis_failover.py`` and its test; everything is stopped by :meth:`stop` (the class
is a context manager).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis

MASTER = "himnet"
PASSWORD = "failover+pw/="


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` until it is true; TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"gave up waiting for {what} after {timeout_s} s")


@dataclass
class Node:
    """One redis-server process (data node or sentinel)."""

    name: str
    port: int
    conf: Path
    sentinel: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD,
                           socket_timeout=1, socket_connect_timeout=1, decode_responses=True)


class RedisTopology:
    """Primary ``a``, replica ``b`` and sentinels ``s1..s3`` (quorum 2)."""

    def __init__(self, work: Path, *, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 2000, server: str | None = None) -> None:
        self.work = work
        self.server = server or shutil.which("redis-server") or "redis-server"
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.password_file = work / "redis-password"
        self.data = [Node(n, free_port(), work / f"{n}.conf") for n in ("a", "b")]
        self.sentinels = [Node(f"s{i}", free_port(), work / f"s{i}.conf", sentinel=True)
                          for i in (1, 2, 3)]
        self.primary_port = self.data[0].port

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """All five processes, each replica linked and every sentinel aware of the others."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(PASSWORD + "\n", encoding="utf-8")
        a, b = self.data
        self._write_data_conf(a, None)
        self._write_data_conf(b, a.port)
        for node in self.sentinels:
            self._write_sentinel_conf(node, a.port)
        for node in (a, b, *self.sentinels):
            self.launch(node)
        replica = b.client()
        wait_for(lambda: replica.info("replication")["master_link_status"] == "up", 15,
                 "the replica's link to the primary")

        def sentinels_see_everyone() -> bool:
            states = [s.client().sentinel_master(MASTER) for s in self.sentinels]
            return all(int(st["num-other-sentinels"]) >= 2 and int(st["num-slaves"]) >= 1
                       for st in states)

        wait_for(sentinels_see_everyone, 20, "three sentinels that know each other and the replica")

    def stop(self) -> None:
        for node in (*self.sentinels, *self.data):
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
            if node.proc is not None:
                node.proc.wait(timeout=10)
                node.proc = None

    def __enter__(self) -> RedisTopology:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def launch(self, node: Node) -> None:
        """Start ``node`` from its configuration file; wait until it answers."""
        args = [self.server, str(node.conf)] + (["--sentinel"] if node.sentinel else [])
        with (self.work / f"{node.name}.log").open("ab") as log:
            node.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        client = node.client()
        wait_for(lambda: client.ping(), 10, f"{node.name} on port {node.port}")

    def rejoin(self, node: Node) -> None:
        """Restart a dead node as a replica of the primary the sentinels name now, as the k8s
        component's start-redis.sh does (a node that came back as a primary would be turned
        into a replica by the sentinels too, but only ~10 s later)."""
        primary = self.master_port()
        assert primary is not None and primary != node.port, "no promoted primary to rejoin"
        self._write_data_conf(node, primary)
        self.launch(node)

    # --- faults and state -----------------------------------------------------------------
    def node_at(self, port: int) -> Node:
        return next(n for n in self.data if n.port == port)

    def kill(self, node: Node) -> None:
        """kill -9: no shutdown, no last flush to the replica."""
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(timeout=10)
        node.proc = None

    def pause(self, node: Node, paused: bool) -> None:
        """SIGSTOP / SIGCONT: a node that lags (its TCP peers see nothing, not a closed socket)."""
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def master_port(self) -> int | None:
        """The primary's port as the first answering sentinel names it."""
        for node in self.sentinels:
            try:
                addr = node.client().sentinel_get_master_addr_by_name(MASTER)
            except (redis.RedisError, OSError):
                continue
            if addr:
                return int(addr[1])
        return None

    @property
    def sentinel_hosts(self) -> str:
        """``HIMNET_REDIS_SENTINELS`` for these sentinels."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    # --- configuration --------------------------------------------------------------------
    def _write_data_conf(self, node: Node, replica_of: int | None) -> None:
        directory = self.work / node.name
        directory.mkdir(exist_ok=True)
        lines = [f"port {node.port}", "bind 127.0.0.1", f'dir "{directory}"', 'save ""',
                 "appendonly no", f'requirepass "{PASSWORD}"', f'masterauth "{PASSWORD}"']
        if replica_of is not None:
            lines.append(f"replicaof 127.0.0.1 {replica_of}")
        node.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _write_sentinel_conf(self, node: Node, primary: int) -> None:
        directory = self.work / node.name
        directory.mkdir(exist_ok=True)
        lines = [f"port {node.port}", "bind 127.0.0.1", f'dir "{directory}"',
                 f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2",
                 f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}",
                 f"sentinel failover-timeout {MASTER} {self.failover_timeout_ms}",
                 f"sentinel parallel-syncs {MASTER} 1",
                 f'sentinel auth-pass {MASTER} "{PASSWORD}"', f'requirepass "{PASSWORD}"']
        node.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
