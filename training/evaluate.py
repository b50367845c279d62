"""``himnet evaluate``: masked MAE / RMSE / MAPE per horizon step on the test split, beside the
last-value and historical-average baselines computed on the very same windows.

Python API: :func:`evaluate_model` (a model and prepared data) and :func:`evaluate_checkpoint`
(a checkpoint file; the data is re-read from where it was trained unless given).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from himnet.args import add_data_option, parse_data_options
from model.intervals import INTERVALS_FILE, IntervalTable, read_intervals
from training.baselines import HistoricalAverage, last_value
from training.calibration import calibrate_prepared, interval_scores, predict_split
from training.checkpoint import Checkpoint, CheckpointError
from training.datasets import DatasetError, SensorData, load_dataset
from training.distributed import pick_device
from training.metrics import MetricSums, average_steps
from training.windows import PreparedData, prepare

MODEL_NAMES = {"model": "HimNet", "last_value": "Last value", "historical_average": "Hist. average"}


@torch.no_grad()
def evaluate_model(model: nn.Module, prepared: PreparedData, split: str = "test",
                   device: torch.device | str = "cpu", batch_size: int = 64) -> dict[str, Any]:
    """Metrics of ``model`` and both baselines on one split: ``{name: {"horizon": [...], "all": {...}}}``."""
    ds = prepared.splits[split]
    if len(ds) == 0:
        raise ValueError(f"the {split} split has no windows")
    device = torch.device(device)
    model = model.to(device).eval()
    steps = ds.out_steps
    hist = HistoricalAverage(prepared.data, prepared.train_rows)
    fallback = hist.sensor_mean  # N
    rule = prepared.data.missing  # what the data (and the model's training) counts as missing
    sums = {name: MetricSums(steps, rule) for name in MODEL_NAMES}
    for lo in range(0, len(ds), batch_size):
        batch = ds[list(range(lo, min(lo + batch_size, len(ds))))]
        target = batch.target.squeeze(-1)  # B × T_out × N, raw
        out = model(batch.x.to(device), batch.y_cov.to(device))  # B × T_out × N × 1, scaled
        sums["model"].update(prepared.scaler.inverse(out.squeeze(-1).cpu()), target)
        rows_in = batch.start[:, None] + torch.arange(ds.in_steps)  # B × T_in
        sums["last_value"].update(last_value(ds.raw[rows_in], steps, fallback, rule), target)
        rows_out = batch.start[:, None] + ds.in_steps + torch.arange(steps)  # B × T_out
        sums["historical_average"].update(hist.predict(rows_out), target)
    report = {name: s.result() for name, s in sums.items()}
    report["num_windows"] = len(ds)
    report["split"] = split
    report["missing_rule"] = rule.spec
    return report


def format_table(report: dict[str, Any], steps: list[int] | None = None) -> str:
    """Plain-text table: one row per horizon step (and "all"), MAE / RMSE / MAPE per method."""
    names = [n for n in MODEL_NAMES if n in report]
    n_steps = len(report[names[0]]["horizon"])
    steps = steps or list(range(1, n_steps + 1))
    head = f"{'step':>6} " + " ".join(f"| {MODEL_NAMES[n]:^26} " for n in names)
    sub = f"{'':>6} " + " ".join(f"| {'MAE':>7} {'RMSE':>7} {'MAPE%':>8} " for _ in names)
    lines = [head, sub, "-" * len(sub)]

    def fmt(row: dict[str, float]) -> str:
        return f"| {row['mae']:7.3f} {row['rmse']:7.3f} {row['mape']:8.2f} "

    for s in steps:
        lines.append(f"{s:>6} " + " ".join(fmt(report[n]["horizon"][s - 1]) for n in names))
    if n_steps >= 3:
        lines.append(f"{'1-3':>6} " + " ".join(fmt(average_steps(report[n], [1, 2, 3])) for n in names))
    lines.append(f"{'all':>6} " + " ".join(fmt(report[n]["all"]) for n in names))
    return "\n".join(lines)


def check_compatible(ckpt: Checkpoint, data: SensorData, where: str = "checkpoint") -> None:
    """Refuse data the checkpoint was not trained for: other sensors, order or interval."""
    if data.sensor_ids != ckpt.sensor_ids:
        extra = set(data.sensor_ids) ^ set(ckpt.sensor_ids)
        why = f"{len(extra)} sensor ids differ" if extra else "same sensors in another order"
        raise CheckpointError(f"{where}: trained on {len(ckpt.sensor_ids)} sensors, data "
                              f"{data.name!r} has {data.num_nodes}; {why}")
    if not math.isclose(data.interval_minutes, ckpt.interval_minutes):
        raise CheckpointError(f"{where}: trained on {ckpt.interval_minutes:g}-minute steps, data has "
                              f"{data.interval_minutes:g}")


def data_from_settings(settings: dict[str, Any], missing: str = "zero") -> SensorData:
    """Re-load the dataset a checkpoint was trained on, restricted the same way, under its
    missing-value rule (``missing``: the checkpoint's, unless the recorded options name one)."""
    options = {"missing": missing, **dict(settings.get("data_options") or {})}
    data = load_dataset(settings.get("data", "synthetic"), **options)
    if settings.get("selection"):
        return data.reselect(settings["selection"])
    if settings.get("max_nodes"):
        data = data.subset(nodes=int(settings["max_nodes"]))
    return data


def evaluate_checkpoint(checkpoint: Checkpoint | str | Path, data: SensorData | str | Path | None = None, *,
                        split: str | None = None, device: str = "cpu", batch_size: int = 64,
                        data_options: dict[str, Any] | None = None,
                        intervals: str | Path | None = "val") -> dict[str, Any]:
    """Evaluate a checkpoint with its own scaler on ``split`` (default: the split it was trained
    with, test part). ``data`` defaults to the dataset recorded in the checkpoint; it is read
    under the checkpoint's missing-value rule unless ``data_options`` name another.
    ``intervals``: also report interval coverage ("val": calibrated here; a bundle directory:
    that bundle's intervals; None: no intervals)."""
    where = str(checkpoint) if not isinstance(checkpoint, Checkpoint) else "checkpoint"
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
    settings = ckpt.train_settings or {}
    if data is None:
        data = data_from_settings(settings, ckpt.missing_rule)
    elif not isinstance(data, SensorData):
        data = load_dataset(data, **{"missing": ckpt.missing_rule, **(data_options or {})})
        if settings.get("max_nodes") and data.num_nodes > len(ckpt.sensor_ids):
            data = data.subset(nodes=int(settings["max_nodes"]))
    check_compatible(ckpt, data, where)
    cfg = ckpt.config
    spec = split or settings.get("split", "7:1:2")
    prepared = prepare(data, spec, cfg.in_steps, cfg.out_steps, scaler=ckpt.scaler())
    model = ckpt.build_model()
    report = evaluate_model(model, prepared, "test", pick_device(device), batch_size)
    report["dataset"] = data.describe()
    if intervals is not None:
        report["intervals"] = interval_report(model.cpu(), prepared, intervals)
    return report


def interval_report(model: nn.Module, prepared: PreparedData, source: str | Path) -> dict[str, Any]:
    """Coverage and mean width per level and step on the test split. ``source``: "val"
    (calibrate here on the validation split, as export does) or a bundle directory."""
    table: IntervalTable
    if str(source) == "val":
        table = calibrate_prepared(model, prepared)
    else:
        table = read_intervals(Path(source) / INTERVALS_FILE)
    pred, truth = predict_split(model, prepared, "test")
    return {"source": str(source), "levels": interval_scores(table, pred, truth)}


def format_intervals(rows: list[dict[str, Any]], steps: list[int]) -> str:
    """Coverage (and mean width) per level at each step."""
    head = f"{'step':>6} " + " ".join(f"| {'cov@' + format(r['level'], 'g'):>9} {'width':>7} "
                                      for r in rows)
    lines = [head, "-" * len(head)]
    for s in steps:
        lines.append(f"{s:>6} " + " ".join(
            f"| {r['coverage'][s - 1]:9.3f} {r['mean_width'][s - 1]:7.3f} " for r in rows))
    return "\n".join(lines)


# what `himnet evaluate` reports as the user's mistake (himnet.args.run_command)
USER_ERRORS = (CheckpointError, DatasetError, ValueError)  # IntervalError is a ValueError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint written by 'himnet train'")
    parser.add_argument("--data", help="dataset name or path (default: the one the checkpoint was trained on)")
    add_data_option(parser, "reader option, e.g. start=2012-03-01T00:00 (repeatable); missing= defaults to "
                            "the checkpoint's rule")
    parser.add_argument("--split", help="split spec (default: the checkpoint's), e.g. 7:1:2, los-loop, official")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--intervals", default="val",
                        help="prediction intervals to check on the test split: 'val' (calibrate "
                             "on the validation split, as export does), a bundle directory, "
                             "or 'none'")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    report = evaluate_checkpoint(args.checkpoint, args.data, split=args.split, device=args.device,
                                 batch_size=args.batch_size, data_options=parse_data_options(args.data_option),
                                 intervals=None if args.intervals == "none" else args.intervals)
    print(f"{report['dataset']['name']}: {report['num_windows']} test windows")
    print(format_table(report))
    if "intervals" in report:
        n_steps = len(report["model"]["horizon"])
        print(f"prediction intervals ({report['intervals']['source']}): coverage and mean width "
              "on the test split")
        print(format_intervals(report["intervals"]["levels"], list(range(1, n_steps + 1))))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0
