"""``himnet ensemble``: K checkpoints of one data set and config -> one seed-ensemble bundle.

The bundle's graphs run the K members together (``model/ensemble.py``: weights stacked on a
member axis, batched ops, not K calls) and return the members' mean as ``forecast``, member 0's
``st_embedding``, the members' ``spread`` and each ``member_forecasts``. The manifest's
``ensemble`` entry records K, the seeds and the members' weight digests and metrics.

Why a command of its own, fed K checkpoints, rather than ``himnet train --seeds``: each seed is
an ordinary training run (resumable, evaluated and logged on its own, possibly on other
machines), so training K seeds is a shell loop over ``himnet train --seed`` (README), and
combining them is the one new step. Checkpoints must agree on everything the served graph and
the service rely on (config, scaler, sensors, clock, missing rule); any difference is refused
with the field and the file named.

Parity (as ``himnet export``): at batch 1 and 16 every member's forecast in the exported file
is compared with that member's eager ``HimNet.forward`` fed the way training feeds it, and so
are the mean, the spread and the embedding; any element off by more than
``tolerance + rtol·|eager|`` refuses the bundle. No prediction intervals are calibrated for an
ensemble (their calibration is per model; the spread is there for that work).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from model.bundle import (
    BUNDLE_FILES,
    EMBEDDINGS_FILE,
    INPUT_NAMES,
    MEMBERS_OUTPUT,
    ONNX_FILE,
    SPREAD_OUTPUT,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    Manifest,
    checksums,
    write_manifest,
)
from model.bundle_files import weights_digest, write_embeddings
from model.ensemble import ENSEMBLE_OUTPUTS, EnsembleHimNet
from model.serving import ServingConfigError
from training.checkpoint import Checkpoint, CheckpointError
from model.config import CONTRACTIONS
from training.contraction import choose_contraction
from training.export import TRACE_BATCH, ExportOptions, build_serving, export_record, move_into_place
from training.manifest import build_manifest, jsonable
from training.ensemble_parity import check_ensemble_parity, run_onnx
from training.parity import (
    DEFAULT_RTOL,
    DEFAULT_TOLERANCE,
    ExportError,
    ParityData,
    as_parity_data,
    load_parity_npz,
    ort_session,
    synthetic_parity_data,
)

# What every member must share: the served graph's shapes and the service's view of the data.
_SHARED = ("scaler_mean", "scaler_std", "scaling", "transform", "sensor_means", "sensor_stds",
           "sensor_ids", "interval_minutes", "dataset", "coords", "timezone", "missing_rule")


def _same(a: Any, b: Any) -> bool:
    """Equal values, comparing per-sensor figures (arrays, lists) element by element."""
    if a is None or b is None:
        return a is b
    if isinstance(a, (str, int, float)):
        return a == b
    return bool(np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object)))


def check_members(checkpoints: list[Checkpoint], names: list[str]) -> None:
    """Refuse fewer than 2 members, members that differ in config or data, or repeated weights."""
    if len(checkpoints) < 2:
        raise ExportError(f"an ensemble needs at least 2 checkpoints, got {len(checkpoints)}")
    first = checkpoints[0]
    digests = {weights_digest(first.state_dict): names[0]}
    for ckpt, name in zip(checkpoints[1:], names[1:]):
        if ckpt.config.replace(contraction="auto") != first.config.replace(contraction="auto"):
            diff = sorted(k for k, v in ckpt.config.to_dict().items() if first.config.to_dict()[k] != v)
            raise ExportError(f"{name}: model config differs from {names[0]}'s in {diff}")
        for field in _SHARED:
            if not _same(getattr(ckpt, field), getattr(first, field)):
                raise ExportError(f"{name}: {field} differs from {names[0]}'s; ensemble members must be "
                                  "trained on the same data (same scaler, sensors and clock)")
        digest = weights_digest(ckpt.state_dict)
        if digest in digests:
            raise ExportError(f"{name}: same weights as {digests[digest]}; train the members with "
                              "different seeds")
        digests[digest] = name


def build_ensemble(checkpoints: list[Checkpoint], contraction: str) -> EnsembleHimNet:
    """Eval-mode ensemble from each member's serving module (static parts cached per member)."""
    try:
        return EnsembleHimNet([build_serving(c, contraction) for c in checkpoints]).eval()
    except ServingConfigError as exc:
        raise ExportError(str(exc)) from exc


