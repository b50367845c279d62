"""Latency under overload: 1, 8, 64 and 200 concurrent clients of uncached forecasts.

One service with the shipped pressure settings (micro-batching, start deadline, HTTP in-flight
bound; override with ``--env NAME=VALUE``), Redis buffer, METR-LA preset with random weights.
Each phase is closed-loop for ``--seconds``; every request a different ``as_of``; a client
whose request was shed pauses ``--shed-pause-ms`` before its next one. Printed per phase: p50
and p99 of the answered requests, the share shed and the slowest shed answer; then the targets
(at 200 clients: answered p99 < 10x the single-client p50, every shed answer within 50 ms).
``--compare`` also runs the last phase against a service without the bounds (the old
behaviour: deadline off, no in-flight bound), in the same run::

    python benchmarks/overload.py [--clients 1 8 64 200] [--seconds 10] [--compare]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import Service, as_of_requests, closed_loop, load_average, print_row  # noqa: E402
from benchmarks.load_service import REPO, ensure_bundle  # noqa: E402


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "artifacts" / "bench-metr-la")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    ap.add_argument("--port", type=int, default=8781)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64, 200])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--slots", type=int, default=3000, help="slots ingested (distinct windows)")
    ap.add_argument("--shed-pause-ms", type=float, default=100.0)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the service")
    ap.add_argument("--compare", action="store_true", help="last phase without the bounds too")
    return ap.parse_args()


def _phases(svc: Service, slots: list[int], clients: list[int], args: argparse.Namespace,
            label: str) -> dict[int, dict[str, float]]:
    rows = {}
    for n in clients:
        svc.clear_cache()
        rng = np.random.default_rng(n)
        requests = iter(as_of_requests(list(rng.permutation(slots))))
        res = asyncio.run(closed_loop(svc.port, requests, n, args.seconds,
                                      args.shed_pause_ms / 1e3))
        rows[n] = res.row()
        print_row(f"{label} {n} clients (load {load_average().split()[0]})", rows[n])
    return rows


def main() -> None:
    args = _parse_args()
    bundle = ensure_bundle(args.bundle)
    sensors = json.loads((bundle / "manifest.json").read_text())["sensor_ids"]
    env = dict(item.split("=", 1) for item in args.env)
    print(f"bundle {bundle} (N={len(sensors)}), service env {env or 'defaults'}; "
          f"load average before: {load_average()}", flush=True)
    last = int(time.time() // 300) - 1
    slots = list(range(last - args.slots + 13, last + 1))
    bounded = Service(bundle, args.port, args.redis_url, env)
    services = [bounded]
    try:
        bounded.start().ingest(sensors, last - args.slots + 1, last)
        rows = _phases(bounded, slots, args.clients, args, "bounded")
        old = None
        if args.compare:
            unbounded = Service(bundle, args.port + 1, args.redis_url, {
                **env, "HIMNET_START_DEADLINE_MS": "0", "HIMNET_MAX_IN_FLIGHT": "100000",
                "HIMNET_INFERENCE_QUEUE": "100000"})
            services.append(unbounded)
            unbounded.start().ingest(sensors, last - args.slots + 1, last)
            old = _phases(unbounded, slots, args.clients[-1:], args, "unbounded")
    finally:
        for svc in services:
            svc.stop()
    print(f"\nload average after: {load_average()}")
    _targets(rows, args.clients)


def _targets(rows: dict[int, dict[str, float]], clients: list[int]) -> None:
    single, most = rows[clients[0]], rows[clients[-1]]
    bound = 10 * single["p50_ms"]
    print(f"  {clients[-1]} clients: answered p99 {most['p99_ms']:.1f} ms < 10x single-client "
          f"p50 ({bound:.1f} ms): {'yes' if most['p99_ms'] < bound else 'NO'}")
    shed_max = most["shed_max_ms"]
    print(f"  {clients[-1]} clients: slowest shed answer {shed_max:.1f} ms <= 50 ms: "
          f"{'yes' if not shed_max > 50 else 'NO'} ({100 * most['shed_share']:.1f} % shed; in the service "
          f"(Server-Timing app) at most {most['shed_server_max_ms']:.1f} ms; the rest is spent outside the "
          "ASGI app: sockets, HTTP parsing, event-loop scheduling and the load generator)")
    print(f"  {clients[-1]} clients: slowest shed by kind: in flight {most['shed_in_flight_max_ms']:.1f} ms, "
          f"start deadline {most['shed_start_deadline_max_ms']:.1f} ms, queue full {most['shed_queue_full_max_ms']:.1f} ms")


if __name__ == "__main__":
    main()
