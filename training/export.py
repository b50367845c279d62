"""``himnet export``: checkpoint -> model bundle (ONNX + TorchScript + weights + embeddings).

The exported graphs are self-contained for serving (see ``model/bundle.py`` for the contract):
raw readings and time features in, raw forecasts and the spatiotemporal embedding out. Scaling
and the broadcast of time features to all nodes happen inside the graph
(``model.serving.ServingHimNet``).

Every export is checked against eager PyTorch (``HimNet.forward`` fed the way training feeds
it, ``training/parity.py``) at batch 1 and 16; a difference above the tolerance aborts the export and leaves no bundle.
The bundle is assembled in a temporary directory beside ``out_dir`` and renamed into place only
when everything, parity included, has passed.

Graph shape decisions (measured with ONNX Runtime 1.32, 2 threads, METR-LA preset, N = 207):
- Graph ``A`` and the spatial encoder's generated weights depend on parameters only. They are
  computed once (eval mode, no grad: ``HimNet.static_parts`` caches them) before tracing, so
  they enter both graphs as constants instead of being recomputed on every call.
- The model uses ``matmul`` throughout (no Einsum), which ORT runs as MatMul/Gemm.
- The contraction order of the per-node convolutions is chosen at export by timing every order
  in ORT (:func:`choose_order`; the rule is ``training/contraction.py``'s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model.bundle import (
    BUNDLE_FILES,
    EMBEDDINGS_FILE,
    INPUT_NAMES,
    ONNX_FILE,
    OUTPUT_NAMES,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    Manifest,
    checksums,
    write_manifest,
)
from model.bundle_files import weights_digest, write_embeddings, write_weights
from model.config import CONTRACTIONS
from model.himnet import HimNet
from model.intervals import INTERVALS_FILE, write_intervals
from model.serving import ServingConfigError, ServingHimNet
from training.checkpoint import Checkpoint, CheckpointError
from training.contraction import choose_contraction
from training.manifest import build_manifest
from training.parity import (
    DEFAULT_RTOL,
    DEFAULT_TOLERANCE,
    ExportError,
    ParityData,
    as_parity_data,
    check_parity,
    load_parity_npz,
    ort_session,
    run_ort,
    synthetic_parity_data,
)

TRACE_BATCH = 2  # dynamic batch: never trace at 1 (a size-1 dim can be baked in as a constant)


@dataclass(frozen=True)
class ExportOptions:
    """How to export; the defaults are ``himnet export``'s."""

    version: str | None = None  # model version to record; default: weights digest
    opset: int = 17
    contraction: str = "measure"  # "measure" (time every order in ORT) or one of CONTRACTIONS
    tolerance: float = DEFAULT_TOLERANCE
    rtol: float = DEFAULT_RTOL
    threads: int = 2
    intervals: bool = True  # calibrate conformal intervals on the validation split
    calibration_data: Any = None  # SensorData to calibrate on; default: re-read the training data


# --------------------------------------------------------------------------------------------
# Writing and checking the graphs
# --------------------------------------------------------------------------------------------
def _example_inputs(data: ParityData, batch: int) -> tuple[Tensor, Tensor, Tensor]:
    return tuple(torch.from_numpy(a) for a in data.take(batch))  # type: ignore[return-value]


def build_serving(checkpoint: Checkpoint, contraction: str) -> ServingHimNet:
    """Eval-mode serving module with the static parts (A, spatial weights) already cached."""
    model = HimNet(checkpoint.config.replace(contraction=contraction))
    model.load_state_dict(checkpoint.state_dict)
    model.eval()
    try:
        scaler = checkpoint.scaler()
        return ServingHimNet(model, scaler.mean, scaler.std, log1p=scaler.log1p)
    except ServingConfigError as exc:
        raise ExportError(str(exc)) from exc


