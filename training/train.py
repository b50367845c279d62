"""``himnet train``: fit HimNet on a dataset and write a checkpoint, a log and a metrics JSON.

``--preset metr-la --data metr-la.h5`` is the paper's METR-LA setup (7:1:2, batch 16, up to 200
epochs, patience 20, LR milestones 30/40, masked MAE). The default (``--data synthetic``) needs
no files. Python API: :func:`train_model` returns the :class:`Checkpoint` it wrote.
Run data-parallel with ``torchrun --nproc_per_node K -m himnet train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from himnet.args import add_data_option, embedding_dims, int_list, parse_data_options
from model import HimNet, HimNetConfig, get_preset, parse_rule
from model.scaling import SCALINGS, TRANSFORMS, parse_scaling, parse_transform
from training import distributed
from training.averaging import AVERAGES, DEFAULT_EMA_DECAY, DEFAULT_SWA_EPOCHS, check_average
from training.checkpoint import Checkpoint, CheckpointError
from training.datasets import DatasetError, SensorData, load_dataset
from training.evaluate import evaluate_model, format_table
from training.loop import LoopSettings, fit, seed_everything
from training.metrics import DEFAULT_MSE_WEIGHT, LOSSES, average_steps
from training.windows import prepare

log = logging.getLogger("himnet.train")


@dataclass
class TrainSettings:
    """Everything a run depends on; ``None`` means "the preset's value"."""

    data: str = "synthetic"
    data_options: dict[str, Any] = field(default_factory=dict)
    missing: str | None = None  # missing-value rule (zero | nan | value:<x>); default: the reader's (zero)
    preset: str = "metr-la"
    split: str | None = None  # "7:1:2", "6:2:2", "los-loop", "official"; default: the preset's
    in_steps: int = 12
    out_steps: int = 12
    max_nodes: int | None = None  # keep only the first K sensors (quick experiments, tests)
    epochs: int | None = None
    max_steps: int | None = None
    max_time: float | None = None  # seconds
    batch_size: int | None = None
    eval_batch_size: int = 64
    hidden: int | None = None
    lr: float | None = None
    lr_milestones: tuple[int, ...] | None = None
    weight_decay: float | None = None
    patience: int | None = None
    loss: str | None = None
    mse_weight: float | None = None  # mae_mse only; default training.metrics.DEFAULT_MSE_WEIGHT
    average: str = "none"  # weight averaging: none | ema | swa (training.averaging)
    ema_decay: float | None = None  # ema only; default training.averaging.DEFAULT_EMA_DECAY
    swa_epochs: int | None = None  # swa only: average the last K epochs (default 5) ...
    swa_start: int | None = None  # ... counting only epochs >= this one (default 1)
    scaling: str = "global"  # model.scaling: global (the paper's) or per_sensor
    transform: str = "none"  # model.scaling: none or log1p (counts)
    tf_decay_steps: float | None = None
    embedding_dims: tuple[int, int, int, int] | None = None  # d_tod, d_dow, d_s, d_st
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    output: str | Path = "runs/latest"
    resume: bool = False
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["output"] = str(self.output)
        d["lr_milestones"] = list(self.lr_milestones) if self.lr_milestones is not None else None
        d["embedding_dims"] = list(self.embedding_dims) if self.embedding_dims is not None else None
        return d


def resolve(settings: TrainSettings, data: SensorData) -> tuple[HimNetConfig, LoopSettings, str]:
    """Preset + overrides + the data's shape -> model config, loop settings and split spec."""
    preset = get_preset(settings.preset)
    changes: dict[str, Any] = {"num_nodes": data.num_nodes, "in_steps": settings.in_steps,
                               "out_steps": settings.out_steps, "steps_per_day": data.steps_per_day}
    if settings.hidden is not None:
        changes["hidden_dim"] = settings.hidden
    if settings.tf_decay_steps is not None:
        changes["tf_decay_steps"] = settings.tf_decay_steps
    if settings.embedding_dims is not None:
        tod, dow, d_s, d_st = settings.embedding_dims
        changes.update(tod_embedding_dim=tod, dow_embedding_dim=dow, node_embedding_dim=d_s, st_embedding_dim=d_st)
    config = preset.model.replace(**changes)
    loss = settings.loss or preset.loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    mse_weight = _mse_weight(loss, settings.mse_weight)
    ema_decay, swa_epochs, swa_start = check_average(settings.average, settings.ema_decay, settings.swa_epochs,
                                                     settings.swa_start)
    loop = LoopSettings(
        loss=loss, mse_weight=mse_weight, lr=settings.lr if settings.lr is not None else preset.lr,
        eps=preset.eps,
        weight_decay=settings.weight_decay if settings.weight_decay is not None else preset.weight_decay,
        lr_milestones=tuple(settings.lr_milestones) if settings.lr_milestones is not None else preset.lr_milestones,
        lr_decay=preset.lr_decay, clip_grad_norm=preset.clip_grad_norm,
        batch_size=settings.batch_size or preset.batch_size, eval_batch_size=settings.eval_batch_size,
        max_epochs=settings.epochs if settings.epochs is not None else preset.max_epochs,
        patience=settings.patience if settings.patience is not None else preset.patience,
        max_steps=settings.max_steps, max_time=settings.max_time, seed=settings.seed, progress=settings.progress,
        average=settings.average, ema_decay=ema_decay, swa_epochs=swa_epochs, swa_start=swa_start)
    split = settings.split or ":".join(f"{r:g}" for r in preset.split)
    return config, loop, split


