"""Speed and memory measurement of HimNet and its naive per-step form, shared by
``himnet efficiency`` and ``benchmarks/model_speed.py``.

The naive form (``studies/naive_himnet.py``: parameters regenerated at every recurrent step) is
part of this package, so ``himnet efficiency`` works from an installed package too.

Timings are medians over repeats after one warm-up call. Peak memory of one training step is
measured in a fresh process (CPU: rise of the resident-set high-water mark ``VmHWM`` above what
model, optimiser and batch already hold; CUDA: ``torch.cuda.max_memory_allocated`` above the
memory allocated before the step).
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
from torch import nn

from model import HimNet, HimNetConfig
from studies.naive_himnet import NaiveHimNet

# the directory holding the ``studies`` package (a source checkout or site-packages): the
# peak-memory child runs ``python -m studies.speed`` from there
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def build(kind: str, config: HimNetConfig, seed: int = 0) -> nn.Module:
    """``fast`` (model.HimNet) or ``naive`` with the very same weights (same seed)."""
    torch.manual_seed(seed)
    fast = HimNet(config)
    if kind == "fast":
        return fast
    naive = NaiveHimNet(config)
    naive.load_state_dict(fast.state_dict())
    return naive


def batch(config: HimNetConfig, b: int, device: torch.device | str = "cpu"
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A synthetic batch shaped like training data: x (scaled value, tod, dow), y_cov, raw labels."""
    c = config
    g = torch.Generator().manual_seed(b)
    x = torch.randn(b, c.in_steps, c.num_nodes, 3, generator=g)
    x[..., 1] = torch.arange(c.in_steps).view(1, -1, 1) / c.steps_per_day
    x[..., 2] = 2.0
    y_cov = torch.rand(b, c.out_steps, c.num_nodes, 2, generator=g)
    labels = torch.rand(b, c.out_steps, c.num_nodes, 1, generator=g) * 60
    return x.to(device), y_cov.to(device), labels.to(device)


def masked_mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mask = (target != 0).float()
    mask = mask / mask.mean()
    return (torch.abs(pred - target) * mask).mean()


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_eval(model: nn.Module, config: HimNetConfig, b: int, repeats: int,
              device: torch.device | str = "cpu") -> float:
    """Median seconds of one no-grad forward pass at batch ``b``."""
    x, y_cov, _ = batch(config, b, device)
    model.to(device).eval()
    times = []
    with torch.no_grad():
        model(x, y_cov)  # warm-up (fills the eval cache of the optimised model)
        _sync(device)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x, y_cov)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, config: HimNetConfig, b: int, seen: int,
               device: torch.device | str = "cpu") -> None:
    """Forward with teacher forcing, masked MAE on raw units, backward, clip, Adam step."""
    x, y_cov, labels = batch(config, b, device)
    model.train()
    opt.zero_grad(set_to_none=True)
    out = model(x, y_cov, labels / 60, batches_seen=seen)
    loss = masked_mae(out * 60, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()


def time_train(model: nn.Module, config: HimNetConfig, b: int, repeats: int,
               device: torch.device | str = "cpu") -> float:
    """Median seconds of one training step at batch ``b`` (after one warm-up step)."""
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-3)
    train_step(model, opt, config, b, 0, device)
    _sync(device)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        train_step(model, opt, config, b, i + 1, device)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rss_kib(field: str) -> int:
    """Resident set size fields of /proc/self/status (Linux), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_child(kind: str, config: HimNetConfig, b: int, threads: int, device: str) -> float:
    """In this (fresh) process: MiB one training step adds on top of model, optimiser and batch."""
    torch.set_num_threads(threads)
    model = build(kind, config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-3)
    batch(config, b, device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        train_step(model, opt, config, b, 0, device)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    base = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    train_step(model, opt, config, b, 0, device)
    return (rss_kib("VmHWM") - base) / 1024


def peak_memory(kind: str, config: HimNetConfig, b: int, threads: int = 2, device: str = "cpu") -> float:
    """:func:`peak_memory_child` in a separate Python process, so earlier allocations don't count."""
    cmd = [sys.executable, "-m", "studies.speed", "--kind", kind, "--config", json.dumps(config.to_dict()),
           "--batch", str(b), "--threads", str(threads), "--device", device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=str(PACKAGE_ROOT)).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mib"])


def main(argv: list[str] | None = None) -> None:
    """Child entry point of :func:`peak_memory`."""
    ap = argparse.ArgumentParser(description="peak memory of one training step (child process)")
    ap.add_argument("--kind", choices=["fast", "naive"], required=True)
    ap.add_argument("--config", required=True, help="HimNetConfig as JSON")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    config = HimNetConfig.from_dict(json.loads(args.config))
    print(json.dumps({"peak_mib": peak_memory_child(args.kind, config, args.batch, args.threads, args.device)}))


if __name__ == "__main__":
    main()
