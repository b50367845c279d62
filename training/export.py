"""``himnet export``: checkpoint -> model bundle (ONNX + TorchScript + weights + embeddings).

The exported graphs are self-contained for serving (see ``model/bundle.py`` for the contract):
raw readings and time features in, raw forecasts and the spatiotemporal embedding out. Scaling
and the broadcast of time features to all nodes happen inside the graph (:class:`ServingHimNet`).

Every export is checked against eager PyTorch (``HimNet.forward`` fed the way training feeds
it) at batch 1 and 16; a difference above the tolerance aborts the export and leaves no bundle.
The bundle is assembled in a temporary directory beside ``out_dir`` and renamed into place only
when everything, parity included, has passed.

Graph shape decisions (measured with ONNX Runtime 1.32, 2 threads, METR-LA preset, N = 207):
- Graph ``A`` and the spatial encoder's generated weights depend on parameters only. They are
  computed once (eval mode, no grad: ``HimNet.static_parts`` caches them) before tracing, so
  they enter both graphs as constants instead of being recomputed on every call.
- The model uses ``matmul`` throughout (no Einsum), which ORT runs as MatMul/Gemm.
- The decoder's ST contraction order is chosen at export by measuring both orders in ORT
  (see :func:`choose_contraction` for the rule and the figures that motivated it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from model.bundle import (
    BUNDLE_FORMAT,
    EMBEDDINGS_FILE,
    INPUT_NAMES,
    ONNX_FILE,
    OUTPUT_NAMES,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    Manifest,
    sha256_file,
    utc_now_iso,
    write_manifest,
)
from model.config import HimNetConfig
from model.himnet import HimNet, adaptive_graph
from model.time_features import time_features
from training.checkpoint import Checkpoint, CheckpointError

TRACE_BATCH = 2  # dynamic batch: never trace at 1 (a size-1 dim can be baked in as a constant)
PARITY_BATCHES = (1, 16)
DEFAULT_TOLERANCE = 1e-4  # absolute part of the allowed |exported - eager|, raw units
# Relative part: float32 rounding differences between ONNX Runtime's and torch's kernels grow
# through the 24 recurrent steps. On six LOS-LOOP models (speeds ~70) ORT differed from eager by
# 1.5e-5 at step 1 rising to 2-4e-4 at step 12 (at most 7.5e-6 relative), about what eager's own
# two contraction orders differ by (7e-5); a fixed 1e-4 refused every one of those real models.
DEFAULT_RTOL = 1e-5
CONTRACTIONS = ("generate", "pool")
MISSING_VALUE = 0.0  # training convention: a raw reading of 0 is a missing reading


class ExportError(RuntimeError):
    """The export could not produce a bundle that computes what the checkpoint computes."""


# --------------------------------------------------------------------------------------------
# The serving graph
# --------------------------------------------------------------------------------------------
class ServingHimNet(nn.Module):
    """HimNet in serving form: raw units in and out, time features per sample, eval semantics.

    forward(readings B×T_in×N, input_time B×T_in×2, target_time B×T_out×2)
        -> (forecast B×T_out×N, st_embedding B×N×d_st)

    It runs ``HimNet.encode`` and then the decoder loop of ``HimNet.forward`` without teacher
    forcing, so the ST embedding computed on the way is returned without encoding twice. The
    export's parity check compares it with ``HimNet.forward`` itself, so a change to the model
    that this loop does not follow fails the export instead of shipping.
    """

    def __init__(self, model: HimNet, scaler_mean: float, scaler_std: float) -> None:
        super().__init__()
        c = model.config
        if c.output_dim != 1 or c.input_dim != 3 or c.ycov_dim != 2:
            raise ExportError("serving export needs output_dim = 1, input_dim = 3 and ycov_dim = 2 "
                              f"(got {c.output_dim}, {c.input_dim}, {c.ycov_dim})")
        if model.training:
            raise ExportError("export a model in eval mode")
        self.model = model
        # Graph A and the spatial weights depend on parameters only: computed once here and held
        # as buffers of this module. The tracers then see them as module state, stored once in the
        # file and shared by every step that reads them; as plain Python attributes they would be
        # traced as a separate constant at every use (a 270 MB ONNX file for METR-LA).
        with torch.no_grad():
            graph, s_params = model.static_parts()  # cached by HimNet (eval mode, no grad)
        own = {id(p) for p in model.parameters()}
        tensors = [graph] + [t for pair in s_params for g in pair for t in g if t is not None]
        for i, t in enumerate(tensors):
            if id(t) not in own:
                self.register_buffer(f"static_{i}", t)  # persistent: the exporters keep only state-dict entries as shared tensors
        self.register_buffer("node_zeros", torch.zeros(1, 1, c.num_nodes, 1))
        self.mean = float(scaler_mean)
        self.std = float(scaler_std)
        self.num_nodes = c.num_nodes
        self.out_steps = c.out_steps

    def forward(self, readings: Tensor, input_time: Tensor, target_time: Tensor) -> tuple[Tensor, Tensor]:
        m, n = self.model, self.num_nodes
        # Broadcasting to the N nodes by adding zeros (one Add in ONNX) rather than expand(-1, ..)
        # (Shape/Equal/Where/Expand per use); the target times are broadcast once, not per step.
        value = ((readings - self.mean) / self.std).unsqueeze(-1)  # B, T_in, N, 1
        x = torch.cat([value, input_time.unsqueeze(2) + self.node_zeros], dim=-1)  # B, T_in, N, 3
        y_cov = target_time.unsqueeze(2) + self.node_zeros  # B, T_out, N, 2
        h = m.encode(x)  # B, N, H
        e_st = m.st_embedding(h)  # B, N, d_st
        graph_st = adaptive_graph(e_st)
        params = m.decoder.generate(e_st)
        states = [h] * len(m.decoder.cells)
        go = h.new_zeros(h.shape[0], n, 1)
        outputs = []
        for t in range(self.out_steps):
            inp = torch.cat([go, y_cov[:, t]], dim=-1)
            for i, cell in enumerate(m.decoder.cells):
                states[i] = cell(inp, states[i], graph_st, params[i])
                inp = states[i]
            go = m.out_proj(inp)
            outputs.append(go)
        forecast = torch.cat(outputs, dim=-1).transpose(1, 2)  # B, T_out, N
        return forecast * self.std + self.mean, e_st


def eager_reference(model: HimNet, scaler_mean: float, scaler_std: float, readings: np.ndarray,
                    input_time: np.ndarray, target_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the checkpoint computes, built the way training feeds the model (independent of
    :class:`ServingHimNet`): x = [z-scored value, tod, dow] per node, ``HimNet.forward``."""
    b, t_in, n = readings.shape
    x = np.empty((b, t_in, n, 3), np.float32)
    x[..., 0] = (readings - np.float32(scaler_mean)) / np.float32(scaler_std)
    x[..., 1:] = input_time[:, :, None, :]
    y_cov = np.broadcast_to(target_time[:, :, None, :], (b, target_time.shape[1], n, 2)).copy()
    with torch.no_grad():
        xt, yt = torch.from_numpy(x), torch.from_numpy(y_cov)
        out = model(xt, yt)[..., 0] * scaler_std + scaler_mean
        e_st = model.st_embedding(model.encode(xt))
    return out.numpy(), e_st.numpy()


