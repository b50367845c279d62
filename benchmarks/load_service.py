"""Load test of the forecast service (a script, not a test).

Starts ``python -m service`` (uvicorn, one worker) on loopback with a 207-sensor bundle, drives
it from this process with a minimal keep-alive HTTP/1.1 client (so the load generator costs
little CPU on a 2-core box), and prints p50/p99 latency and throughput for:

* ingest: one 207-sensor snapshot per POST /readings;
* uncached forecasts: POST /forecast with a different ``as_of`` (a new window) each request,
  one request at a time, so latency is comparable with the bare model at batch 1; then again,
  alternating each request with a bare-model run in this process (paired differences);
* uncached stateless forecasts: a fresh window in each request body (JSON parsing included);
* cached forecasts: the same window over and over, 8 connections;
* the bare model: the bundle's runtime called directly at batch 1 in this process, measured
  before and after the service phases (its drift is part of the result).

Percentiles are plain order statistics of the measured latencies (no coordinated-omission
correction). Without ``--bundle`` a METR-LA-preset checkpoint with random weights is exported
once to ``artifacts/bench-metr-la`` with ``training.export`` (benchmarks may import training;
the service may not)::

    python benchmarks/load_service.py [--bundle DIR] [--redis-url URL | --memory]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

API_KEY = "bench-key"


# --------------------------------------------------------------------------------- bundle
def ensure_bundle(path: Path) -> Path:
    """Export a randomly initialised METR-LA-preset model once (needs torch)."""
    if (path / "manifest.json").is_file():
        return path
    import torch

    from model import HimNet, get_preset
    from training.checkpoint import Checkpoint
    from training.export import export_bundle

    torch.manual_seed(0)
    cfg = get_preset("metr-la").model
    model = HimNet(cfg)
    ckpt = Checkpoint(config=cfg, state_dict=model.state_dict(), scaler_mean=54.0,
                      scaler_std=19.0, sensor_ids=[str(760000 + i) for i in range(cfg.num_nodes)],
                      interval_minutes=5.0, dataset="metr-la (random weights, benchmark)",
                      timezone="America/Los_Angeles")
    print(f"exporting a random-weight METR-LA bundle to {path} …", flush=True)
    export_bundle(ckpt, path)
    return path


# --------------------------------------------------------------------------------- client
class Conn:
    """One keep-alive HTTP/1.1 connection; just enough protocol for this benchmark."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        assert self.reader and self.writer
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        return status, headers, body

    async def close(self) -> None:
        if self.writer:
            self.writer.close()


def http(method: str, path: str, body: bytes = b"", *, key: bool = False) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: bench", f"Content-Length: {len(body)}"]
    if body:
        head.append("Content-Type: application/json")
    if key:
        head.append(f"X-API-Key: {API_KEY}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def drive(port: int, requests: list[bytes], concurrency: int,
                check: Callable[[int, dict[bytes, bytes]], None]) -> tuple[list[float], float]:
    """Send every request once over ``concurrency`` connections; latencies and wall time."""
    queue = list(reversed(requests))
    latencies: list[float] = []

    async def worker() -> None:
        conn = Conn("127.0.0.1", port)
        await conn.open()
        try:
            while queue:
                raw = queue.pop()
                t0 = time.perf_counter()
                status, headers, _ = await conn.request(raw)
                latencies.append(time.perf_counter() - t0)
                check(status, headers)
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def summary(name: str, lat: list[float], wall: float, per_request: int = 1,
            unit: str = "req/s") -> dict[str, float]:
    ms = np.array(lat) * 1e3
    row = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
           "throughput": len(lat) * per_request / wall}
    print(f"  {name:<38} n={len(lat):>5}  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms"
          f"  {row['throughput']:10.0f} {unit}", flush=True)
    return row


# --------------------------------------------------------------------------------- phases
def bare_model_ms(bundle: Path, repeats: int, threads: int) -> float:
    """Median batch-1 latency of the runtime called directly (same thread as warm-up)."""
    from service.runtime import load_runtime

    rt = load_runtime(bundle, threads=threads)
    r, ti, tt = rt.example_inputs(1)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        x = (r + rng.normal(0, 5, r.shape)).astype(np.float32)
        t0 = time.perf_counter()
        rt.predict(x, ti, tt)
        times.append(time.perf_counter() - t0)
    del rt
    return statistics.median(times) * 1e3


async def paired(port: int, requests: list[bytes], bundle: Path, threads: int
                 ) -> tuple[list[float], list[float]]:
    """Alternate one bare-model run (this process) and one uncached request, one at a time.

    On a shared, drifting CPU the difference of neighbouring measurements is far steadier than
    the difference of two separately taken medians.
    """
    from service.runtime import load_runtime

    rt = load_runtime(bundle, threads=threads)  # loaded, warmed and run on this thread
    inputs = rt.example_inputs(1)
    conn = Conn("127.0.0.1", port)
    await conn.open()
    bare, served = [], []
    check = expect(200, b"miss")
    try:
        for raw in requests:
            t0 = time.perf_counter()
            rt.predict(*inputs)
            bare.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)  # let this process's ORT threads stop spinning first
            t0 = time.perf_counter()
            status, headers, _ = await conn.request(raw)
            served.append(time.perf_counter() - t0)
            check(status, headers)
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    return bare, served


