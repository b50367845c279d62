"""Large networks: batch-1 forecast latency, bundle size, response size and render time by N.

For each sensor count (default 207, 883 = PEMS07, 2,000) a checkpoint with the PEMS07 preset's
sizes (hidden 64, embeddings 8/8/16/16) and random weights is exported once with
``training.export`` (parity check included) to ``artifacts/bench-n<N>``. Then, in this
process: ONNX Runtime batch-1 latency on ``--threads`` threads (median and minimum of
``--repeats`` calls on the loading thread), the bundle's size per file, and the service's
renderer on a forecast for all sensors × 12 steps (median time of a fresh render, body bytes),
with and without the ``st_embedding`` extra::

    python benchmarks/large_networks.py [--nodes 207 883 2000] [--threads 2] [--repeats 30]
                                        [--contraction measure|generate|pool]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def ensure_bundle(n: int, contraction: str = "measure") -> Path:
    """Export a random-weight model with the PEMS07 preset's sizes and ``n`` sensors, once."""
    path = REPO / "artifacts" / f"bench-n{n}"
    if (path / "manifest.json").is_file():
        return path
    import torch

    from model import HimNet, get_preset
    from training.checkpoint import Checkpoint
    from training.export import export_bundle

    torch.manual_seed(0)
    cfg = replace(get_preset("pems07").model, num_nodes=n)
    model = HimNet(cfg)
    ckpt = Checkpoint(config=cfg, state_dict=model.state_dict(), scaler_mean=300.0,
                      scaler_std=150.0, sensor_ids=[f"{400000 + i}" for i in range(n)],
                      interval_minutes=5.0, dataset=f"synthetic {n} sensors (random weights)",
                      timezone="America/Los_Angeles")
    started = time.perf_counter()
    export_bundle(ckpt, path, contraction=contraction)
    print(f"  exported N={n} in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def model_latency(bundle: Path, threads: int, repeats: int) -> tuple[float, float]:
    """(median, minimum) batch-1 ONNX Runtime latency in ms, called from the loading thread."""
    from service.runtime import load_runtime

    rt = load_runtime(bundle, threads=threads)
    readings, ti, tt = rt.example_inputs(1)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        x = (readings + rng.normal(0, 5, readings.shape)).astype(np.float32)
        t0 = time.perf_counter()
        rt.predict(x, ti, tt)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, min(times) * 1e3


def render_cost(bundle: Path, with_st: bool, repeats: int = 20) -> tuple[float, int]:
    """(median ms of a fresh render of all sensors × every step, body bytes)."""
    from model.bundle import read_manifest
    from service.cache import ModelOutput
    from service.forecasting import Forecast
    from service.rendering import ForecastRenderer
    from service.timeslots import SlotClock

    m = read_manifest(bundle)
    clock = SlotClock(m.interval_minutes, m.steps_per_day, m.timezone)
    renderer = ForecastRenderer(clock, sensor_ids=m.sensor_ids,
                                missing_policy="missing_value", decimals=4)
    rng = np.random.default_rng(1)
    window = rng.uniform(5, 70, (m.in_steps, m.num_nodes)).astype(np.float32)
    window[:, :3] = np.nan  # a few sensors without readings
    output = ModelOutput(rng.uniform(5, 70, (m.out_steps, m.num_nodes)).astype(np.float32),
                         rng.normal(0, 1, (m.num_nodes, m.st_embedding_dim)).astype(np.float32))
    steps = list(range(1, m.out_steps + 1))
    times, size = [], 0
    for i in range(repeats):
        slot = int(time.time() // 300)
        fc = Forecast(m.model_version, slot, window, output, i.to_bytes(16, "big"), "buffer",
                      False, "as_of", slot)  # a new digest each time: no memoised body
        t0 = time.perf_counter()
        body = renderer.render(fc, None, steps, with_st)
        times.append(time.perf_counter() - t0)
        size = len(body)
    return statistics.median(times) * 1e3, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[207, 883, 2000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--contraction", default="measure",
                    help="decoder order for new exports: measure (time both), generate, pool")
    args = ap.parse_args()
    print(f"cores {os.cpu_count()}, threads {args.threads}, load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for n in args.nodes:
        bundle = ensure_bundle(n, args.contraction)
        files = {p.name: p.stat().st_size for p in sorted(bundle.iterdir()) if p.is_file()}
        median, best = model_latency(bundle, args.threads, args.repeats)
        render, size = render_cost(bundle, with_st=False)
        render_st, size_st = render_cost(bundle, with_st=True)
        contraction = json.loads((bundle / "manifest.json").read_text())["config"].get(
            "contraction", "?")
        print(f"  N={n:>5}: model batch 1 median {median:7.2f} ms (min {best:.2f}), bundle "
              f"{sum(files.values()) / 2**20:6.1f} MiB (model.onnx {files.get('model.onnx', 0) / 2**20:.1f}"
              f" MiB, contraction {contraction}), response {size / 1024:7.1f} KiB rendered in "
              f"{render:6.2f} ms; with st_embedding {size_st / 1024:7.1f} KiB in {render_st:6.2f} ms",
              flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
