"""``himnet efficiency``: the paper's efficiency study.

For HimNet (``model.himnet``) and its naive per-step form (``studies/naive_himnet.py``:
parameters regenerated at every recurrent step) it prints the number of parameters, the time of
one training step, the time of one epoch (step time × steps per epoch of the given dataset and
batch size), inference latency at batch 1 and at the batch size, and the peak memory of a
training step. It also prints the analytical size of the pool-free variant HimNet-Θ′, which
gives every context its own parameters (:func:`theta_prime_parameters`) and fits on no GPU.

Measurement code is shared with ``benchmarks/model_speed.py`` (``studies/speed.py``).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from himnet.args import add_data_option, parse_data_options
from model import HimNetConfig, get_preset
from studies import speed
from training.datasets import DatasetError, load_dataset
from training.windows import parse_split, split_windows

DAYS_PER_WEEK = 7


def cell_parameters(in_dim: int, hidden: int, cheb_k: int) -> int:
    """Weights and biases of one plain HimGCRU: gate (K(C+H) → 2H) plus update (K(C+H) → H)."""
    kc = cheb_k * (in_dim + hidden)
    return (kc * 2 * hidden + 2 * hidden) + (kc * hidden + hidden)


def stack_parameters(in_dim: int, hidden: int, cheb_k: int, layers: int) -> int:
    """``layers`` stacked cells: the first reads ``in_dim`` features, the others the hidden state."""
    return sum(cell_parameters(in_dim if i == 0 else hidden, hidden, cheb_k) for i in range(layers))


def theta_prime_parameters(config: HimNetConfig) -> dict[str, int]:
    """Parameters of HimNet-Θ′, the variant without meta-parameter pools.

    Every context gets its own full parameter set instead of one generated from an embedding
    and a pool of D slices:

    - spatial encoder: one set per sensor, ``N`` contexts;
    - temporal encoder: one set per (time-of-day slot, day of week), ``T_d · 7`` contexts;
    - decoder (spatiotemporal): one set per (sensor, time-of-day slot, day of week),
      ``N · T_d · 7`` contexts;
    - shared: the output projection ``H·out + out``.

    With ``P(C) = Σ_layers [K(C+H)·2H + 2H] + [K(C+H)·H + H]`` (gate + update of each cell; first
    layer input ``C``, later layers ``H``)::

        Θ′ = N·P(C_enc) + T_d·7·P(C_enc) + N·T_d·7·P(C_dec) + (H·out + out)

    METR-LA preset (N = 207, T_d = 288, H = 64, K = 2, C_enc = 3, C_dec = 1 + 2 = 3):
    ``P = 25 920``, so Θ′ = 207·25 920 + 2 016·25 920 + 417 312·25 920 + 65
    = 5 365 440 + 52 254 720 + 10 816 727 040 + 65 = 10 874 347 265 ≈ 10.9 billion, the paper's
    figure. Embeddings and E_st's projection are not needed (no parameters are generated) and
    not counted.
    """
    c = config
    enc_in, dec_in = c.input_dim, c.output_dim + c.ycov_dim
    p_enc = stack_parameters(enc_in, c.hidden_dim, c.cheb_k, c.num_layers)
    p_dec = stack_parameters(dec_in, c.hidden_dim, c.cheb_k, c.num_layers)
    temporal_contexts = c.steps_per_day * DAYS_PER_WEEK
    parts = {
        "spatial_encoder": c.num_nodes * p_enc,
        "temporal_encoder": temporal_contexts * p_enc,
        "spatiotemporal_decoder": c.num_nodes * temporal_contexts * p_dec,
        "output_projection": c.hidden_dim * c.output_dim + c.output_dim,
    }
    parts["total"] = sum(parts.values())
    return parts


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class EfficiencyResult:
    config: dict[str, Any]
    batch_size: int
    steps_per_epoch: int | None
    dataset: str | None
    device: str
    threads: int
    rows: dict[str, dict[str, float | None]]  # measure -> {"himnet": x, "naive": y}
    theta_prime: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def steps_per_epoch(data: str, data_options: dict[str, Any], split: str, batch_size: int, in_steps: int,
                    out_steps: int, max_nodes: int | None = None) -> tuple[int, int, str]:
    """(optimiser steps per epoch, sensors, dataset name) for ``data`` split as training splits it."""
    d = load_dataset(data, **data_options)
    if max_nodes:
        d = d.subset(nodes=max_nodes)
    starts = split_windows(d.num_steps, in_steps, out_steps, parse_split(split), d.index)
    return math.ceil(len(starts["train"]) / batch_size), d.num_nodes, d.name


def measure(config: HimNetConfig, *, batch_size: int = 16, repeats: int = 5, naive_repeats: int = 2,
            steps_in_epoch: int | None = None, dataset: str | None = None, device: str = "cpu",
            threads: int = 2, include_naive: bool = True, memory: bool = True) -> EfficiencyResult:
    """Measure HimNet and (when available and asked for) the naive form under ``config``."""
    torch.set_num_threads(threads)
    kinds = ["himnet"] + (["naive"] if include_naive else [])
    rows: dict[str, dict[str, float | None]] = {}

    def put(name: str, kind: str, value: float | None) -> None:
        rows.setdefault(name, {"himnet": None, "naive": None})[kind] = value

    for kind in kinds:
        model = speed.build("fast" if kind == "himnet" else "naive", config)
        put("parameters", kind, float(count_parameters(model)))
        step = speed.time_train(model, config, batch_size, repeats if kind == "himnet" else naive_repeats, device)
        put(f"training step, batch {batch_size} (ms)", kind, 1e3 * step)
        put("epoch (s, estimated)", kind, step * steps_in_epoch if steps_in_epoch else None)
        reps = repeats if kind == "himnet" else naive_repeats
        put("inference latency, batch 1 (ms)", kind, 1e3 * speed.time_eval(model, config, 1, reps, device))
        put(f"inference latency, batch {batch_size} (ms)", kind,
            1e3 * speed.time_eval(model, config, batch_size, reps, device))
        if memory:
            put(f"training step peak memory, batch {batch_size} (MiB)", kind,
                speed.peak_memory("fast" if kind == "himnet" else "naive", config, batch_size, threads, device))
        del model
    return EfficiencyResult(config=config.to_dict(), batch_size=batch_size, steps_per_epoch=steps_in_epoch,
                            dataset=dataset, device=device, threads=threads, rows=rows,
                            theta_prime=theta_prime_parameters(config))


def format_efficiency(result: EfficiencyResult) -> str:
    c = result.config
    lines = [f"HimNet N={c['num_nodes']} H={c['hidden_dim']} K={c['cheb_k']} layers={c['num_layers']}; "
             f"device {result.device}, {result.threads} threads, torch {torch.__version__}; medians",
             (f"epoch = {result.steps_per_epoch} steps of batch {result.batch_size} ({result.dataset})"
              if result.steps_per_epoch else "epoch: no dataset given (--data) - not estimated"),
             "", f"{'measure':<46}{'HimNet':>14}{'naive':>14}{'naive/HimNet':>14}"]
    for name, vals in result.rows.items():
        h, n = vals["himnet"], vals["naive"]
        fmt = (lambda v: f"{v:,.0f}") if name == "parameters" else (lambda v: f"{v:,.1f}")
        ratio = f"{n / h:.2f}x" if h and n is not None else "-"
        lines.append(f"{name:<46}{fmt(h) if h is not None else '-':>14}"
                     f"{fmt(n) if n is not None else '-':>14}{ratio:>14}")
    tp = result.theta_prime
    lines += ["", "HimNet-Θ′ (no pools: every context has its own parameters), analytical:"]
    for key in ("spatial_encoder", "temporal_encoder", "spatiotemporal_decoder", "output_projection"):
        lines.append(f"  {key:<24}{tp[key]:>18,}")
    himnet = result.rows.get("parameters", {}).get("himnet")
    lines.append(f"  {'total':<24}{tp['total']:>18,}  ≈ {_human(tp['total'])}"
                 + (f" ({tp['total'] / himnet:,.0f}× HimNet)" if himnet else "")
                 + f"; {tp['total'] * 4 / 2**30:,.1f} GiB of float32 weights alone")
    return "\n".join(lines)


def _human(n: int) -> str:
    for scale, word in ((1e9, "billion"), (1e6, "million"), (1e3, "thousand")):
        if n >= scale:
            return f"{n / scale:.1f} {word}"
    return str(n)


# what `himnet efficiency` reports as the user's mistake (himnet.args.run_command)
USER_ERRORS = (DatasetError, ValueError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("example:  himnet efficiency --data los-loop --split los-loop\n"
                     "Without --data the model has the preset's N and no epoch time is estimated.")
    parser.add_argument("--preset", default="metr-la")
    parser.add_argument("--data", help="dataset whose sensors (N) and training windows set the epoch size")
    add_data_option(parser)
    parser.add_argument("--split", help="split spec (default: the preset's)")
    parser.add_argument("--max-nodes", type=int)
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--batch-size", type=int, help="default: the preset's")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-repeats", type=int, default=2, help="the naive form is slow; fewer repeats")
    parser.add_argument("--no-naive", action="store_true", help="measure HimNet only")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)


def run(args: argparse.Namespace) -> int:
    preset = get_preset(args.preset)
    config = preset.model
    batch_size = args.batch_size or preset.batch_size
    spe, name = None, None
    if args.data:
        split = args.split or ":".join(f"{r:g}" for r in preset.split)
        spe, n, name = steps_per_epoch(args.data, parse_data_options(args.data_option), split, batch_size,
                                       config.in_steps, config.out_steps, args.max_nodes)
        config = config.replace(num_nodes=n)
    if args.hidden:
        config = config.replace(hidden_dim=args.hidden)
    result = measure(config, batch_size=batch_size, repeats=args.repeats, naive_repeats=args.naive_repeats,
                     steps_in_epoch=spe, dataset=name, device=args.device, threads=args.threads,
                     include_naive=not args.no_naive, memory=not args.no_memory)
    print(format_efficiency(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_dict(), indent=2))
    return 0