def server_sums(port: int) -> dict[str, float]:
    """Sums and counts of the service's own request and inference histograms."""
    from prometheus_client.parser import text_string_to_metric_families

    async def fetch() -> bytes:
        conn = Conn("127.0.0.1", port)
        await conn.open()
        try:
            return (await conn.request(http("GET", "/metrics")))[2]
        finally:
            await conn.close()

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(asyncio.run(fetch()).decode()):
        for sample in family.samples:
            if sample.name.startswith("himnet_inference_duration_seconds_") or (
                    sample.name.startswith("himnet_http_request_duration_seconds_")
                    and sample.labels.get("route") == "/forecast"):
                if sample.name.endswith(("_sum", "_count")):
                    out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def iso(slot: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(slot * 300))


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    async def probe() -> int:
        conn = Conn("127.0.0.1", port)
        await conn.open()
        try:
            return (await conn.request(http("GET", "/readyz")))[0]
        finally:
            await conn.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"service exited with status {proc.returncode}")
        try:
            if asyncio.run(probe()) == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("service did not become ready")


def expect(status_ok: int, cache: bytes | None = None) -> Callable[[int, dict[bytes, bytes]], None]:
    def check(status: int, headers: dict[bytes, bytes]) -> None:
        if status != status_ok:
            raise RuntimeError(f"unexpected HTTP {status}")
        if cache is not None and headers.get(b"x-cache") != cache:
            raise RuntimeError(f"expected X-Cache {cache!r}, got {headers.get(b'x-cache')!r}")
    return check


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "artifacts" / "bench-metr-la")
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_TEST_URL",
                                                          "redis://127.0.0.1:6379/15"))
    ap.add_argument("--memory", action="store_true", help="in-process buffer instead of Redis")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--ingest", type=int, default=1000, help="snapshots to ingest")
    ap.add_argument("--uncached", type=int, default=300, help="uncached forecasts")
    ap.add_argument("--cached", type=int, default=8000, help="cached forecasts")
    ap.add_argument("--bare", type=int, default=300, help="bare-model repeats (each time)")
    ap.add_argument("--threads", type=int, default=2, help="runtime intra-op threads")
    return ap.parse_args()


def _service_env(args: argparse.Namespace, bundle: Path, prefix: str) -> dict[str, str]:
    """The service's environment: this bundle, port, threads, a key prefix of its own in Redis."""
    env = {**os.environ, "HIMNET_BUNDLE_DIR": str(bundle), "HIMNET_API_KEY": API_KEY,
           "HIMNET_PORT": str(args.port), "HIMNET_LOG_LEVEL": "warning",
           "HIMNET_RETENTION_MINUTES": str((args.ingest + 10) * 5),
           "HIMNET_INFERENCE_QUEUE": "64", "HIMNET_THREADS": str(args.threads),
           "HIMNET_REDIS_PREFIX": prefix, "PYTHONPATH": str(REPO)}
    env.pop("REDIS_URL", None)
    if not args.memory:
        env["HIMNET_REDIS_URL"] = args.redis_url
    return env


def _phase_ingest(args: argparse.Namespace, sensors: list[str], rng: np.random.Generator,
                  first: int, last: int) -> dict[str, float]:
    ingest = [http("POST", "/readings", json.dumps({"readings": [{
        "timestamp": iso(s), "values": dict(zip(sensors, rng.uniform(5, 70, len(sensors))
                                                .round(2).tolist()))}]}).encode(), key=True)
        for s in range(first, last + 1)]
    lat, wall = asyncio.run(drive(args.port, ingest, 4, expect(200)))
    return summary("ingest (207-sensor snapshots)", lat, wall, len(sensors), "readings/s")


def _phase_uncached(args: argparse.Namespace, t_in: int, first: int, last: int) -> dict[str, float]:
    slots = list(range(last - args.uncached + 1, last + 1))
    assert slots[0] - args.uncached - t_in + 1 >= first, "ingest > 2 × uncached snapshots"
    uncached = [http("POST", "/forecast", json.dumps({"as_of": iso(s)}).encode()) for s in slots]
    before = server_sums(args.port)
    lat, wall = asyncio.run(drive(args.port, uncached, 1, expect(200, b"miss")))
    after = server_sums(args.port)
    result = summary("uncached forecast (new window each)", lat, wall)
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    req = d["himnet_http_request_duration_seconds_sum"] / d[
        "himnet_http_request_duration_seconds_count"]
    inf = d["himnet_inference_duration_seconds_sum"] / d["himnet_inference_duration_seconds_count"]
    print(f"    server side, mean: request {req * 1e3:.2f} ms, model {inf * 1e3:.2f} ms, "
          f"service overhead {(req - inf) * 1e3:.2f} ms", flush=True)
    return result


