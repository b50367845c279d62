"""Model swaps under load (a script, not a test): failed requests and p99 during the swaps.

Starts ``python -m service`` (uvicorn, one worker, Redis) on loopback with ``HIMNET_MODELS_DIR``
holding two versions of a 207-sensor METR-LA-preset bundle (random weights, exported once to
``artifacts/bench-swap``), drives it with a bounded async client (``--connections`` keep-alive
connections, each waiting ``--think-ms`` between requests) sending a steady mix of

* cached stateless forecasts (the same window every time: a cache hit once computed),
* uncached stateless forecasts (a fresh window in every request),
* buffered forecasts of the newest window (cached until an ingest changes that window),
* ingest (POST /readings of one 207-sensor snapshot of the current slot),

and meanwhile calls ``POST /admin/reload`` ``--swaps`` times, alternating the two versions
(each a full verify + load + warm-up beside the serving model, then the swap). A request
belongs to a swap window when it starts between a reload's start and one second after its
answer (the new version's cache is cold then); the rest are steady. Printed: failed requests
(anything but 200, or a broken connection), p99 of each set and their ratio, measured in the
same run, and the load average::

    python benchmarks/model_swap.py [--redis-url URL] [--duration 90] [--swaps 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.load_service import API_KEY, Conn, http, iso, wait_ready  # noqa: E402

VERSIONS = ("bench-a", "bench-b")
SWAP_TAIL_S = 1.0  # a swap window lasts until this long after the reload answered


def ensure_bundles(root: Path) -> list[str]:
    """Two versions of a random-weight METR-LA-preset bundle (needs torch, once)."""
    missing = [v for v in VERSIONS if not (root / v / "manifest.json").is_file()]
    if missing:
        import torch

        from model import HimNet, get_preset
        from training.checkpoint import Checkpoint
        from training.export import export_bundle

        cfg = get_preset("metr-la").model
        for seed, version in enumerate(VERSIONS):
            if version not in missing:
                continue
            torch.manual_seed(seed)
            ckpt = Checkpoint(config=cfg, state_dict=HimNet(cfg).state_dict(), scaler_mean=54.0,
                              scaler_std=19.0,
                              sensor_ids=[str(760000 + i) for i in range(cfg.num_nodes)],
                              interval_minutes=5.0, dataset="metr-la (random weights, benchmark)",
                              timezone="America/Los_Angeles")
            print(f"exporting {version} to {root / version} …", flush=True)
            export_bundle(ckpt, root / version, version=version, contraction="generate")
    return json.loads((root / VERSIONS[0] / "manifest.json").read_text())["sensor_ids"]


class Load:
    """The steady mixed load; records (start time, latency, kind, ok) per request."""

    def __init__(self, port: int, sensors: list[str], t_in: int, think_s: float) -> None:
        self.port, self.sensors, self.t_in, self.think_s = port, sensors, t_in, think_s
        self.rng = np.random.default_rng(0)
        last = int(time.time() // 300) - 1
        self.stamps = [iso(s) for s in range(last - t_in + 1, last + 1)]
        self.fixed = self._window_body()
        self.records: list[tuple[float, float, str, bool]] = []
        self.failures: list[str] = []
        self.stop = False

    async def prime(self) -> None:
        """Ingest the input window before the load starts (buffered forecasts need one)."""
        conn = Conn("127.0.0.1", self.port)
        await conn.open()
        try:
            for stamp in self.stamps:
                values = dict(zip(self.sensors, self.rng.uniform(20, 70, len(self.sensors)).tolist()))
                body = json.dumps({"readings": [{"timestamp": stamp, "values": values}]}).encode()
                status, _, answer = await conn.request(http("POST", "/readings", body, key=True))
                assert status == 200, answer
        finally:
            await conn.close()

    def _window_body(self) -> bytes:
        values = self.rng.uniform(20, 70, (self.t_in, len(self.sensors))).round(2)
        return json.dumps({"window": {"timestamps": self.stamps, "values": values.tolist()}}).encode()

    def _next(self, i: int) -> tuple[str, bytes]:
        kind = ("cached", "uncached", "buffered", "ingest")[i % 4]
        if kind == "cached":
            return kind, http("POST", "/forecast", self.fixed)
        if kind == "uncached":
            return kind, http("POST", "/forecast", self._window_body())
        if kind == "buffered":
            return kind, http("POST", "/forecast")
        slot = int(time.time() // 300)
        values = {s: float(v) for s, v in zip(self.sensors, self.rng.uniform(20, 70, len(self.sensors)))}
        body = json.dumps({"readings": [{"timestamp": iso(slot), "values": values}]}).encode()
        return kind, http("POST", "/readings", body, key=True)

    async def worker(self, offset: int) -> None:
        conn = Conn("127.0.0.1", self.port)
        await conn.open()
        i = offset
        try:
            while not self.stop:
                kind, raw = self._next(i)
                i += 1
                t0 = time.perf_counter()
                try:
                    status, _, answer = await conn.request(raw)
                    ok = status == 200
                    if not ok:
                        self.failures.append(f"{kind}: {status} {answer[:200]!r}")
                except (OSError, asyncio.IncompleteReadError) as exc:
                    ok = False
                    self.failures.append(f"{kind}: {exc!r}")
                    await conn.close()
                    conn = Conn("127.0.0.1", self.port)
                    await conn.open()
                self.records.append((t0, time.perf_counter() - t0, kind, ok))
                await asyncio.sleep(self.think_s)
        finally:
            await conn.close()


async def swapper(port: int, swaps: int, first_s: float, every_s: float
                  ) -> list[tuple[float, float, int, str]]:
    """``swaps`` reloads alternating the versions; (start, end, status, outcome) of each.

    Each reload on a fresh connection: uvicorn closes keep-alive connections idle for 5 s.
    """
    done = []
    await asyncio.sleep(first_s)
    for k in range(swaps):
        version = VERSIONS[(k + 1) % 2]
        body = json.dumps({"version": version}).encode()
        conn = Conn("127.0.0.1", port)
        await conn.open()
        try:
            t0 = time.perf_counter()
            status, _, answer = await conn.request(http("POST", "/admin/reload", body, key=True))
            t1 = time.perf_counter()
        finally:
            await conn.close()
        outcome = json.loads(answer).get("outcome", answer.decode()[:80])
        print(f"  swap {k + 1:>2} -> {version}: {status} {outcome} in {(t1 - t0) * 1e3:.0f} ms",
              flush=True)
        done.append((t0, t1, status, outcome))
        await asyncio.sleep(every_s)
    return done


async def run(args: argparse.Namespace, sensors: list[str], t_in: int) -> None:
    load = Load(args.port, sensors, t_in, args.think_ms / 1e3)
    await load.prime()
    workers = [asyncio.create_task(load.worker(k)) for k in range(args.connections)]
    every = (args.duration - 2 * args.warm_s) / args.swaps
    swaps = await swapper(args.port, args.swaps, args.warm_s, every)
    load.stop = True
    await asyncio.gather(*workers)
    for failure in load.failures:
        print("  failed:", failure)
    report(load.records, swaps, args)


def report(records: list[tuple[float, float, str, bool]], swaps: list[tuple[float, float, int, str]],
           args: argparse.Namespace) -> None:
    windows = [(t0, t1 + SWAP_TAIL_S) for t0, t1, _, _ in swaps]
    in_swap = [any(a <= r[0] <= b for a, b in windows) for r in records]
    lat = np.array([r[1] for r in records]) * 1e3
    mask = np.array(in_swap)
    failed = sum(not r[3] for r in records)
    bad_swaps = sum(s[2] != 200 or s[3] != "loaded" for s in swaps)
    steady, during = lat[~mask], lat[mask]
    p99_steady, p99_swap = np.percentile(steady, 99), np.percentile(during, 99)
    print(f"\nrequests {len(records)} ({len(steady)} steady, {len(during)} in swap windows), "
          f"failed {failed}; swaps {len(swaps)}, not loaded {bad_swaps}")
    print(f"reload took median {np.median([(b - a) * 1e3 for a, b, _, _ in swaps]):.0f} ms")
    for kind in ("cached", "uncached", "buffered", "ingest"):
        sel = np.array([r[2] == kind for r in records])
        print(f"  {kind:<9} steady p99 {np.percentile(lat[sel & ~mask], 99):7.2f} ms   "
              f"swap p99 {np.percentile(lat[sel & mask], 99):7.2f} ms")
    print(f"all kinds: steady p50 {np.percentile(steady, 50):.2f} ms, p99 {p99_steady:.2f} ms; "
          f"swap-window p50 {np.percentile(during, 50):.2f} ms, p99 {p99_swap:.2f} ms; "
          f"ratio p99 swap/steady {p99_swap / p99_steady:.2f} (target <= 2)")
    print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=Path, default=REPO / "artifacts" / "bench-swap")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--duration", type=float, default=90.0, help="seconds of load in all")
    p.add_argument("--warm-s", type=float, default=10.0, help="steady seconds before the first swap")
    p.add_argument("--swaps", type=int, default=10)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--think-ms", type=float, default=100.0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    sensors = ensure_bundles(args.models)
    manifest = json.loads((args.models / VERSIONS[0] / "manifest.json").read_text())
    prefix = f"bench-swap-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "HIMNET_BUNDLE_DIR": str(args.models / VERSIONS[0]),
           "HIMNET_MODELS_DIR": str(args.models), "HIMNET_API_KEY": API_KEY,
           "HIMNET_PORT": str(args.port), "HIMNET_LOG_LEVEL": "warning",
           "HIMNET_INFERENCE_QUEUE": "64", "HIMNET_THREADS": str(args.threads),
           "HIMNET_REDIS_URL": args.redis_url, "HIMNET_REDIS_PREFIX": prefix,
           "PYTHONPATH": str(REPO)}
    print(f"load average at the start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=REPO)
    try:
        wait_ready(args.port, proc)
        asyncio.run(run(args, sensors, manifest["in_steps"]))
    finally:
        proc.terminate()
        proc.wait(30)
        _drop_keys(args.redis_url, prefix)


def _drop_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


if __name__ == "__main__":
    main()
