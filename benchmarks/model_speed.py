"""Optimised HimNet against the naive per-step form (studies/naive_himnet.py), one run.

Prints eval latency at batch 1 and 16, one training step (forward, masked MAE, backward, Adam)
at batch 16, and the training step's peak memory, each measured in a separate process.
Medians over repeats; 2 threads; N = 207 (METR-LA preset). A script, not a test:

    python benchmarks/model_speed.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model import get_preset  # noqa: E402
from studies import speed  # noqa: E402  (measurement code shared with `himnet efficiency`)

CFG = get_preset("metr-la").model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--naive-repeats", type=int, default=3, help="the naive form is slow; fewer repeats")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(2)
    fast, naive = speed.build("fast", CFG), speed.build("naive", CFG)
    rows = []
    for name, fn in [
        ("eval latency, batch 1 (ms)", lambda m, r: 1e3 * speed.time_eval(m, CFG, 1, r)),
        (f"eval latency, batch {args.batch} (ms)", lambda m, r: 1e3 * speed.time_eval(m, CFG, args.batch, r)),
        (f"training step, batch {args.batch} (ms)", lambda m, r: 1e3 * speed.time_train(m, CFG, args.batch, r)),
    ]:
        f = fn(fast, args.repeats)
        n = fn(naive, args.naive_repeats)
        rows.append((name, n, f, n / f))
        print(f"  {name}: naive {n:.1f}, optimised {f:.1f}", flush=True)
    n_mem, f_mem = speed.peak_memory("naive", CFG, args.batch), speed.peak_memory("fast", CFG, args.batch)
    rows.append((f"training step peak memory, batch {args.batch} (MiB)", n_mem, f_mem, n_mem / f_mem))
    print(f"\nHimNet N={CFG.num_nodes}, torch {torch.__version__}, {torch.get_num_threads()} threads, medians")
    print(f"{'measure':<44}{'naive':>12}{'optimised':>12}{'ratio':>9}")
    for name, n, f, r in rows:
        print(f"{name:<44}{n:>12.1f}{f:>12.1f}{r:>8.2f}x")


if __name__ == "__main__":
    main()
