"""Acceptance run on real data: HimNet on LOS-LOOP (T-GCN's protocol) vs. baselines and T-GCN.

Protocol: 80 % train / 20 % test by time, the last 10 % of the training rows for validation,
12 -> 12 steps of 5 minutes. HimNet must beat the last-value and historical-average baselines
at steps 3, 6 and 12 on MAE and RMSE, and its MAE and RMSE over steps 1-3 (the first 15 minutes,
errors pooled over the three steps as T-GCN's figures are) must be below T-GCN's published
LOS-LOOP 15-minute figures.

Not a CI test (tens of minutes on a CPU). Run:
    nohup python benchmarks/train_los_loop.py --output runs/los-loop > los-loop.log 2>&1 &
Exit status 0 when every criterion holds, 1 otherwise; ``acceptance.json`` in the run directory.

The figures below were measured before 2026-12-03, when the steps 1-3 RMSE was the mean of the
per-step RMSEs (lower than the pooled one; see docs/performance.md). Measured 2026-11-26 (2-core box): ``--seed 1 --patience 12`` passed every criterion in 44.1 min
(steps 1-3 RMSE 5.1251 vs 5.1264); seed-0 masked-MAE runs missed that one criterion by 0.010-0.021.
Seeds 0-5 with the defaults on an H200 (``--device cuda``, 4.7 min each): seeds 1, 4, 5 pass every
criterion, seeds 0, 2, 3 miss only the RMSE one (steps 1-3 RMSE 5.064-5.158, median 5.125).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.scaling import SCALINGS, TRANSFORMS  # noqa: E402
from training.datasets import load_dataset, los_loop_dir  # noqa: E402
from training.evaluate import format_table  # noqa: E402
from training.averaging import AVERAGES  # noqa: E402
from training.metrics import LOSSES, average_steps  # noqa: E402
from himnet.args import int_list  # noqa: E402
from training.train import train_model  # noqa: E402

TGCN_15MIN = {"rmse": 5.1264, "mae": 3.1802}  # Zhao et al., IEEE T-ITS 2020, LOS-LOOP 15 min
CHECK_STEPS = (3, 6, 12)


def check(report: dict) -> list[tuple[str, bool, str]]:
    """Every acceptance criterion as (name, passed, detail)."""
    out = []
    for step in CHECK_STEPS:
        for metric in ("mae", "rmse"):
            ours = report["model"]["horizon"][step - 1][metric]
            for base in ("last_value", "historical_average"):
                theirs = report[base]["horizon"][step - 1][metric]
                out.append((f"step {step} {metric.upper()} < {base}", ours < theirs, f"{ours:.3f} vs {theirs:.3f}"))
    first = average_steps(report["model"], [1, 2, 3])
    for metric in ("mae", "rmse"):
        out.append((f"steps 1-3 {metric.upper()} < T-GCN 15 min", first[metric] < TGCN_15MIN[metric],
                    f"{first[metric]:.4f} vs {TGCN_15MIN[metric]}"))
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="runs/los-loop")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--embedding-dims", default="8,0,16,16", metavar="TOD,DOW,S,ST",
                   help="day-of-week size 0: one week of data leaves Tuesday/Wednesday (val/test) with "
                        "never-trained day-of-week vectors (val MAE 8.3 with them vs 4.4-4.6 remapped)")
    p.add_argument("--epochs", type=int, default=44)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--lr-milestones", default="28,38")
    p.add_argument("--tf-decay-steps", type=float, default=60,
                   help="teacher-forcing decay τ; the preset's 6000 assumes ~75k batches, this run has ~1k")
    p.add_argument("--max-time", type=float, default=44 * 60,
                   help="seconds for the training loop (evaluation adds ~15 s; the whole run must stay < 45 min)")
    p.add_argument("--threads", type=int, default=1,
                   help="1 by default: on a busy 2-core box two OpenMP threads spin-wait (measured 35 s/step vs 6.6 s)")
    p.add_argument("--loss", default="masked_mae", choices=LOSSES,
                   help="masked_mse trains for RMSE, the figure that T-GCN's comparison turns on; "
                        "mae_mse mixes MAE and MSE")
    p.add_argument("--mse-weight", type=float, help="w in mae_mse = MAE + w * MSE (default: training's)")
    p.add_argument("--average", default="none", choices=AVERAGES,
                   help="weight averaging validated and kept instead of the last weights (ema | swa)")
    p.add_argument("--ema-decay", type=float, help="EMA decay per step (default: training's)")
    p.add_argument("--swa-epochs", type=int, help="SWA: mean of the last K epochs' weights (default: training's)")
    p.add_argument("--swa-start", type=int, help="SWA: first epoch that may enter the mean (default 1)")
    p.add_argument("--scaling", default="global", choices=SCALINGS, help="global (the paper's) or per_sensor")
    p.add_argument("--transform", default="none", choices=TRANSFORMS, help="none or log1p before scaling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (the criteria and the 45-minute budget are CPU's)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--progress", action="store_true")
    return p


def main() -> int:
    args = _parser().parse_args()
    torch.set_num_threads(args.threads)
    if not (los_loop_dir() / "los_speed.csv").is_file():
        print(f"LOS-LOOP not found under {los_loop_dir()}", file=sys.stderr)
        return 2
    start = time.monotonic()
    load1 = os.getloadavg()
    settings = dict(preset="metr-la", split="los-loop", hidden=args.hidden, epochs=args.epochs, loss=args.loss,
                    mse_weight=args.mse_weight, average=args.average, ema_decay=args.ema_decay,
                    swa_epochs=args.swa_epochs, swa_start=args.swa_start,
                    patience=args.patience, embedding_dims=int_list(args.embedding_dims),
                    lr_milestones=int_list(args.lr_milestones),
                    tf_decay_steps=args.tf_decay_steps, max_time=args.max_time, device=args.device, seed=args.seed,
                    scaling=args.scaling, transform=args.transform,
                    threads=args.threads, output=args.output, resume=args.resume, progress=args.progress)
    ckpt = train_model(load_dataset("los-loop"), **settings)
    wall = time.monotonic() - start
    report = ckpt.metrics["test"]
    results = check(report)
    ok = all(r[1] for r in results)
    print(format_table(report))
    for name, passed, detail in results:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}")
    summary = {
        "passed": ok, "wall_seconds": wall, "train_seconds": ckpt.metrics["train_seconds"],
        "epochs": ckpt.metrics["epochs"], "best_epoch": ckpt.metrics["best_epoch"],
        "stopped_because": ckpt.metrics["stopped_because"], "settings": {**settings, "output": str(args.output)},
        "loadavg_start": load1, "loadavg_end": os.getloadavg(), "cpus": os.cpu_count(),
        "checks": [{"name": n, "passed": p_, "detail": d} for n, p_, d in results],
        "tgcn_15min": TGCN_15MIN, "report": report,
    }
    Path(args.output, "acceptance.json").write_text(json.dumps(summary, indent=2))
    print(f"{'ACCEPTED' if ok else 'NOT ACCEPTED'}: wall {wall / 60:.1f} min, {ckpt.metrics['epochs']} epochs "
          f"(best {ckpt.metrics['best_epoch']}, {ckpt.metrics['stopped_because']}); load average "
          f"{load1[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end on {os.cpu_count()} CPUs")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
