"""The service's overhead over the bare model, paired per request through ``Server-Timing``.

One ``python -m service`` (shipped defaults, Redis buffer, METR-LA preset with random weights)
driven over loopback by one connection. Every answer carries ``Server-Timing`` with the model
run behind it (``model``: that request's own runtime call, timed on the inference thread) and
``app`` (the process's time up to the answer), so each request is paired with *its own* model
run: the model's run-to-run noise, which dwarfs a millisecond on a shared box, cancels.

Printed, as medians over ``--requests``:
- uncached forecast from the buffer (a new ``as_of`` each time): client latency − model
  (the overhead a client sees: HTTP over loopback, uvicorn, the app, Redis, the thread hop)
  and app − model (the same without the client and the socket);
- cached forecast: client latency and app time (no model run);
- ``GET /livez``: the floor of this HTTP client + uvicorn + FastAPI with no work at all.

    python benchmarks/service_overhead.py [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import Service, as_of_requests, load_average  # noqa: E402
from benchmarks.load_service import REPO, Conn, ensure_bundle, http  # noqa: E402

TIMING = re.compile(rb"(\w+);dur=([\d.]+)")


async def _timed(port: int, requests: list[bytes], cache: bytes | None) -> np.ndarray:
    """Per request: (client latency, app, model) in ms; model 0 when there was no run."""
    conn = Conn("127.0.0.1", port)
    await conn.open()
    rows = []
    try:
        for raw in requests:
            t0 = time.perf_counter()
            status, headers, _ = await conn.request(raw)
            client_ms = (time.perf_counter() - t0) * 1e3
            if status != 200 or (cache is not None and headers.get(b"x-cache") != cache):
                raise RuntimeError(f"unexpected answer {status} {headers.get(b'x-cache')!r}")
            timing = {k.decode(): float(v) for k, v in TIMING.findall(headers[b"server-timing"])}
            rows.append((client_ms, timing["app"], timing.get("model", 0.0)))
    finally:
        await conn.close()
    return np.array(rows)


def _report(name: str, rows: np.ndarray) -> dict[str, float]:
    client, app, model = rows.T
    out = {"client_p50": float(np.median(client)), "app_p50": float(np.median(app)),
           "model_p50": float(np.median(model)),
           "client_over_model_p50": float(np.median(client - model)),
           "app_over_model_p50": float(np.median(app - model))}
    print(f"  {name:<28} n={len(rows):>4}  client p50 {out['client_p50']:8.3f} ms  app p50 "
          f"{out['app_p50']:8.3f} ms  model p50 {out['model_p50']:8.3f} ms  | paired: client - "
          f"model {out['client_over_model_p50']:.3f} ms, app - model "
          f"{out['app_over_model_p50']:.3f} ms", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "artifacts" / "bench-metr-la")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    ap.add_argument("--port", type=int, default=8791)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the service")
    args = ap.parse_args()
    bundle = ensure_bundle(args.bundle)
    sensors = json.loads((bundle / "manifest.json").read_text())["sensor_ids"]
    env = dict(item.split("=", 1) for item in args.env)
    print(f"bundle {bundle} (N={len(sensors)}), env {env or 'defaults'}; load average before: "
          f"{load_average()}", flush=True)
    last = int(time.time() // 300) - 1
    first = last - args.requests - 12
    svc = Service(bundle, args.port, args.redis_url, env)
    try:
        svc.start().ingest(sensors, first, last)
        warm = as_of_requests(list(range(first + 11, first + 31)))
        asyncio.run(_timed(args.port, warm, None))  # warm-up: first calls, connections
        slots = list(range(first + 31, last + 1))[: args.requests]
        rows = {"uncached (buffer)": asyncio.run(_timed(args.port, as_of_requests(slots), b"miss")),
                "cached (buffer)": asyncio.run(_timed(args.port, as_of_requests(slots[-1:])
                                                      * args.requests, b"hit")),
                "GET /livez": asyncio.run(_timed(args.port, [http("GET", "/livez")]
                                                 * args.requests, None))}
    finally:
        svc.stop()
    print(f"load average after: {load_average()}")
    results = {name: _report(name, r) for name, r in rows.items()}
    u, c = results["uncached (buffer)"], results["cached (buffer)"]
    print(f"  uncached: client - model {u['client_over_model_p50']:.3f} ms <= 1.0 ms: "
          f"{'yes' if u['client_over_model_p50'] <= 1.0 else 'NO'}; "
          f"app - model {u['app_over_model_p50']:.3f} ms")
    print(f"  cached: client {c['client_p50']:.3f} ms, app {c['app_p50']:.3f} ms <= 0.3 ms: "
          f"{'yes' if c['app_p50'] <= 0.3 else 'NO'}")


if __name__ == "__main__":
    main()