def write_onnx(ensemble: EnsembleHimNet, path: Path, example: tuple[Tensor, ...], opset: int) -> None:
    """The TorchScript-based exporter, as ``training.export.write_onnx``; member axis of
    ``member_forecasts`` is dim 1 (batch stays dim 0)."""
    dynamic = {name: {0: "batch"} for name in (*INPUT_NAMES, *ENSEMBLE_OUTPUTS)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ensemble, example, str(path), dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=list(ENSEMBLE_OUTPUTS),
                          dynamic_axes=dynamic, do_constant_folding=True,
                          training=torch.onnx.TrainingMode.PRESERVE)
    _declare_outputs(path, ensemble)


def _declare_outputs(path: Path, ensemble: EnsembleHimNet) -> None:
    """Static output dims into the signature; refuse a graph whose graph A is not a constant."""
    import onnx

    c = ensemble.config
    proto = onnx.load(str(path))
    if "static_graph" not in {init.name for init in proto.graph.initializer}:
        raise ExportError(f"{path.name}: graph A is not the shared buffer static_graph; the static "
                          "parts were recomputed while tracing")
    t, n = c.out_steps, c.num_nodes
    static = {"forecast": [t, n], "st_embedding": [n, c.st_embedding_dim], SPREAD_OUTPUT: [t, n],
              MEMBERS_OUTPUT: [ensemble.members, t, n]}
    for out in proto.graph.output:
        for dim, value in zip(out.type.tensor_type.shape.dim[1:], static[out.name]):
            dim.Clear()
            dim.dim_value = value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def write_torchscript(ensemble: EnsembleHimNet, path: Path, example: tuple[Tensor, ...]) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(ensemble, example, check_trace=False), str(path))


def write_member_weights(checkpoints: list[Checkpoint], path: Path) -> dict[str, Tensor]:
    """``weights.pt`` of an ensemble: every member's official state dict, keys ``members.<i>.<key>``."""
    state = {f"members.{i}.{k}": v.detach().cpu().contiguous()
             for i, c in enumerate(checkpoints) for k, v in c.state_dict.items()}
    torch.save(state, path)
    return state


def choose_order(checkpoints: list[Checkpoint], data: ParityData, work: Path, opset: int,
                 threads: int) -> tuple[str, dict[str, dict[str, float]]]:
    """``training.contraction``'s rule, timed on the ensemble graph itself: K members move the
    balance between the memory-bound "generate" and the pool-first GEMM orders."""
    example = tuple(torch.from_numpy(a) for a in data.take(TRACE_BATCH))

    def write_candidate(order: str, path: Path) -> None:
        write_onnx(build_ensemble(checkpoints, order), path, example, opset)

    return choose_contraction(write_candidate, run_onnx, data, work, threads)


