"""Parity of an ensemble bundle: every member, the mean, the spread and the embedding of the
exported graphs against each member's eager ``HimNet.forward`` (``training/parity.py``'s
reference and rule, applied output by output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.bundle import INPUT_NAMES
from model.ensemble import ENSEMBLE_OUTPUTS
from model.himnet import HimNet
from training.checkpoint import Checkpoint
from training.parity import PARITY_BATCHES, ExportError, ParityData, eager_reference, ort_session

Outputs = tuple[np.ndarray, ...]  # forecast, st_embedding, spread, member_forecasts (ENSEMBLE_OUTPUTS)


def eager_ensemble(models: list[HimNet], checkpoint: Checkpoint, inputs: tuple[np.ndarray, ...]) -> Outputs:
    """What the members compute one by one (training's path), combined as the graph combines them."""
    each = [eager_reference(m, checkpoint.scaler_mean, checkpoint.scaler_std, *inputs) for m in models]
    members = np.stack([f for f, _ in each], axis=1).astype(np.float64)  # B, K, T_out, N
    mean = members.mean(axis=1)
    spread = np.sqrt(((members - mean[:, None]) ** 2).mean(axis=1))  # divisor K
    return mean, each[0][1], spread, members


def run_onnx(session, inputs: tuple[np.ndarray, ...]) -> Outputs:
    return tuple(session.run(list(ENSEMBLE_OUTPUTS), dict(zip(INPUT_NAMES, inputs))))


def run_torchscript(module, inputs: tuple[np.ndarray, ...]) -> Outputs:
    with torch.no_grad():
        return tuple(t.numpy() for t in module(*(torch.from_numpy(a) for a in inputs)))


def excess(got: Outputs, want: Outputs, backend: str, batch: int,
           rtol: float) -> dict[str, tuple[float, float]]:
    """Per output: (max |got - want|, max (|got - want| - rtol·|want|))."""
    out = {}
    for name, g, w in zip(ENSEMBLE_OUTPUTS, got, want):
        if g.shape != w.shape:
            raise ExportError(f"{backend} at batch {batch}: {name} has shape {g.shape}, eager {w.shape}")
        diff = np.abs(g.astype(np.float64) - w)
        if not np.isfinite(diff).all():
            raise ExportError(f"{backend} at batch {batch}: {name} is not finite")
        out[name] = (float(diff.max()), float((diff - rtol * np.abs(w)).max()))
    return out


def check_ensemble_parity(models: list[HimNet], checkpoint: Checkpoint, data: ParityData,
                          onnx_path: Path, ts_path: Path, tolerance: float, threads: int,
                          rtol: float) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """(worst diff per backend and batch — the manifest's ``parity`` —, worst diff per backend
    and output). Raises ExportError naming the output when any element is out of tolerance."""
    session = ort_session(onnx_path, threads)
    scripted = torch.jit.load(str(ts_path))
    parity: dict[str, dict[str, float]] = {"onnx": {}, "torchscript": {}}
    per_output: dict[str, dict[str, float]] = {"onnx": {}, "torchscript": {}}
    for batch in PARITY_BATCHES:
        inputs = data.take(batch)
        want = eager_ensemble(models, checkpoint, inputs)
        for backend, run in (("onnx", lambda: run_onnx(session, inputs)),
                             ("torchscript", lambda: run_torchscript(scripted, inputs))):
            found = excess(run(), want, backend, batch, rtol)
            for name, (diff, over) in found.items():
                if not over <= tolerance:
                    raise ExportError(f"{backend} export's {name} differs from eager PyTorch by {diff:.3g} "
                                      f"(raw units) at batch {batch}; tolerance {tolerance:g} + "
                                      f"{rtol:g}·|eager|. No bundle written.")
                per_output[backend][name] = max(per_output[backend].get(name, 0.0), diff)
            parity[backend][str(batch)] = max(d for d, _ in found.values())
    return parity, per_output
