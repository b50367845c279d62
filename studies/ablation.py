"""``himnet ablation``: the paper's ablation study on any dataset.

Trains the full model and its six variants (``model.config.ABLATIONS``: w/o E_t, E_s, E_st, TMP,
SMP, STMP) with the same seed, split, scaler and budget, evaluates each on the test split and
prints MAE / RMSE / MAPE at horizon steps 3, 6 and 12 and over all steps, like the paper's table.
The budget is per variant: ``--epochs``, ``--max-steps`` (optimiser steps; the fairest when
variants differ in speed) and ``--max-time`` (seconds), whichever ends first.

Python API: :func:`run_ablation` returns the rows; :func:`format_ablation_table` prints them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from himnet.args import add_data_option, embedding_dims, parse_data_options
from model import ABLATIONS, HimNet, HimNetConfig
from training import distributed
from training.checkpoint import Checkpoint, CheckpointError
from training.datasets import DatasetError, SensorData, load_dataset
from training.evaluate import evaluate_model
from training.loop import LoopSettings, fit, seed_everything
from training.train import TrainSettings, resolve
from training.windows import PreparedData, prepare

log = logging.getLogger("himnet.ablation")

# The paper's names for the variants.
VARIANT_NAMES = {"none": "HimNet", "no_e_t": "w/o E_t", "no_e_s": "w/o E_s", "no_e_st": "w/o E_st",
                 "no_tmp": "w/o TMP", "no_smp": "w/o SMP", "no_stmp": "w/o STMP"}
HORIZONS = (3, 6, 12)
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass
class VariantResult:
    variant: str
    horizon: dict[int, dict[str, float]]  # step -> {"mae", "rmse", "mape"}
    average: dict[str, float]  # over all steps
    parameters: int
    steps: int  # optimiser steps taken
    epochs: int
    best_epoch: int
    stopped_because: str
    train_seconds: float
    checkpoint: str | None = None

    @property
    def name(self) -> str:
        return VARIANT_NAMES.get(self.variant, self.variant)


@dataclass
class AblationResult:
    rows: list[VariantResult]
    dataset: dict[str, Any]
    settings: dict[str, Any]
    wall_seconds: float
    test_windows: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "settings": self.settings, "wall_seconds": self.wall_seconds,
            "test_windows": self.test_windows, **self.extra,
            "rows": [{**dataclasses.asdict(r), "name": r.name,
                      "horizon": {str(k): v for k, v in r.horizon.items()}} for r in self.rows],
        }


def run_ablation(data: SensorData | str | Path = "synthetic", variants: tuple[str, ...] | list[str] = ABLATIONS,
                 *, output: str | Path | None = None, save_checkpoints: bool = True,
                 **options: Any) -> AblationResult:
    """Train and test every variant in ``variants`` under the same settings.

    ``options`` are :class:`training.train.TrainSettings` fields (``seed``, ``epochs``,
    ``max_steps``, ``max_time``, ``hidden``, ``split``, ``max_nodes``, ``device`` ...), applied to
    every variant alike. With ``output``, each variant's checkpoint goes to
    ``<output>/<variant>/checkpoint.pt`` and the table to ``<output>/ablation.json``.
    """
    unknown = [v for v in variants if v not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(ABLATIONS)}")
    wall_start = time.monotonic()
    settings, data = _settings_and_data(data, options)
    base_config, loop, split = resolve(settings, data)
    # One split and one scaler for every variant: only the model differs.
    prepared = prepare(data, split, base_config.in_steps, base_config.out_steps)
    unseen = unseen_weekdays(prepared) if base_config.dow_embedding_dim > 0 else []
    if unseen:
        log.warning("test windows fall on days of week that no training window does (%s): their day-of-week "
                    "embeddings stay untrained, which handicaps the variants that use E_t",
                    ", ".join(DAY_NAMES[d] for d in unseen))
    device = distributed.pick_device(settings.device)
    info = distributed.DistInfo()
    out_dir = Path(output) if output is not None else None
    rows: list[VariantResult] = []
    test_windows = 0
    for variant in variants:
        run_dir = (out_dir / variant) if out_dir is not None else Path(_scratch_dir()) / variant
        row, test_windows = _train_variant(variant, base_config, settings, loop, split, data, prepared, run_dir,
                                           info, device, save=save_checkpoints and out_dir is not None)
        rows.append(row)
    out = AblationResult(rows=rows, dataset=data.describe(),
                         settings={**settings.to_dict(), "split": split, "loop": dataclasses.asdict(loop),
                                   "variants": list(variants)},
                         wall_seconds=time.monotonic() - wall_start, test_windows=test_windows,
                         extra={"unseen_test_weekdays": [DAY_NAMES[d] for d in unseen]})
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "ablation.json").write_text(json.dumps(out.to_dict(), indent=2))
        (out_dir / "ablation.txt").write_text(format_ablation_table(out) + "\n\n" + compare_to_full(out) + "\n")
    return out


def _settings_and_data(data: SensorData | str | Path, options: dict[str, Any]) -> tuple[TrainSettings, SensorData]:
    """The shared training settings, and the data they describe (loaded, cut to max_nodes)."""
    settings = TrainSettings(**{"progress": False, **options})
    if isinstance(data, SensorData):
        settings.data = data.source or data.name
    else:
        settings.data = str(data)
        data = load_dataset(data, **settings.data_options)
    if settings.max_nodes:
        data = data.subset(nodes=settings.max_nodes)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    return settings, data


def _train_variant(variant: str, base_config: HimNetConfig, settings: TrainSettings, loop: LoopSettings,
                   split: str, data: SensorData, prepared: PreparedData, run_dir: Path,
                   info: distributed.DistInfo, device: torch.device, save: bool) -> tuple[VariantResult, int]:
    """Train one variant from the shared seed, test it, save its checkpoint: (its row, test windows)."""
    config = base_config.replace(ablation=variant)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(settings.seed)
    model = HimNet(config)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s (%s): %d parameters", VARIANT_NAMES[variant], variant, n_params)
    result = fit(model, prepared, loop, run_dir, info, device)
    model = model.cpu().eval()
    report = evaluate_model(model, prepared, "test", "cpu", loop.eval_batch_size)
    horizon = {h: dict(report["model"]["horizon"][h - 1]) for h in HORIZONS if h <= config.out_steps}
    ckpt_path = None
    if save:
        ckpt = Checkpoint(
            config=config, state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            scaler_mean=prepared.scaler.mean, scaler_std=prepared.scaler.std,
            sensor_ids=list(data.sensor_ids), interval_minutes=float(data.interval_minutes),
            dataset=data.name,
            coords=[(float(a), float(b)) for a, b in data.coords] if data.coords is not None else None,
            timezone=data.timezone, metrics={"test": report},
            train_settings={**settings.to_dict(), "split": split, "ablation": variant,
                            "history": result.history})
        ckpt_path = str(ckpt.save(run_dir / "checkpoint.pt"))
    log.info("%s: step-12 MAE %s, all-step MAE %.4f (%d steps, %.0fs)", VARIANT_NAMES[variant],
             f"{horizon[12]['mae']:.4f}" if 12 in horizon else "n/a", report["model"]["all"]["mae"],
             result.batches_seen, result.seconds)
    row = VariantResult(
        variant=variant, horizon=horizon, average=dict(report["model"]["all"]), parameters=n_params,
        steps=result.batches_seen, epochs=result.epochs, best_epoch=result.best_epoch,
        stopped_because=result.stopped_because, train_seconds=result.seconds, checkpoint=ckpt_path)
    return row, report["num_windows"]


def unseen_weekdays(prepared: PreparedData) -> list[int]:
    """Days of week (0 = Monday) that test windows are indexed by (their last input step, as
    HimNet reads e_t) but no training window is: the model never trains those table rows."""
    def days(split: str) -> set[int]:
        ds = prepared.splits[split]
        rows = ds.starts + ds.in_steps - 1
        return {int(d) for d in ds.time[rows, 1].numpy()}

    return sorted(days("test") - days("train"))


def _scratch_dir() -> str:
    """Where per-variant resume files go when no output directory is given."""
    import tempfile

    return tempfile.mkdtemp(prefix="himnet-ablation-")


def format_ablation_table(result: AblationResult) -> str:
    """The paper's layout: one row per variant; MAE / RMSE / MAPE at steps 3, 6, 12 and average."""
    steps = sorted({h for r in result.rows for h in r.horizon})
    groups = [f"Step {h}" for h in steps] + ["Average"]
    width = 24
    head = f"{'variant':<10}" + "".join(f"| {g:^{width - 2}}" for g in groups)
    sub = f"{'':<10}" + "".join(f"| {'MAE':>6} {'RMSE':>6} {'MAPE%':>7} " for _ in groups)
    lines = [head, sub, "-" * len(sub)]

    def cell(m: dict[str, float]) -> str:
        return f"| {m['mae']:6.3f} {m['rmse']:6.3f} {m['mape']:7.2f} "

    for r in result.rows:
        lines.append(f"{r.name:<10}" + "".join(cell(r.horizon[h]) for h in steps) + cell(r.average))
    lines.append("")
    lines.append(f"{'variant':<10}  {'params':>9} {'steps':>6} {'epochs':>6} {'best':>5} {'train s':>8}  stopped")
    for r in result.rows:
        lines.append(f"{r.name:<10}  {r.parameters:>9,} {r.steps:>6} {r.epochs:>6} {r.best_epoch:>5} "
                     f"{r.train_seconds:>8.0f}  {r.stopped_because}")
    return "\n".join(lines)


