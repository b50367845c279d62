"""Micro-batching: throughput of distinct-window forecasts, batched against unbatched, one run.

Two services run side by side on the same bundle (METR-LA preset, random weights, Redis
buffer): one with ``HIMNET_MAX_BATCH=1`` (every forecast runs alone), one with the batching
settings under test. Each phase is closed-loop for ``--seconds`` at 8 and 32 clients, every
request a different ``as_of`` (a replay catching up), the cache cleared before each phase; the
two services take turns phase by phase over ``--rounds`` rounds so load drift hits both alike.
Then a single client alternates between the two services (paired): what batching costs a
request that is alone. No start deadline here (nothing is shed)::

    python benchmarks/batching.py [--max-batch 8] [--wait-ms 0] [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import Service, as_of_requests, closed_loop, load_average, print_row  # noqa: E402
from benchmarks.load_service import REPO, Conn, ensure_bundle  # noqa: E402


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "artifacts" / "bench-metr-la")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    ap.add_argument("--port", type=int, default=8771)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--wait-ms", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--slots", type=int, default=1500, help="slots ingested (distinct windows)")
    ap.add_argument("--paired", type=int, default=150, help="single-client paired requests")
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    return ap.parse_args()


async def _paired(ports: tuple[int, int], slots: list[int]) -> list[tuple[float, float]]:
    """One request to each service in turn (order alternating), each alone on the box."""
    conns = [Conn("127.0.0.1", p) for p in ports]
    for c in conns:
        await c.open()
    pairs = []
    try:
        for i, slot in enumerate(slots):
            took = [0.0, 0.0]
            for k in ((0, 1) if i % 2 == 0 else (1, 0)):
                raw = as_of_requests([slot])[0]
                t0 = time.perf_counter()
                status, headers, _ = await conns[k].request(raw)
                took[k] = time.perf_counter() - t0
                assert status == 200 and headers.get(b"x-cache") == b"miss", status
                await asyncio.sleep(0.02)
            pairs.append((took[0], took[1]))
    finally:
        for c in conns:
            await c.close()
    return pairs


def main() -> None:
    args = _parse_args()
    bundle = ensure_bundle(args.bundle)
    sensors = json.loads((bundle / "manifest.json").read_text())["sensor_ids"]
    common = {"HIMNET_THREADS": str(args.threads), "HIMNET_START_DEADLINE_MS": "0",
              "HIMNET_MAX_IN_FLIGHT": "256"}
    services = {
        "unbatched": Service(bundle, args.port, args.redis_url, {**common, "HIMNET_MAX_BATCH": "1"}),
        "batched": Service(bundle, args.port + 1, args.redis_url, {
            **common, "HIMNET_MAX_BATCH": str(args.max_batch),
            "HIMNET_BATCH_WAIT_MS": str(args.wait_ms)}),
    }
    print(f"bundle {bundle} (N={len(sensors)}), threads {args.threads}, batched: max batch "
          f"{args.max_batch}, wait {args.wait_ms} ms; load average before: {load_average()}",
          flush=True)
    last = int(time.time() // 300) - 1
    slots = list(range(last - args.slots + 13, last + 1))
    results: dict[tuple[str, int], list[float]] = {}
    try:
        for svc in services.values():
            svc.start().ingest(sensors, last - args.slots + 1, last)
        for rnd in range(args.rounds):
            for clients in args.clients:
                order = list(services.items())[:: 1 if rnd % 2 == 0 else -1]
                for name, svc in order:
                    svc.clear_cache()
                    rng = np.random.default_rng(rnd * 100 + clients)
                    requests = iter(as_of_requests(list(rng.permutation(slots))))
                    res = asyncio.run(closed_loop(svc.port, requests, clients, args.seconds))
                    row = res.row()
                    print_row(f"round {rnd} {name} {clients} clients", row)
                    results.setdefault((name, clients), []).append(row["throughput"])
        for svc in services.values():
            svc.clear_cache()
        pairs = asyncio.run(_paired((args.port, args.port + 1), slots[-args.paired:]))
    finally:
        for svc in services.values():
            svc.stop()
    _report(results, pairs, args)


def _report(results: dict[tuple[str, int], list[float]], pairs: list[tuple[float, float]],
            args: argparse.Namespace) -> None:
    print(f"\nload average after: {load_average()}")
    for clients in args.clients:
        un = results[("unbatched", clients)]
        ba = results[("batched", clients)]
        ratios = [b / u for b, u in zip(ba, un)]
        print(f"  {clients:>3} clients: unbatched {statistics.median(un):6.1f} req/s, batched "
              f"{statistics.median(ba):6.1f} req/s, ratio per round "
              f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}x)")
    un = np.array([p[0] for p in pairs]) * 1e3
    ba = np.array([p[1] for p in pairs]) * 1e3
    print(f"  1 client, paired (n={len(pairs)}): unbatched p50 {np.median(un):.2f} ms, batched "
          f"p50 {np.median(ba):.2f} ms, median paired extra {np.median(ba - un):+.2f} ms")


if __name__ == "__main__":
    main()