def export_ensemble(checkpoints: list[Checkpoint], out_dir: str | Path, *, names: list[str] | None = None,
                    version: str | None = None, opset: int = 17, parity_data: Any = None,
                    contraction: str = "measure", tolerance: float = DEFAULT_TOLERANCE,
                    rtol: float = DEFAULT_RTOL, threads: int = 2, overwrite: bool = False) -> Manifest:
    """Write the ensemble bundle of ``checkpoints`` (K >= 2, same data and config) to ``out_dir``.

    Options as :func:`training.export.export_bundle`; ``names`` label the members in errors
    (default: member 0, member 1, ...). Raises ExportError and leaves ``out_dir`` untouched
    when the members do not fit together or any check fails.
    """
    out_dir = Path(out_dir)
    names = names or [f"member {i}" for i in range(len(checkpoints))]
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} already exists (pass overwrite=True / --force to replace it)")
    if contraction not in ("measure", *CONTRACTIONS):
        raise ExportError(f"contraction must be 'measure' or one of {', '.join(CONTRACTIONS)}, got {contraction!r}")
    check_members(checkpoints, names)
    first = checkpoints[0]
    data = synthetic_parity_data(first) if parity_data is None else as_parity_data(parity_data, first.config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        timings: dict[str, dict[str, float]] = {}
        if contraction == "measure":
            contraction, timings = choose_order(checkpoints, data, work, opset, threads)
        manifest = _write_bundle(checkpoints, data, work, contraction, timings, version, opset,
                                 tolerance, rtol, threads)
        move_into_place(work, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _write_bundle(checkpoints: list[Checkpoint], data: ParityData, work: Path, contraction: str,
                  timings: dict[str, dict[str, float]], version: str | None, opset: int,
                  tolerance: float, rtol: float, threads: int) -> Manifest:
    ensemble = build_ensemble(checkpoints, contraction)
    example = tuple(torch.from_numpy(a) for a in data.take(TRACE_BATCH))
    write_onnx(ensemble, work / ONNX_FILE, example, opset)
    write_torchscript(ensemble, work / TORCHSCRIPT_FILE, example)
    state = write_member_weights(checkpoints, work / WEIGHTS_FILE)
    write_embeddings(checkpoints[0].build_model(), work / EMBEDDINGS_FILE)  # member 0's, as st_embedding
    parity, per_output = check_ensemble_parity([c.build_model() for c in checkpoints], checkpoints[0],
                                               data, work / ONNX_FILE, work / TORCHSCRIPT_FILE,
                                               tolerance, threads, rtol)
    options = ExportOptions(version, opset, contraction, tolerance, rtol, threads, intervals=False)
    record = export_record(options, contraction, timings, data, weights_digest(state))
    manifest = build_manifest(checkpoints[0], contraction=contraction,
                              files=checksums(work, list(BUNDLE_FILES)), parity=parity, export=record,
                              version=version)
    manifest = dataclasses.replace(manifest, metrics={"members": [jsonable(c.metrics) for c in checkpoints]},
                                   ensemble=ensemble_entry(checkpoints, per_output))
    write_manifest(work, manifest)
    return manifest


def ensemble_entry(checkpoints: list[Checkpoint], per_output: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The manifest's ``ensemble`` entry (``model/bundle.py`` checks its shape)."""
    return {
        "members": len(checkpoints),
        "seeds": [(c.train_settings or {}).get("seed") for c in checkpoints],
        "spread_output": SPREAD_OUTPUT,
        "member_output": MEMBERS_OUTPUT,
        "spread": "standard deviation over members, divisor K (raw units)",
        "st_embedding": "member 0",
        "member_weights_sha256": [weights_digest(c.state_dict)[:12] for c in checkpoints],
        "parity_per_output": per_output,
    }


# --------------------------------------------------------------------------------------------
# Command line: himnet ensemble CHECKPOINT CHECKPOINT [...] --out DIR
# --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", type=Path, nargs="+",
                        help="two or more checkpoints of `himnet train` runs that differ only in --seed")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    parser.add_argument("--version", default=None,
                        help="model version to record (default: first 12 hex digits of the weights' sha256)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--contraction", choices=("measure", *CONTRACTIONS), default="measure",
                        help="contraction order (as himnet export's); 'measure' times every order on the ensemble graph")
    parser.add_argument("--parity-data", type=Path, default=None,
                        help="npz with readings/input_time/target_time (raw units) to check parity on")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="allowed |exported - eager| in raw units, absolute part")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help="relative part: each value may differ by tolerance + rtol·|eager|")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for export checks")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle directory")


USER_ERRORS = (CheckpointError, ExportError, OSError)
USER_ERROR_EXIT = 1


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    checkpoints = [Checkpoint.load(p) for p in args.checkpoints]
    parity_data = load_parity_npz(args.parity_data) if args.parity_data else None
    manifest = export_ensemble(checkpoints, args.out, names=[str(p) for p in args.checkpoints],
                               version=args.version, opset=args.opset, parity_data=parity_data,
                               contraction=args.contraction, tolerance=args.tolerance, rtol=args.rtol,
                               threads=args.threads, overwrite=args.force)
    print(f"wrote {args.out}: ensemble of {manifest.ensemble['members']} {manifest.model_name} "
          f"{manifest.model_version} ({manifest.dataset}, N={manifest.num_nodes}, "
          f"contraction={manifest.export['contraction']})")
    print("parity (max abs diff, raw units): " + json.dumps(manifest.parity))
    return 0