# --------------------------------------------------------------------------------------------
# Inputs for the parity check
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParityData:
    readings: np.ndarray  # B × T_in × N, raw units
    input_time: np.ndarray  # B × T_in × 2
    target_time: np.ndarray  # B × T_out × 2
    source: str

    def take(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first ``batch`` samples (cycled when fewer are available)."""
        idx = np.arange(batch) % self.readings.shape[0]
        return (np.ascontiguousarray(self.readings[idx]), np.ascontiguousarray(self.input_time[idx]),
                np.ascontiguousarray(self.target_time[idx]))


def synthetic_parity_data(checkpoint: Checkpoint, batch: int = 16, seed: int = 0) -> ParityData:
    """Plausible raw windows: readings around the training mean with the training spread, about
    5 % of them missing (= missing value), consecutive real timestamps at the checkpoint's
    interval encoded by ``model.time_features`` (the encoding serving uses)."""
    c = checkpoint.config
    rng = np.random.default_rng(seed)
    readings = checkpoint.scaler_mean + checkpoint.scaler_std * rng.standard_normal(
        (batch, c.in_steps, c.num_nodes))
    readings = np.maximum(readings, 0.0)
    readings[rng.random(readings.shape) < 0.05] = MISSING_VALUE
    step = np.timedelta64(int(round(checkpoint.interval_minutes * 60)), "s")
    base = np.datetime64("2024-01-01T00:00:00", "s")  # a Monday
    starts = base + rng.integers(0, 14 * 86400 // int(step.astype(int)), batch) * step
    times = np.stack([time_features(s + np.arange(c.in_steps + c.out_steps) * step, c.steps_per_day)
                      for s in starts])
    return ParityData(readings.astype(np.float32), times[:, :c.in_steps].copy(),
                      times[:, c.in_steps:].copy(), "synthetic")


def _as_parity_data(data: Any, config: HimNetConfig) -> ParityData:
    if isinstance(data, ParityData):
        pd = data
    elif isinstance(data, Mapping):
        pd = ParityData(*(np.asarray(data[k], np.float32) for k in INPUT_NAMES), source="given")
    elif isinstance(data, Sequence) and len(data) == 3:
        pd = ParityData(*(np.asarray(a, np.float32) for a in data), source="given")
    else:
        raise ExportError("parity_data must be a ParityData, a mapping with readings/input_time/"
                          "target_time, or a (readings, input_time, target_time) tuple")
    b = pd.readings.shape[0]
    want = {"readings": (b, config.in_steps, config.num_nodes), "input_time": (b, config.in_steps, 2),
            "target_time": (b, config.out_steps, 2)}
    for name, shape in want.items():
        if getattr(pd, name).shape != shape or b < 1:
            raise ExportError(f"parity_data {name} has shape {getattr(pd, name).shape}, expected {shape}")
    return pd


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
    return ServingHimNet(model, checkpoint.scaler_mean, checkpoint.scaler_std)


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


def ort_session(path: Path, threads: int = 2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run_ort(session, inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    out = session.run(list(OUTPUT_NAMES), dict(zip(INPUT_NAMES, inputs)))
    return out[0], out[1]


def _run_ts(module, inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = module(*(torch.from_numpy(a) for a in inputs))
    return out[0].numpy(), out[1].numpy()


def _max_diff(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray],
              backend: str, batch: int, rtol: float = 0.0) -> tuple[float, float]:
    """(max |got - want|, max (|got - want| - rtol·|want|)) over both outputs.

    The second is what the absolute tolerance is compared with: the check passes when every
    element satisfies |got - want| <= tolerance + rtol·|want| (numpy's ``allclose`` rule).
    """
    worst, worst_excess = 0.0, -math.inf
    for name, g, w in zip(OUTPUT_NAMES, got, want):
        if g.shape != w.shape:
            raise ExportError(f"{backend} at batch {batch}: {name} has shape {g.shape}, eager {w.shape}")
        if not g.size:
            continue
        diff = np.abs(g.astype(np.float64) - w)
        if not np.isfinite(diff).all():
            raise ExportError(f"{backend} at batch {batch}: {name} is not finite")
        worst = max(worst, float(diff.max()))
        worst_excess = max(worst_excess, float((diff - rtol * np.abs(w)).max()))
    return worst, worst_excess


def check_parity(model: HimNet, checkpoint: Checkpoint, data: ParityData, onnx_path: Path,
                 ts_path: Path, tolerance: float, threads: int,
                 rtol: float = DEFAULT_RTOL) -> dict[str, dict[str, float]]:
    """Max |exported - eager| per backend and batch size; raises ExportError when any element
    exceeds ``tolerance + rtol·|eager|``."""
    session = ort_session(onnx_path, threads)
    scripted = torch.jit.load(str(ts_path))
    parity: dict[str, dict[str, float]] = {"onnx": {}, "torchscript": {}}
    for batch in PARITY_BATCHES:
        inputs = data.take(batch)
        want = eager_reference(model, checkpoint.scaler_mean, checkpoint.scaler_std, *inputs)
        for backend, run in (("onnx", lambda: _run_ort(session, inputs)),
                             ("torchscript", lambda: _run_ts(scripted, inputs))):
            diff, excess = _max_diff(run(), want, backend, batch, rtol)
            if not excess <= tolerance:
                raise ExportError(f"{backend} export differs from eager PyTorch by {diff:.3g} (raw units) "
                                  f"at batch {batch}; tolerance {tolerance:g} + {rtol:g}·|eager|. "
                                  "No bundle written.")
            parity[backend][str(batch)] = diff
    return parity


def _median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def choose_contraction(checkpoint: Checkpoint, data: ParityData, workdir: Path, opset: int,
                       threads: int) -> tuple[str, dict[str, dict[str, float]]]:
    """Export the graph with each decoder contraction order and time it in ONNX Runtime.

    Rule: batch-1 latency decides (a forecast request is one window of all sensors); when the
    two are within 10 % at batch 1, batch 16 decides. Both orders compute the same function, so
    the choice only moves time, and measuring at export keeps the choice right for other
    presets (N, H, d_st) and machines.

    Why it is measured rather than fixed: on the 2-core dev box (METR-LA preset, fixture
    weights, ORT 1.32, 2 threads, load ≈ 2 from other jobs) "generate" took 20.8 ms at batch 1
    and 322 ms at batch 16, "pool" 26.6 ms and 313 ms: "generate" wins where serving lives
    (batch 1: its per-step work is a mat-vec over 14 MB of weights, memory-bound but 16× fewer
    FLOPs than "pool"'s GEMM), the two tie at batch 16. Under heavier load the margin shrank
    (120 vs 124 ms at load ≈ 5). Memory: "generate" holds B·N·KC·O decoder weights (≈ 21 MB at
    batch 1, ≈ 340 MB at batch 16 for METR-LA), "pool" never more than B·N·D·KC.
    """
    timings: dict[str, dict[str, float]] = {}
    for contraction in CONTRACTIONS:
        serving = build_serving(checkpoint, contraction)
        path = workdir / f"candidate-{contraction}.onnx"
        write_onnx(serving, path, _example_inputs(data, TRACE_BATCH), opset)
        session = ort_session(path, threads)
        timings[contraction] = {}
        for batch, repeats in ((1, 15), (16, 5)):
            inputs = data.take(batch)
            timings[contraction][str(batch)] = round(_median_ms(lambda: _run_ort(session, inputs), repeats), 3)
        del session
        path.unlink()
    g, p = timings["generate"], timings["pool"]
    if abs(g["1"] - p["1"]) <= 0.1 * min(g["1"], p["1"]):
        choice = "generate" if g["16"] <= p["16"] else "pool"
    else:
        choice = "generate" if g["1"] < p["1"] else "pool"
    return choice, timings


# --------------------------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------------------------
def weights_digest(state_dict: Mapping[str, Tensor]) -> str:
    """sha256 over keys, dtypes, shapes and bytes of the tensors: a stable model version."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    """Metrics and the like as plain JSON (numpy/torch scalars to Python, NaN/inf to None)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (Tensor, np.ndarray)):
        return _jsonable(np.asarray(value.tolist() if isinstance(value, Tensor) else value).tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def write_embeddings(model: HimNet, path: Path) -> None:
    with torch.no_grad():
        arrays = {
            "node_embedding": model.node_embedding.detach().cpu().numpy(),
            "adjacency": adaptive_graph(model.node_embedding).cpu().numpy(),
        }
        if model.uses_time_tables:
            arrays["tod_embedding"] = model.tod_embedding.weight.detach().cpu().numpy()
            arrays["dow_embedding"] = model.dow_embedding.weight.detach().cpu().numpy()
    np.savez(path, **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()})


def export_bundle(checkpoint: Checkpoint, out_dir: str | Path, *, version: str | None = None,
                  opset: int = 17, parity_data: Any = None, contraction: str = "measure",
                  tolerance: float = DEFAULT_TOLERANCE, rtol: float = DEFAULT_RTOL, threads: int = 2,
                  overwrite: bool = False) -> Manifest:
    """Write the bundle for ``checkpoint`` to ``out_dir`` and return its manifest.

    ``parity_data``: real windows to check the exported graphs on (``ParityData``, a mapping with
    ``readings``/``input_time``/``target_time`` in raw units, or such a tuple); default: synthetic
    windows from the checkpoint's scaler and time settings. ``contraction``: "measure" (time both
    decoder orders in ONNX Runtime, keep the faster), "generate" or "pool". Raises ExportError
    (and leaves ``out_dir`` untouched) when any check fails.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} already exists (pass overwrite=True / --force to replace it)")
    if contraction not in ("measure", *CONTRACTIONS):
        raise ExportError(f"contraction must be 'measure', 'generate' or 'pool', got {contraction!r}")
    config = checkpoint.config
    eager = checkpoint.build_model()  # the checkpoint's own config, eval mode
    data = synthetic_parity_data(checkpoint) if parity_data is None else _as_parity_data(parity_data, config)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        timings: dict[str, dict[str, float]] = {}
        if contraction == "measure":
            contraction, timings = choose_contraction(checkpoint, data, work, opset, threads)
        serving = build_serving(checkpoint, contraction)
        example = _example_inputs(data, TRACE_BATCH)
        write_onnx(serving, work / ONNX_FILE, example, opset)
        write_torchscript(serving, work / TORCHSCRIPT_FILE, example)
        state = {k: v.detach().cpu().contiguous() for k, v in serving.model.state_dict().items()}
        torch.save(state, work / WEIGHTS_FILE)
        write_embeddings(serving.model, work / EMBEDDINGS_FILE)
        parity = check_parity(eager, checkpoint, data, work / ONNX_FILE, work / TORCHSCRIPT_FILE,
                              tolerance, threads, rtol)

        import onnxruntime

        files = {name: sha256_file(work / name)
                 for name in (ONNX_FILE, TORCHSCRIPT_FILE, WEIGHTS_FILE, EMBEDDINGS_FILE)}
        manifest = Manifest(
            format_version=BUNDLE_FORMAT,
            model_name="himnet",
            model_version=version or weights_digest(state)[:12],
            dataset=checkpoint.dataset,
            created_at=utc_now_iso(),
            config=config.replace(contraction=contraction).to_dict(),
            num_nodes=config.num_nodes,
            in_steps=config.in_steps,
            out_steps=config.out_steps,
            interval_minutes=float(checkpoint.interval_minutes),
            steps_per_day=config.steps_per_day,
            timezone=checkpoint.timezone,
            sensor_ids=[str(s) for s in checkpoint.sensor_ids],
            coords=None if checkpoint.coords is None else [[float(a), float(b)] for a, b in checkpoint.coords],
            scaler_mean=float(checkpoint.scaler_mean),
            scaler_std=float(checkpoint.scaler_std),
            missing_value=MISSING_VALUE,
            st_embedding_dim=config.st_embedding_dim,
            metrics=_jsonable(checkpoint.metrics),
            parity=parity,
            files=files,
            export={
                "opset": opset,
                "trace_batch": TRACE_BATCH,
                "contraction": contraction,
                "contraction_latency_ms": timings,
                "parity_tolerance": tolerance,
                "parity_rtol": rtol,
                "parity_data": data.source,
                "torch_version": torch.__version__,
                "onnxruntime_version": onnxruntime.__version__,
                "weights_sha256": weights_digest(state),
            },
        )
        write_manifest(work, manifest)
        _move_into_place(work, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _move_into_place(work: Path, out_dir: Path, overwrite: bool) -> None:
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


def load_parity_npz(path: str | Path) -> ParityData:
    with np.load(path, allow_pickle=False) as d:
        missing = [k for k in INPUT_NAMES if k not in d.files]
        if missing:
            raise ExportError(f"{path}: lacks {missing} (needs {list(INPUT_NAMES)})")
        return ParityData(*(np.asarray(d[k], np.float32) for k in INPUT_NAMES), source=str(path))


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
                        help="decoder contraction order; 'measure' times both in ONNX Runtime")
    parser.add_argument("--parity-data", type=Path, default=None,
                        help="npz with readings/input_time/target_time (raw units) to check parity on; "
                             "default: synthetic windows from the checkpoint's scaler")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="allowed |exported - eager| in raw units, absolute part")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help="relative part: each forecast may differ by tolerance + rtol·|eager|")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for export checks")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle directory")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    try:
        checkpoint = Checkpoint.load(args.checkpoint)
        parity_data = load_parity_npz(args.parity_data) if args.parity_data else None
        manifest = export_bundle(checkpoint, args.out, version=args.version, opset=args.opset,
                                 parity_data=parity_data, contraction=args.contraction,
                                 tolerance=args.tolerance, rtol=args.rtol, threads=args.threads,
                                 overwrite=args.force)
    except (CheckpointError, ExportError, OSError) as exc:
        print(f"himnet export: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {manifest.model_name} {manifest.model_version} ({manifest.dataset}, "
          f"N={manifest.num_nodes}, contraction={manifest.export['contraction']})")
    print("parity (max abs diff, raw units): " + json.dumps(manifest.parity))
    return 0