def compare_to_full(result: AblationResult, step: int = 12) -> str:
    """One line per variant: its MAE at ``step`` against the full model's (positive = worse than full)."""
    full = next((r for r in result.rows if r.variant == "none"), None)
    if full is None or step not in full.horizon:
        return f"(no full-model row with step {step}: nothing to compare)"
    base = full.horizon[step]["mae"]
    lines = [f"step-{step} MAE, full model {base:.3f}:"]
    for r in result.rows:
        if r.variant == "none":
            continue
        mae = r.horizon[step]["mae"]
        verdict = "full model better" if base < mae else ("variant better" if mae < base else "tie")
        lines.append(f"  {r.name:<10} {mae:.3f}  ({mae - base:+.3f}, {100 * (mae - base) / base:+.1f}%): {verdict}")
    return "\n".join(lines)


# what `himnet ablation` reports as the user's mistake (himnet.args.run_command)
USER_ERRORS = (DatasetError, CheckpointError, ValueError, KeyError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("example:  himnet ablation --data los-loop --split los-loop --max-time 240 --output runs/ablation\n"
                     "Each variant gets the same seed, split, scaler and budget; checkpoints go to\n"
                     "<output>/<variant>/checkpoint.pt, the table to <output>/ablation.{txt,json}.")
    g = parser.add_argument_group("data")
    g.add_argument("--data", default="synthetic", help="'synthetic', 'los-loop' or a dataset path (as for train)")
    add_data_option(g)
    g.add_argument("--split", help="split spec (default: the preset's), e.g. 7:1:2, los-loop")
    g.add_argument("--max-nodes", type=int, help="use only the first K sensors")
    g = parser.add_argument_group("model (default: the preset's)")
    g.add_argument("--preset", default="metr-la")
    g.add_argument("--hidden", type=int)
    g.add_argument("--embedding-dims", type=embedding_dims, metavar="TOD,DOW,S,ST",
                   help="embedding sizes override; DOW 0 when test days of week never occur in training "
                        "(one week of LOS-LOOP: 8,0,16,16)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--tf-decay-steps", type=float,
                   help="teacher-forcing decay τ; the preset's 6000 keeps teacher forcing on for ~50k steps, "
                        "so short budgets want a small τ")
    g.add_argument("--variants", default=",".join(ABLATIONS),
                   help=f"comma-separated subset of {','.join(ABLATIONS)} ('none' is the full model)")
    g = parser.add_argument_group("budget per variant (whichever ends first)")
    g.add_argument("--epochs", type=int, default=None, help="max epochs (default: the preset's)")
    g.add_argument("--max-steps", type=int, help="optimiser steps")
    g.add_argument("--max-time", type=float, help="seconds of training")
    g.add_argument("--patience", type=int)
    g = parser.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto")
    g.add_argument("--threads", type=int)
    g.add_argument("--output", default="runs/ablation", help="directory for checkpoints and the table")
    g.add_argument("--json", type=Path, help="also write the JSON table here")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    options = dict(data_options=parse_data_options(args.data_option), preset=args.preset, split=args.split,
                   max_nodes=args.max_nodes, hidden=args.hidden, embedding_dims=args.embedding_dims,
                   batch_size=args.batch_size, epochs=args.epochs,
                   tf_decay_steps=args.tf_decay_steps,
                   max_steps=args.max_steps, max_time=args.max_time, patience=args.patience, seed=args.seed,
                   device=args.device, threads=args.threads)
    result = run_ablation(args.data, variants, output=args.output, **options)
    print(f"{result.dataset['name']}: {result.test_windows} test windows; seed {args.seed}; "
          f"wall {result.wall_seconds:.0f}s")
    if result.extra.get("unseen_test_weekdays"):
        print(f"note: test days of week never seen in training: {', '.join(result.extra['unseen_test_weekdays'])} "
              "(their day-of-week embeddings are untrained)")
    print(format_ablation_table(result))
    print()
    print(compare_to_full(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_dict(), indent=2))
    return 0
