"""What the serving benchmarks share: a service process with its own settings and Redis prefix,
a buffer filled with readings, and timed closed-loop phases of distinct-window forecasts.

Built on ``benchmarks/load_service.py``'s minimal keep-alive client (the load generator must
cost little CPU on a 2-core box). Percentiles are plain order statistics of the measured
latencies (no coordinated-omission correction).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.load_service import API_KEY, REPO, Conn, _drop_keys, drive, expect, http, iso
from benchmarks.load_service import wait_ready as _wait_ready


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Service:
    """One ``python -m service`` process on loopback, with ``env`` on top of the defaults."""

    bundle: Path
    port: int
    redis_url: str
    env: dict[str, str] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    proc: subprocess.Popen | None = None

    def start(self) -> Service:
        env = {**os.environ, "HIMNET_BUNDLE_DIR": str(self.bundle), "HIMNET_API_KEY": API_KEY,
               "HIMNET_PORT": str(self.port), "HIMNET_LOG_LEVEL": "warning",
               "HIMNET_RETENTION_MINUTES": str(5 * 10_000), "HIMNET_INFERENCE_QUEUE": "256",
               "HIMNET_REDIS_PREFIX": self.prefix, "HIMNET_REDIS_URL": self.redis_url,
               "PYTHONPATH": str(REPO), **self.env}
        env.pop("REDIS_URL", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=REPO)
        _wait_ready(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None
        _drop_keys(self.redis_url, self.prefix)

    def ingest(self, sensors: list[str], first: int, last: int, seed: int = 1) -> None:
        """One snapshot per slot ``first..last`` (4 connections)."""
        rng = np.random.default_rng(seed)
        bodies = [http("POST", "/readings", json.dumps({"readings": [{
            "timestamp": iso(s), "values": dict(zip(sensors, rng.uniform(5, 70, len(sensors))
                                                    .round(2).tolist()))}]}).encode(), key=True)
            for s in range(first, last + 1)]
        asyncio.run(drive(self.port, bodies, 4, expect(200)))

    def clear_cache(self) -> None:
        """Forget cached forecasts, so the same as_of values are uncached again."""
        asyncio.run(drive(self.port, [http("DELETE", "/admin/cache", key=True)], 1, expect(204)))


def as_of_requests(slots: list[int]) -> list[bytes]:
    return [http("POST", "/forecast", json.dumps({"as_of": iso(s)}).encode()) for s in slots]


SHED_KINDS = {b"in flight": "in_flight", b"could not start": "start_deadline"}  # else queue_full


def shed_kind(body: bytes) -> str:
    """Which bound refused a request, from its 503 problem's detail."""
    return next((kind for marker, kind in SHED_KINDS.items() if marker in body), "queue_full")


def server_ms(headers: dict[bytes, bytes]) -> float:
    """The service's own time for a request: ``Server-Timing: app;dur=…`` (NaN when absent)."""
    for part in headers.get(b"server-timing", b"").split(b","):
        name, _, dur = part.strip().partition(b";dur=")
        if name == b"app":
            return float(dur.split(b";")[0])
    return float("nan")


@dataclass
class PhaseResult:
    answered: list[float]  # seconds, 200 answers
    shed: list[float]  # seconds, 503 answers (client side)
    wall: float
    shed_server_ms: list[float] = field(default_factory=list)  # the service's own time per 503
    shed_kinds: list[str] = field(default_factory=list)  # which bound refused each 503

    def row(self) -> dict[str, float]:
        ok = np.array(self.answered) * 1e3
        shed = np.array(self.shed) * 1e3
        total = len(self.answered) + len(self.shed)
        return {"answered": len(self.answered), "shed": len(self.shed),
                "shed_share": len(self.shed) / total if total else 0.0,
                "p50_ms": float(np.percentile(ok, 50)) if len(ok) else float("nan"),
                "p99_ms": float(np.percentile(ok, 99)) if len(ok) else float("nan"),
                "shed_max_ms": float(shed.max()) if len(shed) else float("nan"),
                "shed_p99_ms": float(np.percentile(shed, 99)) if len(shed) else float("nan"),
                "shed_server_max_ms": float(np.nanmax(self.shed_server_ms)) if len(shed) else float("nan"),
                **{f"shed_{k}": self.shed_kinds.count(k) for k in (*SHED_KINDS.values(), "queue_full")},
                **{f"shed_{k}_max_ms": max((t * 1e3 for t, kind in zip(self.shed, self.shed_kinds) if kind == k),
                                           default=float("nan")) for k in (*SHED_KINDS.values(), "queue_full")},
                "throughput": len(self.answered) / self.wall}


async def closed_loop(port: int, requests: Iterator[bytes], clients: int, duration_s: float,
                      shed_pause_s: float = 0.1, cache: bytes | None = b"miss") -> PhaseResult:
    """``clients`` connections, each sending its next request when the last one is answered,
    for ``duration_s`` or until ``requests`` runs out; after a 503 a client pauses
    ``shed_pause_s`` (a client that backs off, as Retry-After asks, more eagerly)."""
    result = PhaseResult([], [], 0.0)
    stop_at = time.perf_counter() + duration_s

    async def client() -> None:
        conn = Conn("127.0.0.1", port)
        await conn.open()
        try:
            while time.perf_counter() < stop_at:
                raw = next(requests, None)
                if raw is None:
                    return
                t0 = time.perf_counter()
                status, headers, body = await conn.request(raw)
                took = time.perf_counter() - t0
                if status == 503:
                    result.shed.append(took)
                    result.shed_server_ms.append(server_ms(headers))
                    result.shed_kinds.append(shed_kind(body))
                    if headers.get(b"connection") == b"close":
                        await conn.close()
                        await conn.open()
                    await asyncio.sleep(shed_pause_s)
                    continue
                if status != 200 or (cache is not None and headers.get(b"x-cache") != cache):
                    raise RuntimeError(f"unexpected answer {status} {headers.get(b'x-cache')}")
                result.answered.append(took)
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.wall = time.perf_counter() - started
    return result


def print_row(name: str, row: dict[str, float]) -> None:
    print(f"  {name:<34} answered {row['answered']:>5}  p50 {row['p50_ms']:8.2f} ms  "
          f"p99 {row['p99_ms']:8.2f} ms  {row['throughput']:7.1f} req/s  shed "
          f"{100 * row['shed_share']:5.1f} % (max {row['shed_max_ms']:.1f} ms, in the service "
          f"{row['shed_server_max_ms']:.1f} ms; {row['shed_in_flight']} in flight / "
          f"{row['shed_start_deadline']} deadline / {row['shed_queue_full']} queue)", flush=True)