def _mse_weight(loss: str, given: float | None) -> float:
    """The mae_mse weight; refused for another loss (it would be silently ignored) or when < 0."""
    if given is None:
        return DEFAULT_MSE_WEIGHT
    if loss != "mae_mse":
        raise ValueError(f"--mse-weight applies to --loss mae_mse only, not {loss}")
    if not math.isfinite(given) or given < 0:
        raise ValueError(f"--mse-weight must be a finite number >= 0, got {given}")
    return float(given)


def _setup_logging(run_dir: Path, is_main: bool) -> logging.Handler | None:
    """Log to ``run_dir/train.log`` and stderr (main process only)."""
    logger = logging.getLogger("himnet")
    logger.setLevel(logging.INFO)
    if not is_main:
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in logger.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(console)
    return handler


def train_model(data: SensorData | str | Path = "synthetic", **options: Any) -> Checkpoint:
    """Train on ``data`` (a :class:`SensorData`, or a name/path for :func:`load_dataset`) and
    return the checkpoint written to ``<output>/checkpoint.pt``.

    ``options`` are :class:`TrainSettings` fields, e.g. ``hidden=8, epochs=2, max_steps=20,
    output=tmp_path, split="los-loop", max_nodes=20, device="cpu", progress=False``.
    Under torchrun (WORLD_SIZE > 1) it trains data-parallel; only rank 0 writes files, and every
    rank returns the same checkpoint object.
    """
    settings = TrainSettings(**options)
    settings.scaling, settings.transform = parse_scaling(settings.scaling), parse_transform(settings.transform)
    if isinstance(data, SensorData):
        if settings.missing is not None and parse_rule(settings.missing) != data.missing:
            raise ValueError(f"missing={settings.missing!r} but the data given was read under "
                             f"{data.missing.spec!r}: read it with missing={settings.missing}")
        settings.data = data.source or data.name
        settings.data_options = dict(data.load_options)
    else:
        settings.data_options = _with_rule(settings.data_options, settings.missing)
        data = load_dataset(data, **settings.data_options)
        settings.data, settings.data_options = data.source, dict(data.load_options)
    settings.missing = data.missing.spec
    if settings.max_nodes:
        data = data.subset(nodes=settings.max_nodes)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    info, device = distributed.setup(settings.device)
    run_dir = Path(settings.output)
    handler = _setup_logging(run_dir, info.is_main)
    try:
        return _train(settings, data, info, device, run_dir)
    finally:
        if handler is not None:
            logging.getLogger("himnet").removeHandler(handler)
            handler.close()


def _with_rule(data_options: dict[str, Any], missing: str | None) -> dict[str, Any]:
    """Reader options with the ``--missing`` rule in them; refuses two different rules."""
    given = data_options.get("missing")
    if missing is None or given is None:
        return {**data_options, "missing": missing} if missing is not None else dict(data_options)
    if parse_rule(given) != parse_rule(missing):
        raise ValueError(f"--missing {missing} disagrees with --data-option missing={given}")
    return dict(data_options)


