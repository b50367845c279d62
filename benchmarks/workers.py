"""Workers per replica: cached and uncached throughput with 1 and 2 worker processes, one run.

Services on the same bundle and Redis: ``--configs`` lists them as WORKERSxTHREADS (default
1x2: one worker, 2 ONNX Runtime threads, the shipped default; 2x1: two workers of one thread
each; 2x2). They run one at a time (only one is up during its phases), in turn over
``--rounds`` rounds so drift hits each alike. Phases, closed-loop for ``--seconds``: uncached
(every request a different ``as_of``, 8 clients) and cached (one window, 8 clients)::

    python benchmarks/workers.py [--configs 1x2 2x1 2x2] [--rounds 2] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import Service, as_of_requests, closed_loop, load_average, print_row  # noqa: E402
from benchmarks.load_service import REPO, ensure_bundle, http  # noqa: E402


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "artifacts" / "bench-metr-la")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    ap.add_argument("--port", type=int, default=8791)
    ap.add_argument("--configs", nargs="+", default=["1x2", "2x1", "2x2"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--slots", type=int, default=600)
    return ap.parse_args()


def _run_config(config: str, args: argparse.Namespace, bundle: Path, sensors: list[str],
                rnd: int) -> dict[str, float]:
    workers, threads = config.split("x")
    svc = Service(bundle, args.port, args.redis_url, {
        "HIMNET_WORKERS": workers, "HIMNET_THREADS": threads, "HIMNET_START_DEADLINE_MS": "0",
        "HIMNET_MAX_IN_FLIGHT": "256"})
    last = int(time.time() // 300) - 1
    slots = list(range(last - args.slots + 13, last + 1))
    try:
        svc.start().ingest(sensors, last - args.slots + 1, last)
        rng = np.random.default_rng(rnd)
        requests = iter(as_of_requests(list(rng.permutation(slots))))
        uncached = asyncio.run(closed_loop(svc.port, requests, args.clients, args.seconds)).row()
        print_row(f"round {rnd} {config} uncached", uncached)
        same = itertools.repeat(http("POST", "/forecast"))
        asyncio.run(closed_loop(svc.port, same, args.clients, 1.0, cache=None))  # fill, warm
        cached = asyncio.run(closed_loop(svc.port, same, args.clients, args.seconds,
                                         cache=b"hit")).row()
        print_row(f"round {rnd} {config} cached", cached)
    finally:
        svc.stop()
    return {"uncached": uncached["throughput"], "cached": cached["throughput"],
            "uncached_p50": uncached["p50_ms"], "cached_p50": cached["p50_ms"]}


def main() -> None:
    args = _parse_args()
    bundle = ensure_bundle(args.bundle)
    sensors = json.loads((bundle / "manifest.json").read_text())["sensor_ids"]
    print(f"bundle {bundle} (N={len(sensors)}), {args.clients} clients; load average before: "
          f"{load_average()}", flush=True)
    results: dict[str, list[dict[str, float]]] = {c: [] for c in args.configs}
    for rnd in range(args.rounds):
        order = args.configs if rnd % 2 == 0 else args.configs[::-1]
        for config in order:
            results[config].append(_run_config(config, args, bundle, sensors, rnd))
    print(f"\nload average after: {load_average()}")
    base = results[args.configs[0]]
    for config, rows in results.items():
        line = []
        for kind in ("uncached", "cached"):
            ratios = [r[kind] / b[kind] for r, b in zip(rows, base)]
            line.append(f"{kind} {statistics.median(r[kind] for r in rows):7.1f} req/s "
                        f"({statistics.median(ratios):.2f}x {args.configs[0]})")
        print(f"  {config}: " + ", ".join(line))


if __name__ == "__main__":
    main()