def _phase_paired(args: argparse.Namespace, bundle: Path, last: int) -> dict[str, float]:
    slots = list(range(last - 2 * args.uncached + 1, last - args.uncached + 1))
    again = [http("POST", "/forecast", json.dumps({"as_of": iso(s)}).encode()) for s in slots]
    bare_lat, served = asyncio.run(paired(args.port, again, bundle, args.threads))
    diff = np.median(np.array(served) - np.array(bare_lat)) * 1e3
    result = {"bare_p50_ms": float(np.median(bare_lat) * 1e3),
              "served_p50_ms": float(np.median(served) * 1e3), "overhead_ms": float(diff)}
    print(f"  uncached, interleaved with bare runs   n={len(served):>5}  service p50 "
          f"{result['served_p50_ms']:7.2f} ms, bare p50 {result['bare_p50_ms']:7.2f} ms, "
          f"median paired overhead {diff:+.2f} ms", flush=True)
    return result


def _phase_stateless(args: argparse.Namespace, sensors: list[str], t_in: int, rng: np.random.Generator,
                     last: int) -> dict[str, float]:
    stamps = [iso(s) for s in range(last - t_in + 1, last + 1)]
    stateless = [http("POST", "/forecast", json.dumps({"window": {
        "timestamps": stamps, "values": rng.uniform(5, 70, (t_in, len(sensors))).round(2)
        .tolist()}}).encode()) for _ in range(max(50, args.uncached // 3))]
    lat, wall = asyncio.run(drive(args.port, stateless, 1, expect(200, b"miss")))
    return summary("uncached stateless (window in body)", lat, wall)


def _phase_cached(args: argparse.Namespace) -> dict[str, float]:
    cached = [http("POST", "/forecast")] * args.cached
    asyncio.run(drive(args.port, cached[:200], 8, expect(200)))  # fill the cache, warm up
    lat, wall = asyncio.run(drive(args.port, cached, 8, expect(200, b"hit")))
    return summary("cached forecast (8 connections)", lat, wall)


def _drop_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def _print_targets(results: dict[str, dict[str, float]], bare: float) -> None:
    print("\ntargets:")
    u = results["uncached"]["p50_ms"]
    print(f"  uncached p50 {u:.2f} ms <= bare {bare:.2f} + 3 ms (separate medians): "
          f"{'yes' if u <= bare + 3 else 'NO'} (overhead {u - bare:+.2f} ms)")
    p = results["paired"]
    print(f"  uncached p50 {p['served_p50_ms']:.2f} ms <= bare {p['bare_p50_ms']:.2f} + 3 ms "
          f"(interleaved): {'yes' if p['served_p50_ms'] <= p['bare_p50_ms'] + 3 else 'NO'} "
          f"(median paired overhead {p['overhead_ms']:+.2f} ms)")
    c = results["cached"]["throughput"]
    print(f"  cached {c:.0f} req/s >= 1000: {'yes' if c >= 1000 else 'NO'}")
    i = results["ingest"]["throughput"]
    print(f"  ingest {i:.0f} readings/s >= 20000: {'yes' if i >= 20000 else 'NO'}")


def main() -> None:
    args = _parse_args()
    bundle = ensure_bundle(args.bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    sensors = manifest["sensor_ids"]
    t_in = manifest["in_steps"]
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    env = _service_env(args, bundle, prefix)
    print(f"cores: {os.cpu_count()}, load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(f"bundle: {bundle} (N={len(sensors)}), threads: {args.threads}, buffer: "
          f"{'memory' if args.memory else args.redis_url}", flush=True)

    bare_before = bare_model_ms(bundle, args.bare, args.threads)
    print(f"  bare model, batch 1 (before)         median {bare_before:.2f} ms", flush=True)

    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=REPO)
    results: dict[str, dict[str, float]] = {}
    try:
        wait_ready(args.port, proc)
        rng = np.random.default_rng(1)
        last = int(time.time() // 300) - 1
        first = last - args.ingest + 1
        results["ingest"] = _phase_ingest(args, sensors, rng, first, last)
        results["uncached"] = _phase_uncached(args, t_in, first, last)
        results["paired"] = _phase_paired(args, bundle, last)
        results["stateless"] = _phase_stateless(args, sensors, t_in, rng, last)
        results["cached"] = _phase_cached(args)
    finally:
        proc.terminate()
        proc.wait(30)
        if not args.memory:
            _drop_keys(args.redis_url, prefix)

    bare_after = bare_model_ms(bundle, args.bare, args.threads)
    print(f"  bare model, batch 1 (after)          median {bare_after:.2f} ms", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    _print_targets(results, statistics.mean([bare_before, bare_after]))


if __name__ == "__main__":
    main()