def write_onnx(serving: ServingHimNet, path: Path, example: tuple[Tensor, ...], opset: int) -> None:
    dynamic = {name: {0: "batch"} for name in (*INPUT_NAMES, *OUTPUT_NAMES)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about Python ints; parity is the check
        torch.onnx.export(serving, example, str(path), dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          dynamic_axes=dynamic, do_constant_folding=True,
                          # EVAL would call model.train(False), which drops HimNet's cache of the
                          # static parts; PRESERVE keeps them, so they are traced as constants.
                          training=torch.onnx.TrainingMode.PRESERVE)
    _check_and_declare_outputs(path, serving)


def _check_and_declare_outputs(path: Path, serving: ServingHimNet) -> None:
    """Write the outputs' static dims into the graph signature.

    The tracer derives N inside the graph from ``x.shape`` (``new_zeros(b, n, H)``), so the
    exporter declares the outputs as ``[batch, T_out, <symbol>]``. N, T_out and d_st are fixed by
    the model; declaring them lets the runtime check the graph against the manifest before it
    runs anything. (The parity check runs the written file, so a wrong declaration fails there.)
    """
    import onnx

    c = serving.model.config
    proto = onnx.load(str(path))
    if "static_0" not in {init.name for init in proto.graph.initializer}:
        # HimNet's cache was dropped during tracing (train()/to() on the model): graph A and the
        # spatial weights were traced again, as one constant per use. Refuse such a file.
        raise ExportError(f"{path.name}: graph A is not the shared buffer static_0; the static parts "
                          "were recomputed while tracing")
    static = {"forecast": [c.out_steps, c.num_nodes], "st_embedding": [c.num_nodes, c.st_embedding_dim]}
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        for dim, value in zip(dims[1:], static[out.name]):
            dim.Clear()
            dim.dim_value = value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def write_torchscript(serving: ServingHimNet, path: Path, example: tuple[Tensor, ...]) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(serving, example, check_trace=False)
    torch.jit.save(traced, str(path))


def choose_order(checkpoint: Checkpoint, data: ParityData, workdir: Path, opset: int,
                 threads: int) -> tuple[str, dict[str, dict[str, float]]]:
    """Time the graph in each contraction order in ONNX Runtime and pick one
    (``training.contraction``'s rule).

    Figures that motivated measuring (2-core dev box, ORT 1.32, 2 threads, batch 1): METR-LA
    preset (N = 207) "generate" 20.9 ms, "pool" 20.8, "pool_all" 23.1; PEMS07 sizes (N = 883)
    125, 124 and 113 ms: "generate" is a mat-vec over generated per-node weights, memory-bound
    and 16× fewer FLOPs than the pool-first GEMMs, so it wins while those weights sit in cache
    and loses once they stream from memory. Memory: "generate" holds B·N·KC·O decoder weights
    (≈ 21 MB at batch 1 for METR-LA), the pool-first orders never more than B·N·D·O.
    """
    example = _example_inputs(data, TRACE_BATCH)

    def write_candidate(order: str, path: Path) -> None:
        write_onnx(build_serving(checkpoint, order), path, example, opset)

    return choose_contraction(write_candidate, run_ort, data, workdir, threads)


# --------------------------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------------------------
def export_bundle(checkpoint: Checkpoint, out_dir: str | Path, *, version: str | None = None,
                  opset: int = 17, parity_data: Any = None, contraction: str = "measure",
                  tolerance: float = DEFAULT_TOLERANCE, rtol: float = DEFAULT_RTOL, threads: int = 2,
                  overwrite: bool = False, intervals: bool = True,
                  calibration_data: Any = None) -> Manifest:
    """Write the bundle for ``checkpoint`` to ``out_dir`` and return its manifest.

    ``parity_data``: real windows to check the exported graphs on (``ParityData``, a mapping with
    ``readings``/``input_time``/``target_time`` in raw units, or such a tuple); default: synthetic
    windows from the checkpoint's scaler and time settings. ``contraction``: "measure" (time every
    order in ONNX Runtime, keep the rule's pick) or one of ``CONTRACTIONS``. Raises ExportError
    (and leaves ``out_dir`` untouched) when any check fails.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} already exists (pass overwrite=True / --force to replace it)")
    if contraction not in ("measure", *CONTRACTIONS):
        raise ExportError(f"contraction must be 'measure' or one of {', '.join(CONTRACTIONS)}, got {contraction!r}")
    options = ExportOptions(version, opset, contraction, tolerance, rtol, threads, intervals,
                            calibration_data)
    eager = checkpoint.build_model()  # the checkpoint's own config, eval mode
    data = synthetic_parity_data(checkpoint) if parity_data is None else as_parity_data(parity_data, checkpoint.config)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        manifest = _write_bundle(checkpoint, eager, data, work, options)
        move_into_place(work, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _write_bundle(checkpoint: Checkpoint, eager: HimNet, data: ParityData, work: Path,
                  options: ExportOptions) -> Manifest:
    """Every bundle file into ``work``, parity checked before the manifest is written."""
    contraction, timings = options.contraction, {}
    if contraction == "measure":
        contraction, timings = choose_order(checkpoint, data, work, options.opset, options.threads)
    serving = build_serving(checkpoint, contraction)
    example = _example_inputs(data, TRACE_BATCH)
    write_onnx(serving, work / ONNX_FILE, example, options.opset)
    write_torchscript(serving, work / TORCHSCRIPT_FILE, example)
    state = write_weights(serving.model, work / WEIGHTS_FILE)
    write_embeddings(serving.model, work / EMBEDDINGS_FILE)
    parity = check_parity(eager, checkpoint, data, work / ONNX_FILE, work / TORCHSCRIPT_FILE,
                          options.tolerance, options.threads, options.rtol)
    record = export_record(options, contraction, timings, data, weights_digest(state))
    names, calibration = list(BUNDLE_FILES), None
    if options.intervals and (options.calibration_data is not None
                              or (checkpoint.train_settings or {}).get("data")):
        # a checkpoint that does not record its data set gets no intervals (nothing to calibrate on)
        calibration = _write_intervals(checkpoint, work, options.calibration_data)
        names.append(INTERVALS_FILE)
    manifest = build_manifest(checkpoint, contraction=contraction, files=checksums(work, names),
                              parity=parity, export=record, version=options.version,
                              intervals=calibration)
    write_manifest(work, manifest)
    return manifest


def _write_intervals(checkpoint: Checkpoint, work: Path, data: Any) -> dict[str, Any]:
    """Calibrate the intervals (``training/calibration.py``) into ``work``; the manifest record."""
    from training.calibration import calibrate_checkpoint
    from training.datasets import DatasetError

    try:
        table, record = calibrate_checkpoint(checkpoint, data)
    except (DatasetError, ValueError, CheckpointError) as exc:
        raise ExportError(f"cannot calibrate prediction intervals: {exc} (pass --no-intervals "
                          "to export without them)") from exc
    write_intervals(work / INTERVALS_FILE, table)
    return {"file": INTERVALS_FILE, **record}


def export_record(options: ExportOptions, contraction: str, timings: dict[str, dict[str, float]],
                  data: ParityData, weights_sha256: str) -> dict[str, Any]:
    """The manifest's ``export`` entry: how this bundle was made."""
    import onnxruntime

    return {
        "opset": options.opset,
        "trace_batch": TRACE_BATCH,
        "contraction": contraction,
        "contraction_latency_ms": timings,
        "parity_tolerance": options.tolerance,
        "parity_rtol": options.rtol,
        "parity_data": data.source,
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "weights_sha256": weights_sha256,
    }


def move_into_place(work: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished bundle directory into place (replacing only when asked)."""
    os.chmod(work, 0o755)  # mkdtemp makes it 0700
    if out_dir.exists():
        if not overwrite:
            raise ExportError(f"{out_dir} appeared while exporting; not replacing it")
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(work, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, out_dir)



# --------------------------------------------------------------------------------------------
# Command line: himnet export CHECKPOINT --out DIR [--version V]
# --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint written by `himnet train`")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    parser.add_argument("--version", default=None,
                        help="model version to record (default: first 12 hex digits of the weights' sha256)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--contraction", choices=("measure", *CONTRACTIONS), default="measure",
                        help="contraction order of the per-node convolutions (generate: generated weights; pool: "
                             "the decoder pool-first; pool_all: the spatial encoder too); 'measure' times "
                             "every order in ONNX Runtime")
    parser.add_argument("--parity-data", type=Path, default=None,
                        help="npz with readings/input_time/target_time (raw units) to check parity on; "
                             "default: synthetic windows from the checkpoint's scaler")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="allowed |exported - eager| in raw units, absolute part")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help="relative part: each forecast may differ by tolerance + rtol·|eager|")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for export checks")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle directory")
    parser.add_argument("--no-intervals", action="store_true",
                        help="do not calibrate prediction intervals (on the validation split)")


USER_ERRORS = (CheckpointError, ExportError, OSError)
USER_ERROR_EXIT = 1  # export has always answered a refused bundle with exit code 1


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    checkpoint = Checkpoint.load(args.checkpoint)
    parity_data = load_parity_npz(args.parity_data) if args.parity_data else None
    manifest = export_bundle(checkpoint, args.out, version=args.version, opset=args.opset,
                             parity_data=parity_data, contraction=args.contraction,
                             tolerance=args.tolerance, rtol=args.rtol, threads=args.threads,
                             overwrite=args.force, intervals=not args.no_intervals)
    print(f"wrote {args.out}: {manifest.model_name} {manifest.model_version} ({manifest.dataset}, "
          f"N={manifest.num_nodes}, contraction={manifest.export['contraction']})")
    print("parity (max abs diff, raw units): " + json.dumps(manifest.parity))
    return 0