def _train(settings: TrainSettings, data: SensorData, info: distributed.DistInfo, device: torch.device,
           run_dir: Path) -> Checkpoint:
    wall_start = time.monotonic()
    config, loop, split = resolve(settings, data)
    prepared = prepare(data, split, config.in_steps, config.out_steps, scaling=settings.scaling,
                       transform=settings.transform)
    sizes = {k: len(v) for k, v in prepared.splits.items()}
    if info.is_main:
        summary = data.describe()
        log.info("data %s", json.dumps(summary))
        log.info("missing readings (rule %s): %.2f %%", summary["missing_rule"], 100 * summary["missing_fraction"])
        scaler = prepared.scaler
        log.info("split %s -> windows %s; scaler mean %.4f std %.4f (%s, transform %s)", split, sizes,
                 scaler.scalar_mean, scaler.scalar_std, scaler.scaling, scaler.transform_name)
        log.info("model %s", json.dumps(config.to_dict()))
        log.info("loop %s; device %s; %d process(es); %d threads", json.dumps(dataclasses.asdict(loop)), device,
                 info.world_size, torch.get_num_threads())
    if info.is_main:
        _warn_unseen_contexts(prepared, config)
    seed_everything(settings.seed)
    model = HimNet(config)
    result = fit(model, prepared, loop, run_dir, info, device, resume=settings.resume)
    model = model.cpu().eval()
    metrics: dict[str, Any] = {
        "best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch, "epochs": result.epochs,
        "batches_seen": result.batches_seen, "stopped_because": result.stopped_because,
        "train_seconds": result.seconds, "windows": sizes}
    if info.is_main:
        report = evaluate_model(model, prepared, "test", "cpu", loop.eval_batch_size)
        metrics["test"] = report
        metrics["test_steps_1_3"] = {k: average_steps(report[k], [1, 2, 3]) for k in
                                     ("model", "last_value", "historical_average")} if config.out_steps >= 3 else {}
        log.info("test (%d windows):\n%s", report["num_windows"], format_table(report))
    metrics["wall_seconds"] = time.monotonic() - wall_start
    train_settings = {**settings.to_dict(), "split": split, "selection": data.selection, "loop": {**dataclasses.asdict(loop)},
                      "history": result.history, "world_size": info.world_size, "device": str(device)}
    ckpt = Checkpoint(
        config=config, state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        **Checkpoint.scaler_fields(prepared.scaler), sensor_ids=list(data.sensor_ids),
        interval_minutes=float(data.interval_minutes), dataset=data.name,
        coords=[(float(a), float(b)) for a, b in data.coords] if data.coords is not None else None,
        timezone=data.timezone, metrics=metrics, train_settings=train_settings, missing_rule=data.missing.spec)
    if info.is_main:
        path = ckpt.save(run_dir / "checkpoint.pt")
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("wrote %s and %s (%.1fs)", path, run_dir / "metrics.json", metrics["wall_seconds"])
    distributed.barrier(info)
    return ckpt


def _warn_unseen_contexts(prepared, config: HimNetConfig) -> None:
    """Warn when val/test windows index day-of-week rows that no training window trains.

    HimNet reads its temporal embedding at the last input step; a weekday absent from training
    (e.g. a one-week dataset) keeps its random initial vector and spoils those forecasts.
    """
    def days(name: str) -> set[int]:
        ds = prepared.splits[name]
        if not len(ds):
            return set()
        rows = ds.starts + ds.in_steps - 1
        return set(ds.time[torch.from_numpy(rows), 1].long().tolist())

    unseen = (days("val") | days("test")) - days("train")
    if unseen and config.dow_embedding_dim > 0:
        log.warning("day(s) of week %s occur in val/test but in no training window: their day-of-week "
                    "embeddings stay untrained; consider --embedding-dims %d,0,%d,%d", sorted(unseen),
                    config.tod_embedding_dim, config.node_embedding_dim, config.st_embedding_dim)


