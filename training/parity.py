"""The export's parity check: exported graphs against eager PyTorch, on the same raw windows.

The reference is ``HimNet.forward`` (training's path, teacher forcing off) on inputs scaled by
the training :class:`~training.windows.Scaler` and assembled by ``model.serving.assemble_inputs``;
the exported file is run by its real runtime (ONNX Runtime, TorchScript). A difference above
``tolerance + rtol·|eager|`` refuses the export.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.bundle import INPUT_NAMES, OUTPUT_NAMES
from model.config import HimNetConfig
from model.himnet import HimNet
from model.scaling import gap_readings
from model.serving import assemble_inputs
from model.time_features import time_features
from training.checkpoint import Checkpoint
from training.windows import Scaler

PARITY_BATCHES = (1, 16)
DEFAULT_TOLERANCE = 1e-4  # absolute part of the allowed |exported - eager|, raw units
# Relative part: float32 rounding differences between ONNX Runtime's and torch's kernels grow
# through the 24 recurrent steps. On six LOS-LOOP models (speeds ~70) ORT differed from eager by
# 1.5e-5 at step 1 rising to 2-4e-4 at step 12 (at most 7.5e-6 relative), about what eager's own
# two contraction orders differ by (7e-5); a fixed 1e-4 refused every one of those real models.
DEFAULT_RTOL = 1e-5

Outputs = tuple[np.ndarray, np.ndarray]  # forecast B × T_out × N, st_embedding B × N × d_st


class ExportError(RuntimeError):
    """The export could not produce a bundle that computes what the checkpoint computes."""


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
    """Plausible raw windows: readings around the training mean with the training spread (per
    sensor, through the transform, where the scaler has them), about 5 % of them missing (= the
    gap reading), consecutive real timestamps at the checkpoint's interval encoded by
    ``model.time_features`` (the encoding serving uses)."""
    c = checkpoint.config
    rng = np.random.default_rng(seed)
    scaler = checkpoint.scaler()
    readings = scaler.inverse(rng.standard_normal((batch, c.in_steps, c.num_nodes)))
    readings = np.maximum(readings, 0.0)
    gap = gap_readings(checkpoint.rule, scaler.mean, scaler.log1p)  # float, or N under per_sensor
    readings = np.where(rng.random(readings.shape) < 0.05, gap, readings)
    step = np.timedelta64(int(round(checkpoint.interval_minutes * 60)), "s")
    base = np.datetime64("2024-01-01T00:00:00", "s")  # a Monday
    starts = base + rng.integers(0, 14 * 86400 // int(step.astype(int)), batch) * step
    times = np.stack([time_features(s + np.arange(c.in_steps + c.out_steps) * step, c.steps_per_day)
                      for s in starts])
    return ParityData(readings.astype(np.float32), times[:, :c.in_steps].copy(),
                      times[:, c.in_steps:].copy(), "synthetic")


def as_parity_data(data: Any, config: HimNetConfig) -> ParityData:
    """``ParityData``, a mapping with readings/input_time/target_time, or such a tuple, checked
    against the model's shapes."""
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


def load_parity_npz(path: str | Path) -> ParityData:
    with np.load(path, allow_pickle=False) as d:
        missing = [k for k in INPUT_NAMES if k not in d.files]
        if missing:
            raise ExportError(f"{path}: lacks {missing} (needs {list(INPUT_NAMES)})")
        return ParityData(*(np.asarray(d[k], np.float32) for k in INPUT_NAMES), source=str(path))


def eager_reference(model: HimNet, scaler_mean: float | np.ndarray, scaler_std: float | np.ndarray,
                    readings: np.ndarray, input_time: np.ndarray, target_time: np.ndarray,
                    log1p: bool = False) -> Outputs:
    """What the checkpoint computes, fed the way training feeds it: the training scaler (global
    or per sensor, with its transform), ``assemble_inputs`` and ``HimNet.forward`` (not the
    served module's own forward)."""
    if np.ndim(scaler_mean) == 0:
        scaler = Scaler(float(scaler_mean), float(scaler_std), log1p)
    else:
        scaler = Scaler(np.asarray(scaler_mean), np.asarray(scaler_std), log1p)
    r, ti, tt = (torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in (readings, input_time, target_time))
    with torch.no_grad():
        x, y_cov = assemble_inputs(scaler.transform(r), ti, tt)  # B, T_in, N, 3; B, T_out, N, 2
        out = scaler.inverse(model(x, y_cov)[..., 0])  # B, T_out, N raw units
        e_st = model.st_embedding(model.encode(x))  # B, N, d_st
    return out.numpy(), e_st.numpy()


def ort_session(path: Path, threads: int = 2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_ort(session, inputs: tuple[np.ndarray, ...]) -> Outputs:
    out = session.run(list(OUTPUT_NAMES), dict(zip(INPUT_NAMES, inputs)))
    return out[0], out[1]


def run_ts(module, inputs: tuple[np.ndarray, ...]) -> Outputs:
    with torch.no_grad():
        out = module(*(torch.from_numpy(a) for a in inputs))
    return out[0].numpy(), out[1].numpy()


def max_diff(got: Outputs, want: Outputs, backend: str, batch: int, rtol: float = 0.0) -> tuple[float, float]:
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
    scaler = checkpoint.scaler()
    for batch in PARITY_BATCHES:
        inputs = data.take(batch)
        want = eager_reference(model, scaler.mean, scaler.std, *inputs, log1p=scaler.log1p)
        for backend, run in (("onnx", lambda: run_ort(session, inputs)),
                             ("torchscript", lambda: run_ts(scripted, inputs))):
            diff, excess = max_diff(run(), want, backend, batch, rtol)
            if not excess <= tolerance:
                raise ExportError(f"{backend} export differs from eager PyTorch by {diff:.3g} (raw units) "
                                  f"at batch {batch}; tolerance {tolerance:g} + {rtol:g}·|eager|. "
                                  "No bundle written.")
            parity[backend][str(batch)] = diff
    return parity
