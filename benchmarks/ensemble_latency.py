"""Latency cost of seed ensembles (a script, not a test): single model vs K = 3 and K = 5.

METR-LA preset (N = 207), random weights (seeds 0..4; latency does not depend on the values),
exported once to ``artifacts/bench-ensemble`` — the single model with ``training.export``, the
ensembles of its first K seeds with ``training.ensemble_export`` (parity checked as always) —
all with the same decoder contraction (``--contraction``, default "generate", what the export
chose for a single METR-LA model at batch 1), so only K differs.

1. Bare model: each bundle's ONNX Runtime session through ``service.runtime`` (2 threads, the
   service's call), batch 1 and 16, in rotating blocks (``benchmarks/export_latency.py``'s
   ``interleaved_blocks``); median per call and the ratio to the single model of the same run.
2. Service: ``python -m service`` (one worker, Redis) with the single bundle, then with K = 3,
   then single again; readings ingested, then uncached ``POST /forecast`` (a new ``as_of``
   window each, one client): p50 / p99 per run, beside each other::

    python benchmarks/ensemble_latency.py [--rounds 30] [--rounds16 6] [--requests 80]
        [--redis-url redis://127.0.0.1:6379/9] [--skip-service]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.export_latency import interleaved_blocks  # noqa: E402
from benchmarks.harness import Service, as_of_requests, closed_loop, load_average  # noqa: E402
from service.runtime import load_runtime  # noqa: E402

MEMBERS = (1, 3, 5)
THREADS = 2


def checkpoints(count: int) -> list:
    """``count`` random METR-LA-preset checkpoints of one data set (seeds 0..count-1)."""
    import torch

    from model import HimNet, get_preset
    from training.checkpoint import Checkpoint

    cfg = get_preset("metr-la").model
    out = []
    for seed in range(count):
        torch.manual_seed(seed)
        out.append(Checkpoint(config=cfg, state_dict=HimNet(cfg).state_dict(), scaler_mean=54.0,
                              scaler_std=19.0, sensor_ids=[str(760000 + i) for i in range(cfg.num_nodes)],
                              interval_minutes=5.0, dataset="metr-la (random weights, benchmark)",
                              timezone="America/Los_Angeles", train_settings={"seed": seed}))
    return out


def ensure_bundles(root: Path, contraction: str) -> dict[int, Path]:
    """One bundle per K in ``MEMBERS`` under ``root/<contraction>`` (exported once)."""
    paths = {k: root / contraction / ("single" if k == 1 else f"k{k}") for k in MEMBERS}
    if all((p / "manifest.json").is_file() for p in paths.values()):
        return paths
    from training.ensemble_export import export_ensemble
    from training.export import export_bundle

    ckpts = checkpoints(max(MEMBERS))
    for k, path in paths.items():
        if (path / "manifest.json").is_file():
            continue
        t0 = time.perf_counter()
        if k == 1:
            export_bundle(ckpts[0], path, contraction=contraction, intervals=False, overwrite=True)
        else:
            export_ensemble(ckpts[:k], path, contraction=contraction, overwrite=True)
        size = (path / "model.onnx").stat().st_size / 2**20
        print(f"exported {path.name}: {time.perf_counter() - t0:.1f} s, model.onnx {size:.1f} MiB", flush=True)
    return paths


def bare_latency(paths: dict[int, Path], rounds: int, rounds16: int) -> dict[int, dict[int, float]]:
    """Median ms per call, per K and batch, all sessions timed in the same rotating blocks."""
    runtimes = {k: load_runtime(p, threads=THREADS) for k, p in paths.items()}
    result: dict[int, dict[int, float]] = {k: {} for k in paths}
    for batch, n in ((1, rounds), (16, rounds16)):
        calls = {k: (lambda rt=rt, raw=rt.example_inputs(batch): rt.predict(*raw)) for k, rt in runtimes.items()}
        times = interleaved_blocks(calls, n)
        for k, ts in times.items():
            result[k][batch] = statistics.median(ts)
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_latency(bundle: Path, redis_url: str, requests: int) -> dict[str, float]:
    """Uncached forecasts (one client, a new window each) against a fresh service process."""
    from model.bundle import read_manifest

    manifest = read_manifest(bundle)
    last = int(time.time() // 300) - 1
    first = last - requests - manifest.in_steps - 5
    svc = Service(bundle, _free_port(), redis_url, env={"HIMNET_THREADS": str(THREADS)}).start()
    try:
        svc.ingest(manifest.sensor_ids, first, last)
        slots = list(range(last - requests + 1, last + 1))
        asyncio.run(closed_loop(svc.port, iter(as_of_requests(slots[:5])), 1, 60))  # warm-up
        result = asyncio.run(closed_loop(svc.port, iter(as_of_requests(slots[5:])), 1, 600))
    finally:
        svc.stop()
    return result.row()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30, help="timed calls per bundle at batch 1")
    ap.add_argument("--rounds16", type=int, default=6, help="timed calls per bundle at batch 16")
    ap.add_argument("--requests", type=int, default=80, help="uncached forecasts per service run")
    ap.add_argument("--contraction", choices=("generate", "pool"), default="generate")
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9"))
    ap.add_argument("--skip-service", action="store_true", help="bare model only")
    ap.add_argument("--artifacts", type=Path, default=REPO / "artifacts" / "bench-ensemble")
    args = ap.parse_args()

    paths = ensure_bundles(args.artifacts, args.contraction)
    print(f"load average before: {load_average()}", flush=True)
    bare = bare_latency(paths, args.rounds, args.rounds16)
    print(f"bare model, ONNX Runtime {THREADS} threads, contraction {args.contraction}, median ms per call:")
    for k, row in bare.items():
        print(f"  K={k}:  batch 1 {row[1]:8.2f} ms ({row[1] / bare[1][1]:4.2f}x)   "
              f"batch 16 {row[16]:8.1f} ms ({row[16] / bare[1][16]:4.2f}x)", flush=True)
    if not args.skip_service:
        print("service, uncached POST /forecast, one client (p50 / p99):")
        for name, k in (("single", 1), ("K=3", 3), ("single again", 1)):
            row = service_latency(paths[k], args.redis_url, args.requests)
            print(f"  {name:<13} n={row['answered']:>4}  p50 {row['p50_ms']:8.2f} ms  "
                  f"p99 {row['p99_ms']:8.2f} ms", flush=True)
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
