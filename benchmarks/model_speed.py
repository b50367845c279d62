"""Optimised HimNet against the naive per-step form (tests/model/naive_himnet.py), one run.

Prints eval latency at batch 1 and 16, one training step (forward, masked MAE, backward, Adam)
at batch 16, and the training step's peak memory, each measured in a separate process.
Medians over repeats; 2 threads; N = 207 (METR-LA preset). A script, not a test:

    python benchmarks/model_speed.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model import HimNet, get_preset  # noqa: E402
from tests.model.naive_himnet import NaiveHimNet  # noqa: E402

CFG = get_preset("metr-la").model


def build(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    fast = HimNet(CFG)
    if kind == "fast":
        return fast
    naive = NaiveHimNet(CFG)
    naive.load_state_dict(fast.state_dict())
    return naive


def batch(b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(b)
    x = torch.randn(b, CFG.in_steps, CFG.num_nodes, 3, generator=g)
    x[..., 1] = torch.arange(CFG.in_steps).view(1, -1, 1) / CFG.steps_per_day
    x[..., 2] = 2.0
    y_cov = torch.rand(b, CFG.out_steps, CFG.num_nodes, 2, generator=g)
    labels = torch.rand(b, CFG.out_steps, CFG.num_nodes, 1, generator=g) * 60
    return x, y_cov, labels


def masked_mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mask = (target != 0).float()
    mask = mask / mask.mean()
    return (torch.abs(pred - target) * mask).mean()


def time_eval(model: torch.nn.Module, b: int, repeats: int) -> float:
    x, y_cov, _ = batch(b)
    model.eval()
    times = []
    with torch.no_grad():
        model(x, y_cov)  # warm-up (fills the eval cache of the optimised model)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x, y_cov)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, b: int, seen: int) -> None:
    x, y_cov, labels = batch(b)
    model.train()
    opt.zero_grad(set_to_none=True)
    out = model(x, y_cov, labels / 60, batches_seen=seen)
    loss = masked_mae(out * 60, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()


def time_train(model: torch.nn.Module, b: int, repeats: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-3)
    train_step(model, opt, b, 0)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        train_step(model, opt, b, i + 1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory_child(kind: str, b: int) -> None:
    """Run in a fresh process: how far one training step raises resident memory (MiB) above
    what the model, optimiser and batch already hold."""
    torch.set_num_threads(2)
    model = build(kind)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-3)
    batch(b)
    base = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    train_step(model, opt, b, 0)
    print(json.dumps({"peak_mib": (rss_kib("VmHWM") - base) / 1024}))


def rss_kib(field: str) -> int:
    """Resident set size fields of /proc/self/status (Linux), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(kind: str, b: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--peak-child", kind, "--batch", str(b)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--naive-repeats", type=int, default=3, help="the naive form is slow; fewer repeats")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--peak-child", choices=["fast", "naive"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_child:
        peak_memory_child(args.peak_child, args.batch)
        return
    torch.set_num_threads(2)
    fast, naive = build("fast"), build("naive")
    rows = []
    for name, fn in [
        ("eval latency, batch 1 (ms)", lambda m, r: 1e3 * time_eval(m, 1, r)),
        (f"eval latency, batch {args.batch} (ms)", lambda m, r: 1e3 * time_eval(m, args.batch, r)),
        (f"training step, batch {args.batch} (ms)", lambda m, r: 1e3 * time_train(m, args.batch, r)),
    ]:
        f = fn(fast, args.repeats)
        n = fn(naive, args.naive_repeats)
        rows.append((name, n, f, n / f))
        print(f"  {name}: naive {n:.1f}, optimised {f:.1f}", flush=True)
    n_mem, f_mem = peak_memory("naive", args.batch), peak_memory("fast", args.batch)
    rows.append((f"training step peak memory, batch {args.batch} (MiB)", n_mem, f_mem, n_mem / f_mem))
    print(f"\nHimNet N={CFG.num_nodes}, torch {torch.__version__}, {torch.get_num_threads()} threads, medians")
    print(f"{'measure':<44}{'naive':>12}{'optimised':>12}{'ratio':>9}")
    for name, n, f, r in rows:
        print(f"{name:<44}{n:>12.1f}{f:>12.1f}{r:>8.2f}x")


if __name__ == "__main__":
    main()
