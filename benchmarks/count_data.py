"""Acceptance run on count data: HimNet with zeros COUNTED (missing rule ``nan``) against the
last-value and historical-average baselines, beside the same run with zeros MASKED (``zero``).

Data: the seeded synthetic count set (``--data synthetic --data-option kind=counts``): many real
zeros (nights, low-demand sensors), daily and weekly cycles, a road-like graph along which the
demand travels, negative-binomial counts. Criterion: with every target counted, HimNet beats both
baselines on MAE and RMSE at steps 1, 6 and 12. The zero-masked run is reported twice: under its
own rule (zeros left out of its scores) and with every target counted (its inputs as it saw them,
the targets of the ``nan`` run), which shows what masking real zeros costs.

Not a CI test (minutes on a CPU). Run:
    python benchmarks/count_data.py --output runs/count-data
Exit status 0 when every criterion holds, 1 otherwise; ``acceptance.json`` in the run directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.scaling import SCALINGS, TRANSFORMS  # noqa: E402
from training.datasets import SensorData, load_dataset  # noqa: E402
from training.averaging import AVERAGES  # noqa: E402
from training.evaluate import evaluate_model  # noqa: E402
from training.metrics import LOSSES  # noqa: E402
from training.train import train_model  # noqa: E402
from training.windows import PreparedData, WindowDataset, model_inputs, prepare  # noqa: E402

CHECK_STEPS = (1, 6, 12)
BASELINES = ("last_value", "historical_average")


def count_data(args: argparse.Namespace, missing: str) -> SensorData:
    return load_dataset("synthetic", kind="counts", num_sensors=args.num_sensors, days=args.days,
                        seed=args.data_seed, missing=missing)


def counted_report(masked_ckpt, counted: SensorData, masked: SensorData, split: str) -> dict:
    """The zero-masked model scored with every target counted: its own inputs (gaps and zeros as
    0, its scaler), the targets and rule of the counted data (only the dropped readings left out)."""
    scaler = masked_ckpt.scaler()
    cfg = masked_ckpt.config
    base = prepare(counted, split, cfg.in_steps, cfg.out_steps, scaler=scaler)
    test = base.splits["test"]
    inputs = model_inputs(prepare(masked, split, cfg.in_steps, cfg.out_steps, scaler=scaler).splits["test"].raw,
                          scaler)  # T × N, what the masked model was trained to read
    ds = WindowDataset(counted, test.starts, scaler, cfg.in_steps, cfg.out_steps, raw=test.raw, scaled=inputs,
                       time=test.time)
    prepared = dataclasses.replace(base, splits={"test": ds})
    return evaluate_model(masked_ckpt.build_model(), prepared, "test")


def check(report: dict) -> list[tuple[str, bool, str]]:
    out = []
    for step in CHECK_STEPS:
        for metric in ("mae", "rmse"):
            ours = report["model"]["horizon"][step - 1][metric]
            for base in BASELINES:
                theirs = report[base]["horizon"][step - 1][metric]
                out.append((f"step {step} {metric.upper()} < {base}", ours < theirs, f"{ours:.3f} vs {theirs:.3f}"))
    return out


def table(columns: dict[str, tuple[dict, str]]) -> str:
    """Markdown table: one row per (step, metric), one column per (report, method)."""
    head = "| step | metric | " + " | ".join(columns) + " |"
    lines = [head, "| ---: | --- |" + " ---: |" * len(columns)]
    for step in CHECK_STEPS:
        for metric in ("mae", "rmse"):
            cells = [f"{rep[name]['horizon'][step - 1][metric]:.3f}" for rep, name in columns.values()]
            lines.append(f"| {step} | {metric.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="runs/count-data")
    p.add_argument("--num-sensors", type=int, default=32)
    p.add_argument("--days", type=int, default=28)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--lr-milestones", default="20,25")
    p.add_argument("--tf-decay-steps", type=float, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--loss", default="masked_mae", choices=LOSSES)
    p.add_argument("--mse-weight", type=float, help="w in mae_mse = MAE + w * MSE (default: training's)")
    p.add_argument("--average", default="none", choices=AVERAGES, help="weight averaging: ema | swa")
    p.add_argument("--ema-decay", type=float, help="EMA decay per step (default: training's)")
    p.add_argument("--counted-only", action="store_true",
                   help="train only the zeros-counted run (the acceptance one), not the masked comparison")
    p.add_argument("--max-time", type=float, default=300, help="seconds of training per run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scaling", default="global", choices=SCALINGS, help="global (the paper's) or per_sensor")
    p.add_argument("--transform", default="none", choices=TRANSFORMS, help="none or log1p (counts) before scaling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p


def main() -> int:
    args = _parser().parse_args()
    out = Path(args.output)
    settings = dict(preset="metr-la", split="7:1:2", hidden=args.hidden, epochs=args.epochs, patience=args.patience,
                    lr=args.lr, lr_milestones=tuple(int(x) for x in args.lr_milestones.split(",")),
                    tf_decay_steps=args.tf_decay_steps, batch_size=args.batch_size, loss=args.loss,
                    max_time=args.max_time, threads=args.threads, seed=args.seed, device=args.device,
                    scaling=args.scaling, transform=args.transform, mse_weight=args.mse_weight,
                    average=args.average, ema_decay=args.ema_decay, progress=False)
    start, load_start = time.monotonic(), os.getloadavg()
    data = {rule: count_data(args, rule) for rule in (("nan",) if args.counted_only else ("nan", "zero"))}
    ckpts = {rule: train_model(data[rule], **settings, output=out / rule) for rule in data}
    counted = ckpts["nan"].metrics["test"]
    columns = {"HimNet, zeros counted": (counted, "model"), "last value": (counted, "last_value"),
               "hist. average": (counted, "historical_average")}
    masked = masked_counted = None
    if "zero" in ckpts:
        masked = ckpts["zero"].metrics["test"]
        masked_counted = counted_report(ckpts["zero"], data["nan"], data["zero"], "7:1:2")
        columns.update({"HimNet trained zeros masked, scored counted": (masked_counted, "model"),
                        "HimNet, zeros masked (own rule)": (masked, "model"),
                        "last value (masked)": (masked, "last_value"),
                        "hist. average (masked)": (masked, "historical_average")})
    results = check(counted)
    ok = all(r[1] for r in results)
    md = table(columns)
    print(md)
    for name, passed, detail in results:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}")
    summary = {"passed": ok, "wall_seconds": time.monotonic() - start, "cpus": os.cpu_count(),
               "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "settings": {**settings, **vars(args)},
               "data": {rule: d.describe() for rule, d in data.items()},
               "runs": {rule: {k: c.metrics[k] for k in ("epochs", "best_epoch", "stopped_because", "train_seconds")}
                        for rule, c in ckpts.items()},
               "checks": [{"name": n, "passed": q, "detail": d} for n, q, d in results],
               "counted": counted, "masked": masked, "masked_scored_counted": masked_counted, "table": md}
    out.mkdir(parents=True, exist_ok=True)
    (out / "acceptance.json").write_text(json.dumps(summary, indent=2, default=str))
    zeros = float((data["nan"].values == 0).mean())
    print(f"{'ACCEPTED' if ok else 'NOT ACCEPTED'}: {zeros:.1%} of readings are real zeros; wall "
          f"{summary['wall_seconds'] / 60:.1f} min, load average {load_start[0]:.1f} at start on "
          f"{os.cpu_count()} CPUs; runs {json.dumps(summary['runs'])}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