# what `himnet train` reports as the user's mistake (himnet.args.run_command)
USER_ERRORS = (DatasetError, CheckpointError, ValueError, KeyError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("examples:  himnet train --epochs 5 --hidden 16        (synthetic data)\n"
                     "           himnet train --preset metr-la --data metr-la.h5 --output runs/metr-la\n"
                     "           himnet train --data los-loop --split los-loop --output runs/los\n"
                     "           torchrun --nproc_per_node 4 -m himnet train --data PEMS07.npz --preset pems07")
    g = parser.add_argument_group("data")
    g.add_argument("--data", default="synthetic",
                   help="'synthetic', 'los-loop', or a path: data.npz (+index.npz), *.h5, PEMS0X.npz, wide *.csv, a directory")
    add_data_option(g, "reader option (repeatable): start=, interval_minutes=, timezone=, adjacency=, "
                       "locations=, format=, missing=, or for synthetic num_sensors=, days=, seed=, kind=counts")
    g.add_argument("--missing", metavar="RULE",
                   help="what marks a missing reading: zero (default; the benchmarks' convention), nan "
                        "(empty cells only: 0 is a reading, e.g. count data) or value:<x> (a sentinel); "
                        "recorded in the checkpoint and the bundle")
    g.add_argument("--split", help="7:1:2, 6:2:2, custom ratios, 'los-loop' (80/20, last 10%% of train = val) "
                                   "or 'official' (index.npz); default: the preset's")
    g.add_argument("--in-steps", type=int, default=12)
    g.add_argument("--out-steps", type=int, default=12)
    g.add_argument("--max-nodes", type=int, help="use only the first K sensors")
    g = parser.add_argument_group("model and optimisation (default: the preset's)")
    g.add_argument("--preset", default="metr-la", help="metr-la, pems-bay, pems03, pems04, pems07, pems08")
    g.add_argument("--hidden", type=int, help="hidden size override")
    g.add_argument("--embedding-dims", type=embedding_dims, metavar="TOD,DOW,S,ST", help="embedding sizes override")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--eval-batch-size", type=int, default=64)
    g.add_argument("--lr", type=float)
    g.add_argument("--lr-milestones", type=int_list, metavar="E1,E2", help="epochs at which LR ×0.1")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--loss", choices=LOSSES, help="training and early-stopping loss; mae_mse = masked MAE + "
                                                  "w * masked MSE, for RMSE without giving up MAE")
    g.add_argument("--mse-weight", type=float, metavar="W",
                   help=f"w of --loss mae_mse (default {DEFAULT_MSE_WEIGHT}: both parts about equal at "
                        "LOS-LOOP's errors)")
    g.add_argument("--scaling", choices=SCALINGS, default="global",
                   help="z-score by one global mean/std (default, the paper's) or per_sensor: each sensor "
                        "by its own (sensors at different levels); recorded in the checkpoint and bundle")
    g.add_argument("--transform", choices=TRANSFORMS, default="none",
                   help="none (default) or log1p: log(1 + x) before scaling, for heavy-tailed counts "
                        "(readings must be >= 0); the exported graph applies it and its inverse")
    g.add_argument("--tf-decay-steps", type=float, help="teacher-forcing decay τ")
    g.add_argument("--average", choices=AVERAGES, default="none",
                   help="weight averaging, validated and exported instead of the last weights: ema (every "
                        "step) or swa (mean of the last epochs); default none (the paper's)")
    g.add_argument("--ema-decay", type=float, metavar="D",
                   help=f"EMA decay per optimiser step (default {DEFAULT_EMA_DECAY}: ~1/(1-D) steps remembered)")
    g.add_argument("--swa-epochs", type=int, metavar="K",
                   help=f"SWA: mean of the end-of-epoch weights of the last K epochs (default {DEFAULT_SWA_EPOCHS})")
    g.add_argument("--swa-start", type=int, metavar="E", help="SWA: no epoch before E enters the mean (default 1)")
    g = parser.add_argument_group("budget and run")
    g.add_argument("--epochs", type=int, help="max epochs")
    g.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    g.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    g.add_argument("--max-time", type=float, help="stop after this many seconds of training")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, help="torch CPU threads")
    g.add_argument("--output", default="runs/latest", help="run directory: checkpoint.pt, train.log, metrics.json, resume.pt")
    g.add_argument("--resume", action="store_true", help="continue from <output>/resume.pt")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    options = dict(
        data_options=parse_data_options(args.data_option), missing=args.missing, preset=args.preset, split=args.split,
        in_steps=args.in_steps, out_steps=args.out_steps, max_nodes=args.max_nodes, epochs=args.epochs,
        max_steps=args.max_steps, max_time=args.max_time, batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size, hidden=args.hidden, lr=args.lr, lr_milestones=args.lr_milestones,
        weight_decay=args.weight_decay, patience=args.patience, loss=args.loss, mse_weight=args.mse_weight,
        average=args.average, ema_decay=args.ema_decay, swa_epochs=args.swa_epochs, swa_start=args.swa_start,
        scaling=args.scaling, transform=args.transform,
        tf_decay_steps=args.tf_decay_steps, embedding_dims=args.embedding_dims, device=args.device, seed=args.seed,
        threads=args.threads, output=args.output, resume=args.resume, progress=not args.no_progress)
    try:
        ckpt = train_model(args.data, **options)
    finally:
        distributed.teardown(distributed.DistInfo(*_current_rank()))
    if os.environ.get("RANK", "0") == "0":
        print(f"checkpoint: {Path(args.output) / 'checkpoint.pt'}")
    return 0 if ckpt is not None else 1


def _current_rank() -> tuple[int, int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), 0
    return 0, 1, 0
